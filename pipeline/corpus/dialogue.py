"""Dialogue corpora: conversations in, (context -> reply) pairs out, for chat models
(Vinyals & Le 2015).

Two formats, each a list of conversations (a conversation is a list of turns, strings):
- chatterbot-corpus YAML (`conversations: [[turn, turn, ...], ...]`), a file or the
  installed package's language, named `chatterbot:english`;
- JSONL, one `{"turns": ["...", "..."]}` object a line, for one's own logs.

Every turn after the first of a conversation is a reply; its source is the `context_turns`
turns before it joined with SEPARATOR (a sentencepiece symbol of its own). A spec may end in
`#train`, `#valid` or `#test` to take a held-out part. The part is chosen by the
conversation's first turn (its CRC-32 modulo 10: 8 is valid, 9 test, the rest train), so
conversations that open alike stay together: chatterbot-corpus repeats prompts and whole
conversations across its files, and a split by position would test on pairs it trains on.

Bad input is refused with its file and line (invalid YAML or JSON, no conversations list,
a JSONL line without a `turns` list); bad turns are counted and dropped, with the lines of
the first few in the stats (a conversation of one turn, a YAML conversation that is not a
list, a turn that is not a string, an empty turn): a dropped turn breaks its conversation,
and no pair reaches across it.
"""

from __future__ import annotations

import importlib.util
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.errors import UserError
from pipeline.storage import Location

SEPARATOR = "<sep>"  # joins context turns; a user-defined sentencepiece piece
CHATTERBOT = "chatterbot:"
PARTS = {8: "valid", 9: "test"}  # first turn's CRC-32 % 10 -> held-out part; others: train
YAML_SUFFIXES = (".yml", ".yaml")
STR_TAG = "tag:yaml.org,2002:str"
NOT_A_STRING, ONE_TURN, EMPTY_TURN = "turn not a string", "one-turn conversation", "empty turn"
NOT_A_LIST = "conversation not a list"  # chatterbot-corpus has one: a question without its `- `


class DialogueError(UserError):
    """A dialogue file that cannot be read as conversations (one line: file and line)."""


@dataclass(frozen=True)
class Turn:
    text: str | None  # None: dropped, for `problem`
    line: int  # 1-based line of the file where the turn starts
    problem: str | None = None


@dataclass(frozen=True)
class Conversation:
    path: str
    line: int
    turns: tuple[Turn, ...]


@dataclass
class DialogueStats:
    """What reading found: conversations, pairs made, turns dropped by reason, and where the
    first few dropped turns are (`file line N: reason`)."""

    conversations: int = 0
    pairs: int = 0
    dropped_turns: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "conversations": self.conversations,
            "pairs": self.pairs,
            "dropped_turns": dict(self.dropped_turns),
            "examples": self.examples,
        }


def is_dialogue_spec(spec: str) -> bool:
    base = spec.partition("#")[0]
    return base.startswith(CHATTERBOT) or base.endswith((".jsonl", *YAML_SUFFIXES))


def resolve_dialogue(spec: str) -> tuple[tuple[str, ...], str, str | None]:
    """`spec` -> (its files, a split name, its held-out part or None for all of it)."""
    base, _, part = spec.partition("#")
    if part and part not in ("train", "valid", "test"):
        raise UserError(f"{spec}: the part after # must be train, valid or test, not {part!r}")
    if base.startswith(CHATTERBOT):
        files = chatterbot_files(base[len(CHATTERBOT) :])
        name = base[len(CHATTERBOT) :].replace("/", "-")
    else:
        if not Location.of(base).is_file():
            raise UserError(f"dialogue file {base} does not exist")
        files, name = (base,), Path(base).name.rsplit(".", 1)[0]
    return files, f"{name}-{part}" if part else name, part or None


def chatterbot_files(language: str) -> tuple[str, ...]:
    """The YAML files of one language of the installed chatterbot-corpus package (sorted), or
    of one of its files (`english/greetings`)."""
    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or spec.origin is None:
        raise UserError(
            "chatterbot-corpus is not installed: pip install 'rnnsearch-ray[chat]' "
            "(or pip install chatterbot-corpus)"
        )
    data = Path(spec.origin).parent / "data"
    single = data / f"{language}.yml"
    if single.is_file():
        return (str(single),)
    files = tuple(str(p) for p in sorted((data / language).glob("*.yml")))
    if not files:
        known = ", ".join(sorted(p.name for p in data.iterdir() if p.is_dir()))
        raise UserError(f"chatterbot-corpus has no language {language!r}; it has {known}")
    return files


def read_conversations(path: str) -> Iterator[Conversation]:
    """The conversations of one YAML or JSONL file, in order."""
    text = Location.of(path).read_bytes().decode("utf-8", errors="strict")
    if path.endswith(".jsonl"):
        return _jsonl_conversations(path, text)
    return _yaml_conversations(path, text)


def _yaml_conversations(path: str, text: str) -> Iterator[Conversation]:
    # composed, not loaded: the nodes keep their lines, for the messages
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise DialogueError(f"{path}{where}: invalid YAML ({problem})") from None
    found = None
    if isinstance(root, yaml.MappingNode):
        found = next((v for k, v in root.value if k.value == "conversations"), None)
    if not isinstance(found, yaml.SequenceNode):
        raise DialogueError(f"{path}: no 'conversations' list (chatterbot-corpus YAML)")
    for node in found.value:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.SequenceNode):
            turns = tuple(_yaml_turn(turn) for turn in node.value)
        else:
            turns = (Turn(None, line, NOT_A_LIST),)
        yield Conversation(path, line, turns)


def _yaml_turn(node: yaml.Node) -> Turn:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG:
        return _turn(node.value, line)
    return Turn(None, line, NOT_A_STRING)


def _jsonl_conversations(path: str, text: str) -> Iterator[Conversation]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DialogueError(f"{path} line {number}: invalid JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("turns"), list):
            raise DialogueError(f'{path} line {number}: expected {{"turns": ["...", ...]}}')
        turns = tuple(
            _turn(t, number) if isinstance(t, str) else Turn(None, number, NOT_A_STRING)
            for t in record["turns"]
        )
        yield Conversation(path, number, turns)


def _turn(text: str, line: int) -> Turn:
    text = " ".join(text.split())
    return Turn(text, line) if text else Turn(None, line, EMPTY_TURN)


def dialogue_rows(
    paths: tuple[str, ...], context_turns: int, part: str | None, stats: DialogueStats | None = None
) -> Iterator[tuple[int, str, str, str | None]]:
    """(index, source, reply, drop reason) for every reply of the conversations in `paths`
    (those of `part` only, when given); a dropped turn is a row with its reason. `index`
    counts turns over the whole input, so a row can be traced back."""
    stats = stats if stats is not None else DialogueStats()
    index = 0
    for path in paths:
        for conversation in read_conversations(path):
            if part is None or part_of(conversation) == part:
                stats.conversations += 1
                yield from _pairs(conversation, index, context_turns, stats)
            index += len(conversation.turns)


def part_of(conversation: Conversation) -> str:
    """The held-out part of a conversation, by its first turn (so equal openings share one)."""
    opening = conversation.turns[0].text or "" if conversation.turns else ""
    return PARTS.get(zlib.crc32(opening.encode()) % 10, "train")


def _pairs(
    conversation: Conversation, first: int, context_turns: int, stats: DialogueStats
) -> Iterator[tuple[int, str, str, str | None]]:
    turns = conversation.turns
    if len(turns) == 1 and turns[0].text is not None:
        turns = (Turn(None, turns[0].line, ONE_TURN),)
    history: list[str] = []  # the turns since the conversation began or last broke
    for offset, turn in enumerate(turns):
        if turn.text is None:
            stats.dropped_turns[turn.problem] += 1
            if len(stats.examples) < 5:
                stats.examples.append(f"{conversation.path} line {turn.line}: {turn.problem}")
            history = []
            yield first + offset, "", "", turn.problem
            continue
        if history:
            stats.pairs += 1
            yield first + offset, f" {SEPARATOR} ".join(history[-context_turns:]), turn.text, None
        history.append(turn.text)


def dialogue_stats(paths: tuple[str, ...], context_turns: int, part: str | None) -> DialogueStats:
    """What `dialogue_rows` finds, without keeping the rows."""
    stats = DialogueStats()
    for _ in dialogue_rows(paths, context_turns, part, stats):
        pass
    return stats
