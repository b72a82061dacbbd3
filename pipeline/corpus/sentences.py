"""Rule-based sentence splitting for documents, and reassembly in the original layout.

A document is cut into sentences at line breaks (so paragraphs, lists and headings keep
their shape) and, within a line, after sentence-final punctuation:
- CJK full stops (。！？), always, with or without a following space;
- Latin `. ! ? …` followed by whitespace and a sentence start (not a lowercase letter),
  unless the period ends an abbreviation (`z.B.`, `Dr.`, `etc.`), an initial (`J.`) or a
  German ordinal (`3. Mai`).

`split_document` returns the sentences and the whitespace around them; `reassemble` puts
translated sentences back between the same separators, so a translated document has the
paragraphs of its source. Within a line the separator follows the target script: a space
after a Latin sentence, nothing after a CJK one (Chinese runs sentences together).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

CLOSING = "\"'”’»)]」』）"
CJK_STOPS = "。！？"
CJK_CHAR = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uff00-\uffef]")
# sentence-final punctuation, closing quotes/brackets, then the whitespace after them
BOUNDARY = re.compile(rf"([.!?…]+|[{CJK_STOPS}]+)([{re.escape(CLOSING)}]*)([^\S\n]*)")
LINE_BREAK = re.compile(r"\s*\n\s*")
ABBREVIATIONS = frozenset(  # compared lowercased, without the final period
    word
    for words in (
        "bzw ca dr evtl fr ggf hr inkl jh mio mrd nr prof sog st str tel usw vgl",  # German
        "mr mrs ms jr sr vs inc ltd co fig mt",  # English
        "mme mlle av cf",  # French
    )
    for word in words.split()
)


@dataclass(frozen=True)
class Segmented:
    """A document's sentences and the text around them.

    `separators` has one more item than `sentences`: leading whitespace, what stands
    between each pair of sentences, then trailing whitespace. Joining them alternately
    gives back the document exactly.
    """

    sentences: list[str]
    separators: list[str]


def split_document(text: str) -> Segmented:
    """Split `text` into sentences, keeping every character in a sentence or a separator."""
    body_start, body_end = len(text) - len(text.lstrip()), len(text.rstrip())
    if body_start >= body_end:  # blank: one separator holds all of it
        return Segmented([], [text])
    cuts = [(0, body_start)]
    cuts += [m.span() for m in LINE_BREAK.finditer(text, body_start, body_end)]
    cuts += [
        (m.start(3), m.end())
        for m in BOUNDARY.finditer(text, body_start, body_end)
        if m.end() < body_end and _is_boundary(text, m)
    ]
    cuts = sorted(cuts) + [(body_end, len(text))]
    sentences = [text[left[1] : right[0]] for left, right in zip(cuts, cuts[1:], strict=False)]
    return Segmented(sentences, [text[start:end] for start, end in cuts])


def _is_boundary(text: str, match: re.Match) -> bool:
    """Whether the punctuation in `match`, followed by more text, ends a sentence within
    its line (a line break is a cut of its own)."""
    stops, _, space = match.groups()
    following = text[match.end()]
    if following == "\n":
        return False
    if any(stop in CJK_STOPS for stop in stops):
        return True
    if not space:  # "3.5", "z.B.": Latin punctuation needs a space, unless CJK follows
        return bool(CJK_CHAR.match(following))
    if following.islower():
        return False
    return stops != "." or not _is_abbreviation(_word_before(text, match.start()))


def _word_before(text: str, end: int) -> str:
    """The word ending at `end` (searching back only as far as the previous space)."""
    start = max(text.rfind(space, 0, end) for space in " \t\n\u3000") + 1
    return text[start:end].lstrip("(\"'„“«")


def _is_abbreviation(word: str) -> bool:
    return (
        word.lower() in ABBREVIATIONS
        or (len(word) == 1 and word.isalpha())  # an initial: "J. Smith"
        or (word.isdigit() and len(word) <= 2)  # a German ordinal or date: "am 3. Mai"
        or "." in word  # "z.B", "u.a", "d.h": dotted abbreviations
    )


def reassemble(translations: Sequence[str], separators: Sequence[str]) -> str:
    """Put translated sentences back between the separators of `split_document`.

    Separators holding a line break are kept as they are; a separator within a line
    becomes a space after a Latin-script translation and nothing after a CJK one.
    """
    if len(separators) != len(translations) + 1:
        raise ValueError(f"{len(translations)} sentences need {len(translations) + 1} separators")
    parts = [separators[0]]
    for index, translation in enumerate(translations):
        parts.append(translation)
        separator = separators[index + 1]
        is_between = index + 1 < len(translations)
        if is_between and "\n" not in separator:
            separator = "" if _ends_in_cjk(translation) else " "
        parts.append(separator)
    return "".join(parts)


def _ends_in_cjk(sentence: str) -> bool:
    return bool(CJK_CHAR.match(sentence.rstrip(CLOSING)[-1:]))
