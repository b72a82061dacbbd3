"""The documents of a fragment, translated sentence by sentence.

Each document is split into sentences, all the sentences are translated in one call (the
Translator sorts them by length and batches them), and each document is put back together
in its own sentence order and layout. A document that cannot be translated gets a message
in the error column instead of stopping the job.

A translator may return `Translation`s instead of strings: their quality signals are then
combined per document. With glossaries (one per document, or None), the translator is
called with each sentence's glossary too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.corpus.sentences import reassemble, split_document
from pipeline.translate.quality import QualitySignals, combine_signals

# sentences (and, with glossaries, each sentence's glossary) -> their translations: strings,
# or objects with `text` and `signals` (the Translator's)
TranslateSentences = Callable[..., list[Any]]
Glossaries = Sequence[Mapping[str, str] | None]


@dataclass
class TranslatedDocuments:
    translations: list[str | None]
    errors: list[str | None]
    sentences: int
    signals: list[QualitySignals | None] = field(default_factory=list)  # per document, or []
    # scoring jobs: per document its log-probability and per-piece mean, instead of text
    scores: tuple[list[float | None], list[float | None]] = ((), ())


def translate_documents(
    texts: Sequence[object],
    translate: TranslateSentences,
    max_chars: int,
    glossaries: Glossaries | None = None,
) -> TranslatedDocuments:
    """Translate documents sentence by sentence; bad documents get an error, not an exception."""
    result = TranslatedDocuments([None] * len(texts), [None] * len(texts), 0, [None] * len(texts))
    segmented = {}
    for index, text in enumerate(texts):
        error = document_error(text, max_chars)
        if error:
            result.errors[index] = error
        else:
            segmented[index] = split_document(text)
    sentences = [s for parts in segmented.values() for s in parts.sentences]
    try:
        translated = iter(_call(translate, list(segmented), segmented, glossaries))
    except Exception:  # find the documents at fault instead of failing them all
        return _translate_one_by_one(texts, segmented, translate, result, glossaries)
    for index, parts in segmented.items():
        _put(result, index, parts, [next(translated) for _ in parts.sentences])
    result.sentences = len(sentences)
    return result


def _call(
    translate: TranslateSentences,
    documents: list[int],
    segmented: dict,
    glossaries: Glossaries | None,
) -> list[Any]:
    """`translate` on the sentences of `documents`, with their documents' glossaries."""
    sentences = [s for i in documents for s in segmented[i].sentences]
    if glossaries is None:
        return translate(sentences)
    return translate(sentences, [glossaries[i] for i in documents for _ in segmented[i].sentences])


def _put(result: TranslatedDocuments, index: int, parts, translated: list[Any]) -> None:
    """Document `index` reassembled from its sentences' translations (and signals)."""
    texts = [t if isinstance(t, str) else t.text for t in translated]
    result.translations[index] = reassemble(texts, parts.separators)
    signals = [t.signals for t in translated if getattr(t, "signals", None) is not None]
    if signals:
        result.signals[index] = combine_signals(signals)


def document_error(text: object, max_chars: int) -> str | None:
    if text is None:
        return "text is null"
    if not isinstance(text, str):
        return f"text is not a string but {type(text).__name__}"
    if len(text) > max_chars:
        return f"text has {len(text)} characters, more than --max-chars {max_chars}"
    return None


def _translate_one_by_one(
    texts: Sequence[object],
    segmented: dict,
    translate: TranslateSentences,
    result: TranslatedDocuments,
    glossaries: Glossaries | None,
) -> TranslatedDocuments:
    for index, parts in segmented.items():
        try:
            translations = _call(translate, [index], segmented, glossaries)
        except Exception as error:  # recorded in the row; the job goes on
            result.errors[index] = f"translation failed: {type(error).__name__}: {error}"
            continue
        _put(result, index, parts, translations)
        result.sentences += len(parts.sentences)
    return result
