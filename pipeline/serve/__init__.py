"""`nmt serve`: the autoscaled HTTP translation endpoint (Ray Serve).

Interface for other code (bulk translation's `--via-serve` among it):

    from pipeline.serve import APP_NAME, TRANSLATOR_DEPLOYMENT, build_app

    app = build_app("runs/exp/de-en", max_batch_size=32, num_cpus=0.25)  # a serve.Application
    serve.run(app, name=APP_NAME, route_prefix="/")
    handle = serve.get_deployment_handle(TRANSLATOR_DEPLOYMENT, app_name=APP_NAME)
    texts = await handle.translate_batch.remote(["Ein Hund läuft."], beam_size=5)  # list[str]

Deployments (names are constants of `pipeline.serve.options`):
- TRANSLATOR_DEPLOYMENT ("Translator"): wraps the `Translator`, autoscaled.
  - `async translate_batch(texts: list[str], beam_size: int | None = None) -> list[str]`:
    one call, one list in input order; for callers that already hold a batch.
  - `async translate_one(text, beam_size=None, n_best=1, return_attention=False) -> dict`:
    the `@serve.batch` path the
    HTTP ingress uses, so sentences from concurrent requests share one beam search.
  - `info() -> dict`: the Translator's `info()`.
- API_DEPLOYMENT ("TranslationApi"): the FastAPI ingress (`POST /translate`, `GET /health`,
  `GET /model`, `/docs`).

`build_app(model_path, **options)` takes the fields of `ServeOptions` as keywords (and those
of `DecodeSettings`, or `decoding=DecodeSettings(...)`);
`pipeline.serve.app:app_builder(args)` is the same for `serve run` / `serve deploy` (see
serve_config.yaml).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports
from pipeline.serve.options import API_DEPLOYMENT, APP_NAME, TRANSLATOR_DEPLOYMENT, ServeOptions

if TYPE_CHECKING:
    from pipeline.serve.app import build_app

__all__ = ["API_DEPLOYMENT", "APP_NAME", "TRANSLATOR_DEPLOYMENT", "ServeOptions", "build_app"]


__getattr__ = lazy_exports(__name__, {"build_app": "pipeline.serve.app"})
