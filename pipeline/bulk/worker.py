"""The work of one bulk translation fragment, and the Ray Data actors that do it.

A fragment's documents are split into sentences, all its sentences are translated in one
call (the Translator sorts them by length and batches them), and each document is put back
together in its own sentence order and layout. A document that cannot be translated gets
a message in the error column instead of stopping the job.

Two actors share this work and differ only in who translates sentences:
`TranslatorWorker` holds a private `Translator` (model loaded once per actor, CPU or GPU),
`ServeWorker` sends sentences to the running Serve deployment through its handle.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from pipeline.bulk.store import Fragment, read_fragment, write_atomically
from pipeline.corpus.sentences import reassemble, split_document
from pipeline.storage import Location
from pipeline.translate.settings import DecodeSettings

TranslateSentences = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of a job needs; plain values, so Ray can ship it to actors."""

    output_dir: str  # a path or URI
    text_column: str
    target_column: str
    error_column: str
    max_chars: int
    decoding: DecodeSettings
    # Tests only: fragments from this plan index on write their temp file, then fail, as
    # a job killed in the middle of a write would.
    fail_from_fragment: int | None = None


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


def translate_fragment(
    fragment: Fragment, translate: TranslateSentences, settings: WorkerSettings, index: int
) -> dict:
    """Read, translate and write one fragment; returns its counts for the progress bar."""
    table = read_fragment(fragment)
    documents = translate_documents(
        table.column(settings.text_column).to_pylist(), translate, settings.max_chars
    )
    table = table.append_column(
        settings.target_column, pa.array(documents.translations, pa.string())
    ).append_column(settings.error_column, pa.array(documents.errors, pa.string()))
    fail = settings.fail_from_fragment is not None and index >= settings.fail_from_fragment
    write_atomically(
        table, Location.of(settings.output_dir) / fragment.output_name, documents.sentences, fail
    )
    return {
        "rows": table.num_rows,
        "errors": sum(e is not None for e in documents.errors),
        "sentences": documents.sentences,
    }


class FragmentWorker:
    """A Ray Data callable class: one fragment per batch (`batch_size=1`)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings

    def translate(self, sentences: list[str]) -> list[str]:
        raise NotImplementedError

    def __call__(self, batch: pa.Table) -> dict[str, list]:
        counts = []
        for row in batch.to_pylist():
            index = row.pop("index")
            counts.append(translate_fragment(Fragment(**row), self.translate, self.settings, index))
        columns = {key: [c[key] for c in counts] for key in ("rows", "errors", "sentences")}
        # ru_maxrss is in KiB on Linux: the actor's peak, to show memory stays bounded
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {**columns, "peak_rss_mib": [round(peak_mib, 1)] * len(counts)}


class TranslatorWorker(FragmentWorker):
    """Translates with its own Translator, loaded once when the actor starts."""

    def __init__(self, settings: WorkerSettings, model_path: str, device: str, threads: int):
        import torch

        from pipeline.translate.translator import Translator

        super().__init__(settings)
        torch.set_num_threads(threads)  # one actor per `threads` CPUs: no oversubscription
        self.translator = Translator(model_path, device, settings.decoding)

    def translate(self, sentences: list[str]) -> list[str]:
        return [t.text for t in self.translator.translate(sentences)]


class ServeWorker(FragmentWorker):
    """Sends sentences to the Serve translation deployment, sharing its autoscaled fleet
    with online traffic; holds no model itself."""

    def __init__(self, settings: WorkerSettings, app_name: str, deployment: str) -> None:
        from ray import serve

        super().__init__(settings)
        self.handle = serve.get_deployment_handle(deployment, app_name=app_name)

    def translate(self, sentences: list[str]) -> list[str]:
        """Length-sorted chunks of `batch_size`, all sent at once so replicas share them."""
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        size = self.settings.decoding.batch_size
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        responses = [
            self.handle.translate_batch.remote(
                [sentences[i] for i in chunk], beam_size=self.settings.decoding.beam_size
            )
            for chunk in chunks
        ]
        translations: list[str] = [""] * len(sentences)
        for chunk, response in zip(chunks, responses, strict=True):
            for i, text in zip(chunk, response.result(), strict=True):
                translations[i] = text
        return translations


def fail_injection_from_env() -> int | None:
    """`_NMT_BULK_FAIL_FROM_FRAGMENT=N` (tests only) makes fragments N, N+1, ... fail."""
    value = os.environ.get("_NMT_BULK_FAIL_FROM_FRAGMENT")
    return int(value) if value else None
