"""`nmt serve`: the autoscaled HTTP translation endpoint (Ray Serve).

Interface for other code (bulk translation's `--via-serve` among it):

    from pipeline.serve import APP_NAME, TRANSLATOR_DEPLOYMENT, build_app

    app = build_app("runs/exp/de-en", max_batch_size=32, num_cpus=0.25)  # a serve.Application
    serve.run(app, name=APP_NAME, route_prefix="/")
    handle = serve.get_deployment_handle(TRANSLATOR_DEPLOYMENT, app_name=APP_NAME)
    texts = await handle.translate_batch.remote(["Ein Hund läuft."], beam_size=5)  # list[str]

Deployments (names are module constants):
- TRANSLATOR_DEPLOYMENT ("Translator"): wraps `pipeline.translator.Translator`, autoscaled.
  - `async translate_batch(texts: list[str], beam_size: int | None = None) -> list[str]`:
    one call, one list in input order; for callers that already hold a batch.
  - `async translate_one(text: str, options: dict) -> dict`: the `@serve.batch` path the
    HTTP ingress uses, so sentences from concurrent requests share one beam search.
  - `info() -> dict`: the Translator's `info()`.
- API_DEPLOYMENT ("TranslationApi"): the FastAPI ingress (`POST /translate`, `GET /health`,
  `GET /model`, `/docs`).

`build_app(model_path, **options)` takes the fields of `ServeOptions` as keywords;
`app_builder(args)` is the same for `serve run` / `serve deploy` (see serve_config.yaml).
"""

from __future__ import annotations

APP_NAME = "nmt"
TRANSLATOR_DEPLOYMENT = "Translator"
API_DEPLOYMENT = "TranslationApi"
