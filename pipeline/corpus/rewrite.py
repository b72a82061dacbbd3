"""Source text rewritten the way people type it: without the final punctuation, in lower case,
with a space lost or added. Training noise (`pipeline.train.augment`) and the evaluation on
rewritten input (`nmt evaluate --rewrite-source`) use the same functions.

Doubled or surrounding spaces are not among the slips: sentencepiece's normalisation removes
them before a model sees the text, so they change nothing.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable


def strip_final_punct(text: str) -> str:
    """`text` without its trailing punctuation and spaces ("Ein Hund läuft." -> "Ein Hund
    läuft"; "你好。" -> "你好"): every Unicode punctuation character at the end goes."""
    end = len(text)
    while end and (text[end - 1].isspace() or unicodedata.category(text[end - 1]).startswith("P")):
        end -= 1
    return text[:end]


def lowercase(text: str) -> str:
    return text.lower()


def perturb_spaces(text: str, rng: random.Random) -> str:
    """One slip of the space bar: two neighbouring words joined (a space removed) or a word
    split (a space inserted between two of its characters), each half the time; when the
    text offers only one kind of slip, that one."""
    spaces = [i for i, char in enumerate(text) if char == " " and 0 < i < len(text) - 1]
    inner = [i for i in range(1, len(text)) if not text[i - 1].isspace() and not text[i].isspace()]
    if spaces and (not inner or rng.random() < 0.5):
        cut = rng.choice(spaces)
        return text[:cut] + text[cut + 1 :]
    if inner:
        cut = rng.choice(inner)
        return text[:cut] + " " + text[cut:]
    return text


# The rewrites `nmt evaluate --rewrite-source` offers, by name; "none" is the text untouched.
SOURCE_REWRITES: dict[str, Callable[[str], str]] = {
    "none": lambda text: text,
    "strip-final-punct": strip_final_punct,
    "lowercase": lowercase,
    "both": lambda text: lowercase(strip_final_punct(text)),
}
