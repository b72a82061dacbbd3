"""The HTTP ingress: our API, LibreTranslate's, and the web page at `/`.

`POST /translate` serves both APIs on one path and tells them apart by the body: a form
body, or a JSON object with `q`, is LibreTranslate's; a JSON object with `text` is ours.
Each request is routed to one configured model (by id, by language pair, or by the detected
language) and its texts are sent to the translator deployment under that model's id, so
Serve routes them to a replica holding the model.

This module deliberately has no `from __future__ import annotations`: FastAPI must see the
real classes of the route parameters.
"""

import asyncio
import hmac
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline.serve import libretranslate as libre
from pipeline.serve.deployment import DecodeOptions
from pipeline.serve.metrics import ModelMetrics
from pipeline.serve.options import API_DEPLOYMENT, ServeOptions
from pipeline.serve.schema import (
    TranslateResponse,
    parse_request,
    translate_request_model,
    validation_error,
)
from pipeline.translate.catalog import ModelCatalog, ModelEntry, RouteError
from pipeline.translate.routing import Route, Router

BATCH_SIZE_HEADER = "X-Batch-Size"  # the largest beam-search batch this request's texts joined
HEALTH_TIMEOUT_S = 5.0
STATIC_DIR = Path(__file__).parent / "static"
BASE_PLACEHOLDER = "__BASE__"  # index.html's <base href>: the app's route prefix


def bearer_key(authorization: str | None) -> str | None:
    scheme, _, key = (authorization or "").partition(" ")
    return key if scheme.lower() == "bearer" and key else None


@serve.deployment(name=API_DEPLOYMENT)
@serve.ingress()
class TranslationApi:
    """HTTP in front of the translator deployment; its FastAPI app is built per replica."""

    def __init__(self, translator: DeploymentHandle, options: ServeOptions) -> None:
        self.translator = translator
        self.options = options
        self.catalog = ModelCatalog(options.models)
        self.router = Router(self.catalog)
        self.metrics = ModelMetrics()
        self.api_key = None
        if options.api_key_env:
            self.api_key = os.environ.get(options.api_key_env)
            if not self.api_key:  # fail closed rather than serve without the key asked for
                raise RuntimeError(f"{options.api_key_env} is not set in the replica's env")

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self)

    def require_key(self, *given: str | None) -> None:
        """401 unless a given key (Bearer header, LibreTranslate's `api_key`) is the key."""
        if self.api_key is None:
            return
        expected = self.api_key.encode()
        # compare_digest: the time taken does not reveal how much of the key matched.
        if not any(key and hmac.compare_digest(key.encode(), expected) for key in given):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong API key: send 'Authorization: Bearer <key>' "
                "(LibreTranslate clients: api_key)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def route(self, texts: list[str], **request: str | None) -> Route:
        # On a thread: the first detection loads the language identifier.
        return await asyncio.to_thread(self.router.route, texts, **request)

    async def translate(
        self, model: ModelEntry, texts: list[str], options: DecodeOptions
    ) -> list[dict[str, Any]]:
        """Each text to the translator replicas holding `model`; results in input order."""
        handle = self.translator.options(multiplexed_model_id=model.id)
        settings = options.settings
        self.metrics.request(model.id)
        calls = [
            handle.translate_one.remote(
                text, settings.beam_size, settings.n_best, options.return_attention
            )
            for text in texts
        ]
        try:
            return await asyncio.gather(*calls)
        except Exception:
            self.metrics.error(model.id)
            raise

    async def detect(self, text: str) -> list[dict[str, Any]]:
        ranking = await asyncio.to_thread(self.router.detector.rank, text)
        return [libre.detection_body(d) for d in ranking]

    async def health(self) -> dict[str, Any]:
        """Ready when a translator replica answers (it loaded the default model at start)."""
        try:
            await asyncio.wait_for(self.translator.replica_state.remote(), HEALTH_TIMEOUT_S)
        except Exception as error:  # any failure means not ready; say which
            raise HTTPException(503, f"model not ready: {type(error).__name__}") from None
        return {"status": "ok", "model": self.catalog.default.id}

    def page(self, root_path: str) -> str:
        html = (STATIC_DIR / "index.html").read_text()
        return html.replace(BASE_PLACEHOLDER, root_path.rstrip("/") + "/")


def _translate_body(model: ModelEntry, results: list[dict[str, Any]], request: Any) -> dict:
    body = TranslateResponse(
        translations=[r["text"] for r in results],
        scores=[r["score"] for r in results],
        model=model.id,
        alternatives=_alternatives(results) if request.n_best > 1 else None,
        attention=_attention(results) if request.return_attention else None,
    )
    return body.model_dump(exclude_none=True)


def _alternatives(results: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [[{"text": t, "score": s} for t, s in r["alternatives"]] for r in results]


def _attention(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("source_pieces", "target_pieces")
    return [{**{k: r[k] for k in keys}, "weights": r["attention"]} for r in results]


def _model_body(entry: ModelEntry) -> dict[str, Any]:
    sizes = ("name", "parameters", "src_vocab_size", "tgt_vocab_size")
    info = {key: entry.info.get(key) for key in sizes}
    return {"id": entry.id, "source": entry.source, "target": entry.target, **info}


def _limits(options: ServeOptions) -> dict[str, Any]:
    names = (
        "max_texts",
        "max_chars",
        "max_beam_size",
        "max_batch_size",
        "batch_wait_ms",
        "models_per_replica",
    )
    return {name: getattr(options, name) for name in names} | {
        "beam_size": options.decoding.beam_size
    }


async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    """HTTP errors as {"error": ..., "detail": ...}: LibreTranslate's key and FastAPI's."""
    content = {"error": error.detail, "detail": error.detail}
    return JSONResponse(content, error.status_code, headers=getattr(error, "headers", None))


async def bad_request(_: Request, error: Exception) -> JSONResponse:
    """A request naming what nobody serves, or a bad LibreTranslate request: 400."""
    return JSONResponse({"error": str(error)}, 400)


def create_api(gateway: TranslationApi) -> FastAPI:
    """The FastAPI app of one ingress replica: routes, validation, API key."""
    options, catalog = gateway.options, gateway.catalog
    request_model = translate_request_model(options)
    api = FastAPI(
        title="nmt serve",
        description=(
            f"Bahdanau attention NMT on Ray Serve: models {catalog.pairs()}. Limits: "
            f"{options.max_texts} texts per request, {options.max_chars} characters per text, "
            f"beam size 1 to {options.max_beam_size} (default {options.decoding.beam_size}). "
            "POST /translate takes our body (`text`) or LibreTranslate's (`q`, JSON or form). "
            "Send `Authorization: Bearer <key>` when the server was started with an API key."
        ),
    )
    api.add_exception_handler(RequestValidationError, validation_error)
    api.add_exception_handler(StarletteHTTPException, http_error)
    api.add_exception_handler(RouteError, bad_request)
    api.add_exception_handler(libre.LibreError, bad_request)
    api.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    async def header_key(authorization: Annotated[str | None, Header()] = None) -> None:
        gateway.require_key(bearer_key(authorization))

    secured = [Depends(header_key)]
    json_body = {"application/json": {"schema": request_model.model_json_schema()}}

    @api.post(
        "/translate",
        response_model=TranslateResponse,
        openapi_extra={"requestBody": {"content": json_body, "required": True}},
    )
    async def translate(
        request: Request,
        body: Annotated[Any, Body()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        if libre.is_libre_body(body):
            return await libre_translate(request, body, authorization)
        gateway.require_key(bearer_key(authorization))
        parsed = parse_request(request_model, body)
        route = await gateway.route(
            parsed.texts(), model=parsed.model, source=parsed.source, target=parsed.target
        )
        settings = replace(options.decoding, beam_size=parsed.beam_size, n_best=parsed.n_best)
        decode = DecodeOptions(settings, parsed.return_attention)
        results = await gateway.translate(route.model, parsed.texts(), decode)
        content = _translate_body(route.model, results, parsed)
        if route.detected is not None:
            content["detected_language"] = libre.detection_body(route.detected)
        batch_size = str(max(r["batch_size"] for r in results))
        return JSONResponse(content, headers={BATCH_SIZE_HEADER: batch_size})

    async def libre_translate(request: Request, body: Any, authorization: str | None):
        fields = libre.fields_of(body, request.headers.get("content-type"))
        gateway.require_key(libre.api_key_of(fields), bearer_key(authorization))
        parsed = libre.parse_translate(fields, options)
        route = await gateway.route(parsed.texts, source=parsed.source, target=parsed.target)
        beam_size = max(options.decoding.beam_size, parsed.n_best)
        settings = replace(options.decoding, beam_size=beam_size, n_best=parsed.n_best)
        results = await gateway.translate(route.model, parsed.texts, DecodeOptions(settings))
        return JSONResponse(libre.translate_response(parsed, results, route.detected))

    @api.post("/detect")
    async def detect(
        request: Request,
        body: Annotated[Any, Body()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> list[dict[str, Any]]:
        """LibreTranslate's: the served source languages the text may be in, likeliest first."""
        fields = libre.fields_of(body, request.headers.get("content-type"))
        gateway.require_key(libre.api_key_of(fields), bearer_key(authorization))
        return await gateway.detect(libre.parse_detect(fields, options))

    @api.get("/languages")
    async def languages() -> list[dict[str, Any]]:
        """LibreTranslate's: each served language and the languages it translates into."""
        return libre.languages_body(catalog)

    @api.get("/models", dependencies=secured)
    async def models() -> dict[str, Any]:
        return {
            "default": catalog.default.id,
            "models": [_model_body(entry) for entry in catalog.entries],
            "limits": _limits(options),
        }

    @api.get("/model", dependencies=secured)
    async def model() -> dict[str, Any]:
        """The default model and the limits."""
        default = catalog.default
        return {**default.info, "id": default.id, "limits": _limits(options)}

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return await gateway.health()

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> str:
        return gateway.page(request.scope.get("root_path", ""))

    return api
