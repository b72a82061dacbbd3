"""The Serve application behind `nmt serve` (interface: see `pipeline.serve`).

Two deployments, so the models scale apart from HTTP handling:
- `TranslatorDeployment` (`pipeline.serve.deployment`): the configured models multiplexed over
  autoscaled replicas, sentences batched per model.
- `TranslationApi` (`pipeline.serve.api`): the FastAPI ingress, our API, LibreTranslate's and
  the web page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from ray.serve import Application
from ray.serve.config import BackpressureConfig

from pipeline.errors import UserError
from pipeline.serve.api import TranslationApi
from pipeline.serve.deployment import TranslatorDeployment
from pipeline.serve.keys import read_keys_file
from pipeline.serve.options import NESTED, ServeOptions
from pipeline.translate.catalog import CatalogSpec, ModelEntry, load_models, resolve_models

# The ingress only awaits, so it takes many requests at once; past that the HTTP proxy holds
# a few more and then refuses with 503 and Retry-After (a backstop: the translators' backlog
# refuses first).
INGRESS_MAX_ONGOING = 1000
INGRESS_MAX_QUEUED = 100

Models = CatalogSpec | ModelEntry | Sequence[CatalogSpec | ModelEntry]


def bind_application(options: ServeOptions) -> Application:
    """Both deployments with their resources, batching, autoscaling and limits applied."""
    translator = TranslatorDeployment.options(
        autoscaling_config=options.autoscaling_config,
        # Above the backlog a replica refuses by itself (every request holds a sentence or
        # more), so Serve's router, slow to hand out work to a full replica, never sees one
        # full; the rest is room for refusals in flight and bulk work.
        max_ongoing_requests=2 * options.backlog_sentences,
        max_queued_requests=options.max_queued_requests,
        ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
    ).bind(options)
    return TranslationApi.options(
        num_replicas=options.ingress_replicas,
        max_ongoing_requests=INGRESS_MAX_ONGOING,
        max_queued_requests=INGRESS_MAX_QUEUED,
        backpressure_config=BackpressureConfig(retry_after_s=options.load.retry_after_s),
        ray_actor_options={"num_cpus": 0.1},
    ).bind(translator, options)


def build_app(
    model: Models | None = None,
    options: ServeOptions | None = None,
    *,
    models_dir: str | Path | None = None,
    **flat_options: Any,
) -> Application:
    """The Serve application for one model or several.

    `model` is a model dir or run dir (path or URI), an `ID=PATH` string, a `{id, path}`
    mapping, or a list of these; `models_dir` a directory of model dirs; or the models are
    `options.models` already. Every model is loaded once here, so a broken one is one
    `UserError` before anything serves. Either `options` whole, or its fields as keywords
    (`ServeOptions.from_flat`: decoding fields such as beam_size go into its `decoding`).
    """
    if options is not None and flat_options:
        raise UserError("give build_app either a ServeOptions or its fields, not both")
    options = options or ServeOptions.from_flat(flat_options)
    if model is not None or models_dir is not None or not options.models:
        specs = [] if model is None else _as_list(model)
        options = replace(options, models=tuple(resolve_models(specs, models_dir)))
    if any(not entry.info for entry in options.models):
        options = replace(options, models=tuple(load_models(options.models)))
    return bind_application(with_keys(options))


def with_keys(options: ServeOptions) -> ServeOptions:
    """The keys of `access.api_keys_file`, read here so that a bad file is one `UserError`
    before anything serves; the replicas get their digests only."""
    path = options.access.api_keys_file
    if not path or options.access.keys:
        return options
    return replace(options, access=replace(options.access, keys=read_keys_file(path)))


def _as_list(model: Models) -> list[CatalogSpec | ModelEntry]:
    if isinstance(model, str | Path | ModelEntry | Mapping):
        return [model]
    return list(model)


def app_builder(args: dict[str, Any]) -> Application:
    """Application builder for `serve run` / `serve deploy`: `args` holds `model` (one), or
    `models` (a list of `{id, path}` or `ID=PATH`), or `models_dir`, and any `ServeOptions`
    fields (as in serve_config.yaml, or `key=value` after the import path)."""
    args = dict(args)
    model, models = args.pop("model", None), args.pop("models", None)
    models_dir = args.pop("models_dir", None)
    if model is None and models is None and models_dir is None:
        raise UserError(
            "serve config args need `model` (a model dir or run dir), `models` or `models_dir`"
        )
    specs = ([model] if model is not None else []) + list(models or [])
    nested = [f for _, kind in NESTED for f in fields(kind)]
    types = {f.name: f.type for f in (*fields(ServeOptions), *nested)}
    # `serve run pipeline.serve.app:app_builder key=value` passes every value as a string.
    converted = {name: _convert(value, types.get(name, "str")) for name, value in args.items()}
    return build_app(specs or None, models_dir=models_dir, **converted)


def _convert(value: Any, type_name: str) -> Any:
    if not isinstance(value, str) or type_name.startswith("str"):
        return value
    if type_name.startswith("int"):
        return int(value)
    return float(value)
