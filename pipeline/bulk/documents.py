"""The documents of a fragment, translated sentence by sentence.

Each document is split into sentences, all the sentences are translated in one call (the
Translator sorts them by length and batches them), and each document is put back together
in its own sentence order and layout. A document that cannot be translated gets a message
in the error column instead of stopping the job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipeline.corpus.sentences import reassemble, split_document

TranslateSentences = Callable[[list[str]], list[str]]


@dataclass
class TranslatedDocuments:
    translations: list[str | None]
    errors: list[str | None]
    sentences: int


def translate_documents(
    texts: Sequence[object], translate: TranslateSentences, max_chars: int
) -> TranslatedDocuments:
    """Translate documents sentence by sentence; bad documents get an error, not an exception."""
    result = TranslatedDocuments([None] * len(texts), [None] * len(texts), 0)
    segmented = {}
    for index, text in enumerate(texts):
        error = _document_error(text, max_chars)
        if error:
            result.errors[index] = error
        else:
            segmented[index] = split_document(text)
    sentences = [s for parts in segmented.values() for s in parts.sentences]
    try:
        translated = iter(translate(sentences))
    except Exception:  # find the documents at fault instead of failing them all
        return _translate_one_by_one(texts, segmented, translate, result)
    for index, parts in segmented.items():
        result.translations[index] = reassemble(
            [next(translated) for _ in parts.sentences], parts.separators
        )
    result.sentences = len(sentences)
    return result


def _document_error(text: object, max_chars: int) -> str | None:
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
) -> TranslatedDocuments:
    for index, parts in segmented.items():
        try:
            translations = translate(parts.sentences)
        except Exception as error:  # recorded in the row; the job goes on
            result.errors[index] = f"translation failed: {type(error).__name__}: {error}"
            continue
        result.translations[index] = reassemble(translations, parts.separators)
        result.sentences += len(parts.sentences)
    return result
