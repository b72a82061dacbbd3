"""`nmt serve`: many models behind one autoscaled HTTP endpoint (Ray Serve), with our API,
LibreTranslate's and a web page.

Interface for other code (bulk translation's `--via-serve` among it):

    from pipeline.serve import APP_NAME, TRANSLATOR_DEPLOYMENT, build_app

    app = build_app(["de-en=runs/exp/de-en", "runs/exp/en-de"], num_cpus=0.25)  # or one path
    serve.run(app, name=APP_NAME, route_prefix="/")
    handle = serve.get_deployment_handle(TRANSLATOR_DEPLOYMENT, app_name=APP_NAME)
    texts = await handle.options(multiplexed_model_id="de-en").translate_batch.remote(
        ["Ein Hund läuft."], beam_size=5
    )  # list[str]; without a model id the default (first) model translates

Deployments (names are constants of `pipeline.serve.options`):
- TRANSLATOR_DEPLOYMENT ("Translator", `pipeline.serve.deployment`): the models, multiplexed
  over autoscaled replicas (`models_per_replica` each, LRU, loaded on demand).
  - `async translate_batch(texts: list[str], beam_size: int | None = None, sampling=None)
    -> list[str]`: one call, one list in input order; for callers that already hold a batch.
  - `async translate_texts(texts, beam_size=None, n_best=1, return_attention=False,
    sampling=None) -> list[dict]` (`sampling`: `DecodeSettings.sampling()`, overriding the
    replica's): the path the HTTP ingress uses, one call per request; each sentence joins
    `@serve.batch`, so sentences from concurrent requests share one beam search per model.
    Returns `pipeline.serve.overload.Busy` instead when the replica's backlog has no room.
  - `async info() -> dict`: the model's `Translator.info()`; `models() -> list[ModelEntry]`:
    the configured models, the default first; `replica_state() -> dict`: loads per model.
- API_DEPLOYMENT ("TranslationApi", `pipeline.serve.api`): the FastAPI ingress
  (`POST /translate` for our API and LibreTranslate's, `POST /detect`, `GET /languages`,
  `GET /models`, `GET /model`, `GET /health`, the page at `/`, `/docs`).

`build_app(models, **options)` takes the fields of `ServeOptions` as keywords (and those of
`DecodeSettings`, or `decoding=DecodeSettings(...)`); `pipeline.serve.app:app_builder(args)`
is the same for `serve run` / `serve deploy` (see serve_config.yaml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports
from pipeline.serve.options import API_DEPLOYMENT, APP_NAME, TRANSLATOR_DEPLOYMENT, ServeOptions

if TYPE_CHECKING:
    from pipeline.serve.app import build_app

__all__ = ["API_DEPLOYMENT", "APP_NAME", "TRANSLATOR_DEPLOYMENT", "ServeOptions", "build_app"]


__getattr__ = lazy_exports(__name__, {"build_app": "pipeline.serve.app"})
