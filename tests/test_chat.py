"""`nmt chat`: the session keeps the last turns as context, and the terminal (driven through
a pseudo-terminal with pexpect) answers, resets and quits."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pexpect
import pytest

from pipeline.chat.session import ChatSession
from pipeline.corpus.dialogue import SEPARATOR
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator

NMT = Path(sys.executable).parent / "nmt"


@pytest.fixture(scope="module")
def chat_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model dir with a chat model's meta.json: two turns of context."""
    directory = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(tiny_model_dir, directory)
    meta = {"src_lang": "en", "tgt_lang": "en", "name": "tiny-chat"}
    meta["dialogue"] = {"context_turns": 2, "separator": SEPARATOR}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def test_the_last_turns_are_the_context_and_reset_forgets_them(chat_model_dir):
    session = ChatSession(Translator(chat_model_dir), DecodeSettings(sample=True, seed=1))
    assert session.context_turns == 2
    assert session.source("Ein Hund läuft.") == "Ein Hund läuft."
    first = session.reply("Ein  Hund läuft.")
    assert session.turns == ["Ein Hund läuft.", first]
    # the model's last reply and the new turn: two turns, the oldest left out
    assert session.source("Eine Frau lacht.") == f"{first} {SEPARATOR} Eine Frau lacht."
    session.reply("Eine Frau lacht.")
    assert len(session.turns) == 4
    session.reset()
    assert session.turns == [] and session.source("Hallo") == "Hallo"
    # the same seed and turns give the same reply
    assert session.reply("Ein Hund läuft.") == first


def test_nmt_chat_answers_resets_and_quits_in_a_terminal(chat_model_dir, tmp_path):
    history = tmp_path / "history"
    child = pexpect.spawn(
        str(NMT),
        ["chat", "--model", str(chat_model_dir), "--seed", "3", "--history", str(history)],
        encoding="utf-8",
        timeout=120,
        env={"PATH": str(NMT.parent), "HOME": str(tmp_path), "TERM": "dumb"},
    )
    try:
        child.expect("chatting with tiny-chat \\(sampling, 2 turn\\(s\\) of context\\)")
        child.expect_exact("you> ")
        child.sendline("Ein Hund läuft.")
        child.expect(r"bot> (.*?)\r\n")
        assert child.match.group(1).strip(), "the model answers with words"
        child.expect_exact("you> ")
        child.sendline("/reset")
        child.expect_exact("(conversation reset)")
        child.expect_exact("you> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "Ein Hund läuft." in history.read_text(encoding="utf-8")


def test_bad_chat_flags_are_one_line_errors(chat_model_dir, capsys):
    from pipeline.cli import main

    assert main(["chat", "--model", str(chat_model_dir), "--top-p", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "nmt chat: error: --top-p must be above 0 and at most 1, not 0.0"
    )


def test_distinct_n_counts_distinct_ngrams_over_all():
    from pipeline.chat.evaluate import distinct

    assert distinct(["a b a b", "c"], 1) == 3 / 5
    assert distinct(["a b a b", "c"], 2) == 2 / 3  # (a b) twice, (b a) once
    assert distinct(["你好你好"], 1, "zh") == 2 / 4
    assert distinct([], 2) == 0.0


def test_chat_evaluation_on_a_prepared_split(chat_model_dir, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.chat.evaluate import DECODINGS, distinct, evaluate_chat
    from pipeline.corpus.synthetic import parallel_corpus

    translator = Translator(chat_model_dir)
    pairs = parallel_corpus(12, seed=5)
    src, tgt = ([p[i] for p in pairs] for i in (0, 1))
    encode = translator.src_tokenizer.encode
    table = {"src_ids": encode(src), "tgt_ids": encode(tgt), "src_text": src, "tgt_text": tgt}
    (tmp_path / "valid").mkdir()
    pq.write_table(pa.table(table), tmp_path / "valid" / "part-0.parquet")
    result = evaluate_chat(translator, tmp_path / "valid")
    vocabulary = translator.model.config.tgt_vocab_size
    assert result["pairs"] == 12 and 1 < result["perplexity"] < vocabulary
    assert set(result["replies"]) == {"human", *DECODINGS}
    assert result["replies"]["human"]["distinct_2"] == distinct(tgt, 2)
