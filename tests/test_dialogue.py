"""Dialogue corpora: the YAML and JSONL readers turn known conversations into the known
(context -> reply) pairs, held-out parts split conversations, bad files are counted or
refused with file and line, and `nmt prepare` makes a chat dataset of them."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import sentencepiece as spm

from pipeline.cli import main
from pipeline.corpus.dialogue import (
    EMPTY_TURN,
    NOT_A_LIST,
    NOT_A_STRING,
    ONE_TURN,
    SEPARATOR,
    DialogueError,
    dialogue_rows,
    dialogue_stats,
    resolve_dialogue,
)
from pipeline.prepare.preparation import prepare_corpus

YAML = """categories:
- greetings
conversations:
- - Hello
  - Hi there
  - How are you?
  - Fine, thanks.
- - What is AI?
  - Artificial intelligence.
"""
SEP = f" {SEPARATOR} "


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def pairs(path: str, context_turns: int = 1, part: str | None = None) -> list[tuple]:
    return [row[1:] for row in dialogue_rows((path,), context_turns, part)]


def test_yaml_conversations_become_their_replies(tmp_path):
    path = write(tmp_path / "greetings.yml", YAML)
    assert pairs(path) == [
        ("Hello", "Hi there", None),
        ("Hi there", "How are you?", None),
        ("How are you?", "Fine, thanks.", None),
        ("What is AI?", "Artificial intelligence.", None),
    ]
    # two turns of context, never reaching into the previous conversation
    assert [src for src, _, _ in pairs(path, context_turns=2)] == [
        "Hello",
        "Hello" + SEP + "Hi there",
        "Hi there" + SEP + "How are you?",
        "What is AI?",
    ]
    stats = dialogue_stats((path,), 1, None)
    assert (stats.conversations, stats.pairs, dict(stats.dropped_turns)) == (2, 4, {})


def test_jsonl_conversations_and_bad_turns_are_counted_with_their_lines(tmp_path):
    lines = [
        {"turns": ["Hi", "Hello", "Bye"]},
        {"turns": ["alone"]},
        {"turns": ["a", 42, "b", "c"]},  # the number breaks the conversation
        {"turns": ["x", "   ", "y"]},
    ]
    path = write(tmp_path / "logs.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    rows = list(dialogue_rows((path,), 3, None))
    assert [(src, tgt) for _, src, tgt, drop in rows if drop is None] == [
        ("Hi", "Hello"),
        ("Hi" + SEP + "Hello", "Bye"),
        ("b", "c"),
    ]
    assert [drop for *_, drop in rows if drop] == [ONE_TURN, NOT_A_STRING, EMPTY_TURN]
    # indices count turns over the whole file: each row points back at its reply
    assert [index for index, *_ in rows] == [1, 2, 3, 5, 7, 9]
    stats = dialogue_stats((path,), 3, None)
    assert stats.conversations == 4 and stats.pairs == 3
    assert stats.dropped_turns == {ONE_TURN: 1, NOT_A_STRING: 1, EMPTY_TURN: 1}
    assert stats.examples == [
        f"{path} line 2: {ONE_TURN}",
        f"{path} line 3: {NOT_A_STRING}",
        f"{path} line 4: {EMPTY_TURN}",
    ]


def test_a_non_string_yaml_turn_is_counted_at_its_line(tmp_path):
    text = "conversations:\n- - Hello\n  - 42\n  - yes\n- - Alone\n- Not a list\n- - a\n  - b\n"
    path = write(tmp_path / "bad.yml", text)
    dropped = [("", "", reason) for reason in (NOT_A_STRING, NOT_A_STRING, ONE_TURN, NOT_A_LIST)]
    assert pairs(path) == [*dropped, ("a", "b", None)]
    assert dialogue_stats((path,), 1, None).examples == [
        f"{path} line 3: {NOT_A_STRING}",
        f"{path} line 4: {NOT_A_STRING}",
        f"{path} line 5: {ONE_TURN}",
        f"{path} line 6: {NOT_A_LIST}",
    ]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("broken.yml", "conversations:\n- - Hello\n  - [unclosed\n", r"broken.yml line 4: inv"),
        ("tabs.yml", "conversations:\n\t- - Hello\n", r"tabs.yml line 2: invalid YAML"),
        ("none.yml", "categories: [x]\n", r"none.yml: no 'conversations' list"),
        ("bad.jsonl", '{"turns": ["a", "b"]}\n{"turns": [\n', r"bad.jsonl line 2: invalid JSON"),
        ("odd.jsonl", '{"text": "a"}\n', r'odd.jsonl line 1: expected \{"turns"'),
    ],
)
def test_unreadable_files_are_refused_with_file_and_line(tmp_path, name, text, message):
    path = write(tmp_path / name, text)
    with pytest.raises(DialogueError, match=message):
        list(dialogue_rows((path,), 1, None))


def test_held_out_parts_split_conversations(tmp_path):
    """Parts partition the pairs, by conversation; conversations that open with the same
    turn (repeated prompts) fall into one part, so no held-out prompt is trained on."""
    rng = random.Random(0)
    lines = [{"turns": [f"q{i % 60}", f"a{i}"] * rng.randint(1, 2)} for i in range(300)]
    path = write(tmp_path / "c.jsonl", "\n".join(json.dumps(x) for x in lines))
    parts = {part: pairs(path, part=part) for part in ("train", "valid", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(pairs(path))
    openings = {
        part: {src for src, _, _ in rows if src.startswith("q")} for part, rows in parts.items()
    }
    assert openings["valid"] and openings["test"], "60 openings give each part some"
    assert len(openings["train"]) > 3 * len(openings["valid"])
    assert not openings["valid"] & openings["train"] and not openings["test"] & openings["train"]
    assert not openings["valid"] & openings["test"]


def test_chatterbot_corpus_is_found_where_the_package_installed_it():
    files, name, part = resolve_dialogue("chatterbot:english#valid")
    assert name == "english-valid" and part == "valid"
    assert any(f.endswith("english/greetings.yml") for f in files)
    stats = dialogue_stats(files, 1, None)
    assert stats.conversations > 1000 and stats.pairs >= stats.conversations
    with pytest.raises(DialogueError.__mro__[1], match="has no language 'klingon'"):
        resolve_dialogue("chatterbot:klingon")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


def test_prepare_makes_a_chat_dataset_with_one_shared_vocabulary(tmp_path, ray_cluster, capsys):
    rng = random.Random(1)
    words = ["hello", "how", "are", "you", "fine", "thanks", "what", "time", "is", "it"]

    def turn() -> str:
        return " ".join(rng.choices(words, k=rng.randint(1, 5)))

    lines = [{"turns": [turn() for _ in range(rng.randint(2, 4))]} for _ in range(200)]
    lines.append({"turns": ["alone"]})
    path = write(tmp_path / "chat.jsonl", "\n".join(json.dumps(x) for x in lines))
    stats = prepare_corpus(
        src_lang="en",
        tgt_lang="en",
        train=f"{path}#train",
        valid=f"{path}#valid",
        out=tmp_path / "data",
        vocab_size=60,
        context_turns=2,
        max_ratio=100.0,
    )
    expected = dialogue_stats((path,), 2, "train")
    train = stats["splits"]["train"]
    assert train["dialogue"]["pairs"] == expected.pairs == train["kept"]
    assert train["dialogue"]["dropped_turns"] == {ONE_TURN: 1}
    assert stats["dialogue"] == {"context_turns": 2, "separator": SEPARATOR}
    assert stats["joint_vocab"]
    tokenizer = spm.SentencePieceProcessor(model_file=str(tmp_path / "data" / "spm.src.model"))
    assert tokenizer.piece_to_id(SEPARATOR) != tokenizer.unk_id()
    valid = pq.read_table(tmp_path / "data" / "valid").to_pylist()
    with_context = [row for row in valid if SEPARATOR in row["src_text"]]
    assert with_context and all(
        tokenizer.piece_to_id(SEPARATOR) in row["src_ids"] for row in with_context
    )
    broken = write(tmp_path / "broken.yml", "conversations:\n- - a\n  - [b\n")
    code = main(["prepare", "--src-lang", "en", "--tgt-lang", "en", "--train", broken,
                 "--valid", broken, "--out", str(tmp_path / "never")])  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and "broken.yml line 4: invalid YAML" in error[0]
    assert not (tmp_path / "never").exists()
