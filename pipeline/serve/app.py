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

from pipeline.errors import UserError
from pipeline.serve.api import TranslationApi
from pipeline.serve.deployment import TranslatorDeployment
from pipeline.serve.options import ServeOptions
from pipeline.translate.catalog import CatalogSpec, ModelEntry, load_models, resolve_models
from pipeline.translate.settings import DecodeSettings

Models = CatalogSpec | ModelEntry | Sequence[CatalogSpec | ModelEntry]


def bind_application(options: ServeOptions) -> Application:
    """Both deployments with their resources, batching and autoscaling applied."""
    translator = TranslatorDeployment.options(
        autoscaling_config=options.autoscaling_config,
        # Room for a full batch decoding and the next one filling on the same replica.
        max_ongoing_requests=2 * options.max_batch_size,
        ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
    ).bind(options)
    return TranslationApi.options(
        num_replicas=options.ingress_replicas,
        max_ongoing_requests=1000,  # the ingress only awaits; the translator applies back-pressure
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
    return bind_application(options)


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
    types = {f.name: f.type for f in (*fields(ServeOptions), *fields(DecodeSettings))}
    # `serve run pipeline.serve.app:app_builder key=value` passes every value as a string.
    converted = {name: _convert(value, types.get(name, "str")) for name, value in args.items()}
    return build_app(specs or None, models_dir=models_dir, **converted)


def _convert(value: Any, type_name: str) -> Any:
    if not isinstance(value, str) or type_name.startswith("str"):
        return value
    if type_name.startswith("int"):
        return int(value)
    return float(value)
