"""The translator deployment: the configured models, multiplexed over autoscaled replicas.

A replica holds up to `models_per_replica` Translators (Ray Serve's model multiplexing, LRU)
and loads one on demand when a request asks for a model it does not hold. A caller names the
model with the handle's `options(multiplexed_model_id=ID)`, so Serve routes the request to a
replica holding that model; without one the default model translates. A request's texts are
one call to `translate_texts`, whose sentences each join `@serve.batch`, which gathers the
sentences that arrive together into one beam search per model and decoding options. A
replica holds a bounded backlog of sentences and refuses a request past it at once
(`pipeline.serve.overload`).
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import torch
from ray import serve

from pipeline.errors import UserError
from pipeline.serve.metrics import ModelMetrics
from pipeline.serve.options import TRANSLATOR_DEPLOYMENT, ServeOptions
from pipeline.serve.overload import Backlog, Busy
from pipeline.translate.catalog import ModelCatalog, ModelEntry
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translation, Translator

PROBE_TEXT = "."  # any text exercises encoder, attention and decoder


@dataclass(frozen=True)
class InvalidRequest:
    """A request whose prefixes or constraints cannot be decoded (the Translator's one-line
    UserError): returned rather than raised, before its texts join a batch, and answered
    422 by the ingress."""

    message: str


@dataclass(frozen=True)
class DecodeOptions:
    """Sentences decode together only when these agree (and their model does)."""

    settings: DecodeSettings
    return_attention: bool = False


def probe(translator: Translator) -> None:
    """Raise unless the model still translates to a finite score."""
    greedy = replace(translator.settings, beam_size=1, n_best=1)
    (result,) = translator.translate([PROBE_TEXT], greedy)
    if not math.isfinite(result.score):
        raise RuntimeError(f"model is not usable: probe translation scored {result.score}")


@serve.deployment(name=TRANSLATOR_DEPLOYMENT)
class TranslatorDeployment:
    """Decoding runs on one worker thread, so the event loop keeps accepting requests (and
    filling the next batch) while a batch decodes."""

    async def __init__(self, options: ServeOptions) -> None:
        # Fractional-CPU replicas share cores: one intra-op thread each avoids oversubscription.
        torch.set_num_threads(max(1, int(options.num_cpus)))
        self.catalog = ModelCatalog(options.models)
        # One Serve batch is one beam search.
        batch_size = max(options.decoding.batch_size, options.max_batch_size)
        self.settings = replace(options.decoding, batch_size=batch_size)
        self.device = options.device
        self.decoder_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self.metrics = ModelMetrics()
        self.backlog = Backlog(
            options.backlog_sentences,
            options.load.retry_after_s,
            options.max_wait_s,
            options.max_batch_size,
        )
        self.loads: Counter[str] = Counter()  # model id -> times this replica loaded it
        self.last_used: weakref.ref[Translator] | None = None  # what the health check probes
        self._decode_batch.set_max_batch_size(options.max_batch_size)
        self._decode_batch.set_batch_wait_timeout_s(options.batch_wait_ms / 1000)
        # Wrapped per replica: the number of models it may hold is an option.
        self.translator_for: Callable[[str], Awaitable[Translator]] = serve.multiplexed(
            max_num_models_per_replica=options.models_per_replica
        )(self._loader())
        await self.translator_for(self.catalog.default.id)  # ready for the default model

    def _loader(self) -> Callable[[str], Awaitable[Translator]]:
        async def load(model_id: str) -> Translator:
            entry = self.catalog.get(model_id)  # configured models only, never a request's path
            translator = await asyncio.to_thread(Translator, entry.uri, self.device, self.settings)
            self.loads[model_id] += 1
            return translator

        return load

    def _model_id(self) -> str:
        """The request's model (`options(multiplexed_model_id=...)`), else the default."""
        model_id = serve.get_multiplexed_model_id() or self.catalog.default.id
        return self.catalog.get(model_id).id

    async def translate_texts(
        self,
        texts: list[str],
        beam_size: int | None = None,
        n_best: int = 1,
        return_attention: bool = False,
        sampling: dict[str, Any] | None = None,
        prefixes: list[str | None] | None = None,
        constraints: list[list[str]] | None = None,
    ) -> list[dict[str, Any]] | Busy | InvalidRequest:
        """A request's texts, each decoded with whatever else arrives for its model within
        the wait; `Busy` when the replica's backlog has no room for them.

        Returns per text {"text", "score", "batch_size"}, plus "alternatives" (n-best
        [text, score], best first) when n_best > 1 and "source_pieces"/"target_pieces"/
        "attention" ([target piece][source piece]) when asked, and "signals". `sampling`
        overrides the sampling settings (`DecodeSettings.sampling()`). `prefixes` and
        `constraints` (target phrases) go per text; `InvalidRequest` when one cannot be
        decoded.
        """
        settings = self.settings.with_overrides(
            beam_size=beam_size, n_best=n_best, **(sampling or {})
        )
        options = DecodeOptions(settings, return_attention)
        model_id = self._model_id()
        controls = list(
            zip(prefixes or [None] * len(texts), constraints or [()] * len(texts), strict=True)
        )
        if prefixes or constraints:
            translator = await self.translator_for(model_id)
            try:
                translator.check_requests(texts, settings, prefixes, constraints)
            except UserError as error:
                return InvalidRequest(str(error))
        busy = self.backlog.refuses(len(texts))
        if busy is not None:
            return busy
        with self.backlog.hold(len(texts)):
            return await asyncio.gather(
                *(
                    self._decode_batch(text, options, model_id, control)
                    for text, control in zip(texts, controls, strict=True)
                )
            )

    async def score_texts(self, texts: list[str], translations: list[str]) -> list[dict] | Busy:
        """log P(translation | text) per pair: {"log_prob", "mean_log_prob"}; one batched
        teacher-forced pass on the decoding thread, outside the translation batches."""
        model_id = self._model_id()
        busy = self.backlog.refuses(len(texts))
        if busy is not None:
            return busy
        translator = await self.translator_for(model_id)
        loop = asyncio.get_running_loop()
        with self.backlog.hold(len(texts)):
            scores = await loop.run_in_executor(
                self.decoder_thread, lambda: translator.score(texts, translations)
            )
        return [{"log_prob": s.log_prob, "mean_log_prob": s.mean_log_prob} for s in scores]

    async def translate_batch(
        self,
        texts: list[str],
        beam_size: int | None = None,
        sampling: dict[str, Any] | None = None,
    ) -> list[str]:
        """A caller's own batch (bulk translation): best translations in input order. Never
        refused: bulk callers bound what they send themselves."""
        model_id = self._model_id()
        settings = self.settings.with_overrides(beam_size=beam_size, **(sampling or {}))
        options = DecodeOptions(settings)
        translations = await self._decode(model_id, texts, options)
        return [t.text for t in translations]

    async def info(self) -> dict[str, Any]:
        """The request's model's `Translator.info()`."""
        return (await self.translator_for(self._model_id())).info()

    def models(self) -> list[ModelEntry]:
        """The configured models, the default first."""
        return list(self.catalog.entries)

    def replica_state(self) -> dict[str, Any]:
        """This replica's id and how often it loaded each model (more than once: it was
        swapped out)."""
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "loads": dict(self.loads),
        }

    async def check_health(self) -> None:
        """Serve replaces the replica when this raises: the model it used last must still
        translate (probing another would load it and disturb the LRU)."""
        translator = self.last_used() if self.last_used else None
        if translator is not None:
            await asyncio.to_thread(probe, translator)

    # Max batch size and wait are set per replica in __init__. Serve records the batch
    # sizes it forms as the `ray_serve_actual_batch_size` metric.
    @serve.batch
    async def _decode_batch(
        self,
        texts: list[str],
        options: list[DecodeOptions],
        model_ids: list[str],
        controls: list[tuple[str | None, tuple[str, ...]]],
    ) -> list[dict[str, Any]]:
        """`controls`: each text's (prefix, constraints); texts with and without them share
        a batch (the Translator searches each as it would alone)."""
        groups: dict[tuple[str, DecodeOptions], list[int]] = defaultdict(list)
        for index, key in enumerate(zip(model_ids, options, strict=True)):
            groups[key].append(index)
        results: list[dict[str, Any]] = [{} for _ in texts]
        for (model_id, option), indices in groups.items():
            translations = await self._decode(
                model_id, [texts[i] for i in indices], option, [controls[i] for i in indices]
            )
            for index, translation in zip(indices, translations, strict=True):
                results[index] = _as_dict(translation, option, batch_size=len(indices))
        return results

    async def _decode(
        self,
        model_id: str,
        texts: list[str],
        options: DecodeOptions,
        controls: list[tuple[str | None, tuple[str, ...]]] | None = None,
    ) -> list[Translation]:
        translator = await self.translator_for(model_id)
        keywords: dict[str, Any] = {}
        if controls and any(prefix or phrases for prefix, phrases in controls):
            keywords["prefixes"] = [prefix for prefix, _ in controls]
            keywords["constraints"] = [list(phrases) for _, phrases in controls]
        self.last_used = weakref.ref(translator)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            translations = await loop.run_in_executor(
                self.decoder_thread,
                lambda: translator.translate(
                    texts, options.settings, options.return_attention, **keywords
                ),
            )
        except Exception:
            self.metrics.error(model_id)
            raise
        seconds = time.perf_counter() - started
        self.metrics.decoded(model_id, len(texts), seconds)
        self.backlog.decoded(len(texts))
        return translations


def _as_dict(translation: Translation, options: DecodeOptions, batch_size: int) -> dict[str, Any]:
    result = {"text": translation.text, "score": translation.score, "batch_size": batch_size}
    signals = [s.to_dict() if s else None for s in translation.alternative_signals]
    result["signals"] = signals[0] if signals else None
    if options.settings.n_best > 1:
        result["alternatives"] = [list(pair) for pair in translation.alternatives]
        result["alternative_signals"] = signals
    if options.return_attention:
        result["source_pieces"] = translation.source_pieces or []
        result["target_pieces"] = translation.target_pieces or []
        result["attention"] = translation.attention or []
    return result
