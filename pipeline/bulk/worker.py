"""The work of one bulk translation fragment, and the Ray Data actors that do it.

A fragment's documents are translated sentence by sentence (`pipeline.bulk.documents`),
each row with the model its language chooses when the job routes rows
(`pipeline.bulk.routing`), and the fragment is written whole or not at all.

Two actors share this work and differ only in who translates sentences:
`TranslatorWorker` holds private `Translator`s (each model loaded once per actor, CPU or
GPU), `ServeWorker` sends sentences to the running Serve deployment through its handle.
"""

from __future__ import annotations

import json
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from pipeline.bulk.documents import (
    TranslatedDocuments,
    TranslateSentences,
    document_error,
    translate_documents,
)
from pipeline.bulk.routing import RowRouting, route_rows, translate_routed
from pipeline.bulk.store import Fragment, read_fragment, write_atomically
from pipeline.storage import Location
from pipeline.translate.catalog import ModelCatalog, ModelEntry
from pipeline.translate.glossary import check_glossary, constraints_for
from pipeline.translate.routing import Router
from pipeline.translate.settings import DecodeSettings

TranslateTable = Callable[[pa.Table], TranslatedDocuments]


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of a job needs; plain values, so Ray can ship it to actors."""

    output_dir: str  # a path or URI
    text_column: str
    target_column: str
    error_column: str
    max_chars: int
    decoding: DecodeSettings
    # The models, the default first; empty with --via-serve when rows are not routed.
    models: tuple[ModelEntry, ...] = ()
    routing: RowRouting | None = None  # None: every row to the one (default) model
    # Tests only: fragments from this plan index on write their temp file, then fail, as
    # a job killed in the middle of a write would.
    fail_from_fragment: int | None = None
    glossary_column: str | None = None  # per-row glossaries: map<string, string> or JSON
    score_column: str | None = None  # score (text, this column) instead of translating
    signals: bool = False  # add the quality signals columns


# The quality-signal columns `signals` adds, and the score columns `score_column` adds.
SIGNAL_COLUMNS = {
    "mean_log_prob": pa.float64(),
    "coverage": pa.float64(),
    "repetition": pa.bool_(),
    "length_ratio": pa.float64(),
}
SCORE_COLUMNS = ("log_prob", "mean_log_prob")


COUNTS = ("rows", "errors", "sentences", "unreadable")


def translate_fragment(
    fragment: Fragment, translate: TranslateTable, settings: WorkerSettings, index: int
) -> dict:
    """Read, translate and write one fragment; returns its counts for the progress bar, or
    why it cannot be read (a damaged file: the job then stops with that one line, rather
    than a traceback from the actor)."""
    try:
        table = read_fragment(fragment)
    except (OSError, pa.ArrowException) as error:
        first_line = (str(error).strip() or repr(error)).splitlines()[0]
        where = f"{fragment.path} (row group {fragment.row_group})"
        return {"rows": 0, "errors": 0, "sentences": 0, "unreadable": f"{where}: {first_line}"}
    documents = translate(table)
    for name, values in output_columns(documents, settings).items():
        table = table.append_column(name, values)
    fail = settings.fail_from_fragment is not None and index >= settings.fail_from_fragment
    write_atomically(
        table, Location.of(settings.output_dir) / fragment.output_name, documents.sentences, fail
    )
    return {
        "rows": table.num_rows,
        "errors": sum(e is not None for e in documents.errors),
        "sentences": documents.sentences,
        "unreadable": None,
    }


def output_columns(documents: TranslatedDocuments, settings: WorkerSettings) -> dict:
    """The columns a fragment's output adds, in order: the translation (or the scores), the
    quality signals when asked, the error."""
    if settings.score_column:
        columns = {
            name: pa.array(values, pa.float64())
            for name, values in zip(SCORE_COLUMNS, documents.scores, strict=True)
        }
    else:
        columns = {settings.target_column: pa.array(documents.translations, pa.string())}
    if settings.signals:
        signals = documents.signals or [None] * len(documents.errors)
        for name, kind in SIGNAL_COLUMNS.items():
            values = [None if s is None else getattr(s, name) for s in signals]
            columns[name] = pa.array(values, kind)
    columns[settings.error_column] = pa.array(documents.errors, pa.string())
    return columns


def row_glossaries(values: list[object], column: str) -> tuple[list[dict | None], list[str | None]]:
    """Each row's glossary from a map<string, string> (or JSON object) cell, and an error
    for the rows whose cell is neither."""
    glossaries: list[dict | None] = []
    errors: list[str | None] = []
    for value in values:
        try:
            glossaries.append(_glossary(value, column))
            errors.append(None)
        except ValueError as error:
            glossaries.append(None)
            errors.append(str(error))
    return glossaries, errors


def _glossary(value: object, column: str) -> dict | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{column}: not a JSON object of terms") from None
    if isinstance(value, list):  # pyarrow gives a map cell as (key, value) pairs
        value = dict(value)
    if not isinstance(value, dict):
        raise ValueError(f"{column}: a glossary is a map of terms, not {type(value).__name__}")
    return check_glossary(value, column)


class FragmentWorker:
    """A Ray Data callable class: one fragment per batch (`batch_size=1`)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        # Routed rows choose among the models; detection loads on first use.
        self.router = Router(ModelCatalog(settings.models)) if settings.routing else None

    def translator_for(self, model_id: str | None) -> TranslateSentences:
        """Sentences -> translations with the model `model_id` (None: the default one)."""
        raise NotImplementedError

    def scorer_for(self, model_id: str | None) -> Callable[[list[str], list[str]], list]:
        """(texts, translations) -> their `PairScore`s with the model `model_id`."""
        raise NotImplementedError

    def translate_table(self, table: pa.Table) -> TranslatedDocuments:
        texts = table.column(self.settings.text_column).to_pylist()
        if self.settings.score_column:
            return self.score_table(texts, table.column(self.settings.score_column).to_pylist())
        glossaries, bad = None, None
        if self.settings.glossary_column:
            cells = table.column(self.settings.glossary_column).to_pylist()
            glossaries, bad = row_glossaries(cells, self.settings.glossary_column)
        routing, max_chars = self.settings.routing, self.settings.max_chars
        if routing is None:
            result = translate_documents(texts, self.translator_for(None), max_chars, glossaries)
        else:
            column = routing.source_column
            languages = table.column(column).to_pylist() if column else None
            routes = route_rows(texts, languages, self.router, routing)
            result = translate_routed(texts, routes, self.translator_for, max_chars, glossaries)
        for row, error in enumerate(bad or []):
            if error:  # translated without the glossary it asked for: not a result
                result.translations[row], result.errors[row] = None, error
        return result

    def score_table(self, texts: list[object], translations: list[object]) -> TranslatedDocuments:
        """Each row's (text, translation) scored whole; rows that are not two strings get an
        error."""
        result = TranslatedDocuments([None] * len(texts), [None] * len(texts), 0)
        result.scores = ([None] * len(texts), [None] * len(texts))
        good = []
        for row, (text, translation) in enumerate(zip(texts, translations, strict=True)):
            error = document_error(text, self.settings.max_chars)
            if error is None and not (isinstance(text, str) and text.strip()):
                error = "text is empty: nothing to score against"
            if error is None and not isinstance(translation, str):
                error = f"{self.settings.score_column} is not a string"
            if error:
                result.errors[row] = error
            else:
                good.append(row)
        if good:
            scores = self.scorer_for(None)(
                [texts[i] for i in good], [translations[i] for i in good]
            )
            for row, score in zip(good, scores, strict=True):
                result.scores[0][row], result.scores[1][row] = score.log_prob, score.mean_log_prob
        result.sentences = len(good)
        return result

    def __call__(self, batch: pa.Table) -> dict[str, list]:
        counts = []
        for row in batch.to_pylist():
            index = row.pop("index")
            fragment = Fragment(**row)
            counts.append(translate_fragment(fragment, self.translate_table, self.settings, index))
        columns = {key: [c[key] for c in counts] for key in COUNTS}
        # ru_maxrss is in KiB on Linux: the actor's peak, to show memory stays bounded
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {**columns, "peak_rss_mib": [round(peak_mib, 1)] * len(counts)}


class TranslatorWorker(FragmentWorker):
    """Translates with its own Translators, each model loaded once when the actor starts."""

    def __init__(self, settings: WorkerSettings, device: str, threads: int) -> None:
        import torch

        from pipeline.translate.translator import Translator

        super().__init__(settings)
        torch.set_num_threads(threads)  # one actor per `threads` CPUs: no oversubscription
        self.translators = {
            entry.id: Translator(entry.uri, device, settings.decoding) for entry in settings.models
        }
        self.default = settings.models[0].id

    def translator_for(self, model_id: str | None) -> TranslateSentences:
        translator = self.translators[model_id or self.default]

        def translate(sentences: list[str], glossaries: list | None = None) -> list:
            constraints = None
            if glossaries is not None:
                constraints = [
                    constraints_for(s, g) if g else []
                    for s, g in zip(sentences, glossaries, strict=True)
                ]
            return translator.translate(sentences, constraints=constraints)

        return translate

    def scorer_for(self, model_id: str | None) -> Callable[[list[str], list[str]], list]:
        return self.translators[model_id or self.default].score


class ServeWorker(FragmentWorker):
    """Sends sentences to the Serve translation deployment, sharing its autoscaled fleet
    with online traffic; holds no model itself."""

    def __init__(self, settings: WorkerSettings, app_name: str, deployment: str) -> None:
        from ray import serve

        super().__init__(settings)
        self.handle = serve.get_deployment_handle(deployment, app_name=app_name)

    def translator_for(self, model_id: str | None) -> TranslateSentences:
        # A model id routes the calls to replicas holding that model; none: the default.
        handle = self.handle.options(multiplexed_model_id=model_id) if model_id else self.handle
        return lambda sentences: self._translate(handle, sentences)

    def _translate(self, handle, sentences: list[str]) -> list[str]:
        """Length-sorted chunks of `batch_size`, all sent at once so replicas share them."""
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        size = self.settings.decoding.batch_size
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        responses = [
            handle.translate_batch.remote(
                [sentences[i] for i in chunk],
                beam_size=self.settings.decoding.beam_size,
                sampling=self.settings.decoding.sampling(),
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
