"""The HTTP ingress: our API, LibreTranslate's, and the web page at `/`.

`POST /translate` serves both APIs on one path and tells them apart by the body: a form
body, or a JSON object with `q`, is LibreTranslate's; a JSON object with `text` is ours.
Each request is routed to one configured model (by id, by language pair, or by the detected
language) and its texts are sent to the translator deployment in one call under that model's
id, so Serve routes them to a replica holding the model.

Before that the ingress refuses what it should not take on: a body over the size limit (413,
unread), a missing or wrong API key (401), a client over its rate limit (429 with
`Retry-After`). After it, a replica with no room answers 503 with `Retry-After`, a request
past its deadline is 504, and one whose replica died is sent again (`pipeline.serve.overload`).

This module deliberately has no `from __future__ import annotations`: FastAPI must see the
real classes of the route parameters.
"""

import asyncio
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

import pipeline.serve.libretranslate as libre
from pipeline.serve.deployment import DecodeOptions, InvalidRequest
from pipeline.serve.keys import ApiKey, KeyRing, digest
from pipeline.serve.metrics import BODY_TOO_LARGE, OVERLOADED, RATE_LIMITED, ModelMetrics
from pipeline.serve.options import API_DEPLOYMENT, ServeOptions
from pipeline.serve.overload import (
    DeadlineExceeded,
    Overloaded,
    RecentRefusals,
    call_with_retries,
)
from pipeline.serve.ratelimit import RateLimiter, retry_after_header
from pipeline.serve.schema import (
    ScoreResponse,
    TranslateResponse,
    parse_request,
    score_request_model,
    translate_request_model,
    validation_error,
)
from pipeline.translate.catalog import ModelCatalog, ModelEntry, RouteError
from pipeline.translate.routing import Route, Router
from pipeline.translate.settings import SAMPLING_FIELDS

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
        self.model_ids = tuple(entry.id for entry in self.catalog.entries)
        self.router = Router(self.catalog)
        self.metrics = ModelMetrics()
        self.keys = KeyRing(accepted_keys(options))
        self.limiter = RateLimiter()
        self.refusals = RecentRefusals()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self)

    def require_key(self, *given: str | None) -> ApiKey | None:
        """The accepted key among those given (Bearer header, LibreTranslate's `api_key`);
        401 when the server takes keys and none is accepted, None when it takes none."""
        key = self.keys.find(*given)
        if key is None and self.keys:
            raise HTTPException(
                status_code=401,
                detail="missing or wrong API key: send 'Authorization: Bearer <key>' "
                "(LibreTranslate clients: api_key)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return key

    def admit(self, request: Request, *given: str | None) -> None:
        """The key check, then the rate limit: per accepted key, else per client address
        (unchecked keys of an open server do not count: a client could make them up)."""
        key = self.require_key(*given)
        limit = (key and key.rate_limit) or self.options.access.rate_limit
        if limit is None:
            return
        client = f"key {key.digest}" if key else f"address {_address(request)}"
        wait_s = self.limiter.take(client, limit)
        if wait_s is not None:
            self.metrics.refused(RATE_LIMITED)
            raise HTTPException(
                status_code=429,
                detail=f"rate limit of {limit:g} requests per minute reached; "
                f"retry in {retry_after_header(wait_s)} s",
                headers={"Retry-After": retry_after_header(wait_s)},
            )

    async def route(self, texts: list[str], **request: str | None) -> Route:
        # On a thread: the first detection loads the language identifier.
        return await asyncio.to_thread(self.router.route, texts, **request)

    async def translate(
        self,
        model: ModelEntry,
        texts: list[str],
        options: DecodeOptions,
        prefixes: list[str | None] | None = None,
        constraints: list[list[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """The texts to a translator replica holding `model`, in one call; results in input
        order. Within the deadline, and sent again when the replica dies on the way. A
        prefix or constraint that cannot be decoded is a 422."""
        settings = options.settings
        results = await self.call(
            model,
            lambda handle: handle.translate_texts.remote(
                texts,
                settings.beam_size,
                settings.n_best,
                options.return_attention,
                settings.sampling(),
                prefixes,
                constraints,
            ),
        )
        if isinstance(results, InvalidRequest):
            raise HTTPException(status_code=422, detail=results.message)
        return results

    async def call(self, model: ModelEntry, send: Any) -> Any:
        """`send(handle)` to a translator replica holding `model`: within the deadline, sent
        again when the replica dies on the way, refusals and failures counted."""
        handle = self.translator.options(multiplexed_model_id=model.id)
        load = self.options.load
        self.metrics.request(model.id)
        try:
            if refusal := self.refusals.refusal(model.id):
                raise refusal
            results = await call_with_retries(
                lambda: send(handle),
                load.request_timeout_s or None,
                load.retries,
                on_retry=lambda _: self.metrics.retried(model.id),
            )
        except Overloaded as refusal:
            self.refusals.refused(model.id, refusal)
            self.metrics.shed(model.id)
            raise
        except DeadlineExceeded:
            self.refusals.completed(model.id)  # cancelled, it made room on its replica
            self.metrics.deadline(model.id)
            raise
        except Exception:
            self.metrics.error(model.id)
            raise
        self.refusals.completed(model.id)
        return results

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


def accepted_keys(options: ServeOptions) -> list[ApiKey]:
    """The keys file's keys and the one in `api_key_env`, which takes the default limit."""
    keys = list(options.access.keys)
    variable = options.access.api_key_env
    if variable:
        key = os.environ.get(variable)
        if not key:  # fail closed rather than serve without the key asked for
            raise RuntimeError(f"{variable} is not set in the replica's env")
        keys.append(ApiKey(digest(key)))
    return keys


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _translate_body(model: ModelEntry, results: list[dict[str, Any]], request: Any) -> dict:
    body = TranslateResponse(
        translations=[r["text"] for r in results],
        scores=[r["score"] for r in results],
        model=model.id,
        alternatives=_alternatives(results) if request.n_best > 1 else None,
        attention=_attention(results) if request.return_attention else None,
        signals=[r.get("signals") for r in results],
    )
    return body.model_dump(exclude_none=True)


def _alternatives(results: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [
        [
            {"text": t, "score": s, "signals": signals}
            for (t, s), signals in zip(r["alternatives"], r["alternative_signals"], strict=True)
        ]
        for r in results
    ]


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


class BodyTooLarge(StarletteHTTPException):
    """A request body past the limit: 413."""

    def __init__(self, limit: int) -> None:
        message = f"the request body is over {limit} bytes; send fewer or shorter texts"
        super().__init__(413, message)


class BodyLimit:
    """ASGI middleware: a body announced (Content-Length) over `limit` bytes is 413 before
    any of it is read; a chunked one stops being read once it passes the limit.

    Not FastAPI's `max_body_size`: that replaces any answer to an over-long Content-Length
    with a plain-text 413 of its own, where clients get a JSON error from every other path."""

    def __init__(self, app: Any, limit: int, metrics: ModelMetrics) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._announced(scope) > self.limit:
            error = BodyTooLarge(self.limit)
            await body_too_large_response(error, self.metrics)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge(self.limit)  # FastAPI passes it to the 413 handler
            return message

        await self.app(scope, limited_receive, send)

    @staticmethod
    def _announced(scope: dict) -> int:
        for name, value in scope["headers"]:
            if name == b"content-length":
                return int(value) if value.isdigit() else 0
        return 0


def body_too_large_response(error: StarletteHTTPException, metrics: ModelMetrics) -> JSONResponse:
    metrics.refused(BODY_TOO_LARGE)
    return JSONResponse({"error": error.detail, "detail": error.detail}, 413)


def body_limit_handler(metrics: ModelMetrics):
    async def body_too_large(_: Request, error: StarletteHTTPException) -> JSONResponse:
        """Over the body limit (`BodyLimit` stopped reading it): 413, one line."""
        return body_too_large_response(error, metrics)

    return body_too_large


async def overloaded(_: Request, error: Overloaded) -> JSONResponse:
    """No replica has room now: 503, and when to come back."""
    return overloaded_response(error)


def overloaded_response(error: Overloaded) -> JSONResponse:
    headers = {"Retry-After": retry_after_header(error.retry_after_s)}
    return JSONResponse({"error": error.message}, 503, headers=headers)


class ShedBeforeReading:
    """ASGI middleware: while the replicas of every model have just refused, a translation
    request is refused before its body is fetched from the proxy and parsed (under overload
    most would be, and that reading is most of what a refusal costs the ingress)."""

    def __init__(self, app: Any, gateway: "TranslationApi") -> None:
        self.app, self.gateway = app, gateway

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        refusal = None
        if scope["type"] == "http" and scope["method"] == "POST" and _is_translate(scope):
            refusal = self.gateway.refusals.every(self.gateway.model_ids)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        self.gateway.metrics.refused(OVERLOADED)
        await overloaded_response(refusal)(scope, receive, send)


def deadline_handler(timeout_s: float):
    async def deadline_exceeded(_: Request, error: DeadlineExceeded) -> JSONResponse:
        """The translation did not finish in time: 504, one line."""
        message = (
            f"the translation did not finish within the {timeout_s:g} s deadline; "
            "retry later or with fewer texts"
        )
        return JSONResponse({"error": message}, 504)

    return deadline_exceeded


def _is_translate(scope: dict) -> bool:
    return scope["path"].rstrip("/").endswith("/translate")


def create_api(gateway: TranslationApi) -> FastAPI:
    """The FastAPI app of one ingress replica: routes, validation, API key."""
    options, catalog = gateway.options, gateway.catalog
    request_model = translate_request_model(options)
    score_model = score_request_model(options)
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
    api.add_exception_handler(Overloaded, overloaded)
    api.add_exception_handler(DeadlineExceeded, deadline_handler(options.load.request_timeout_s))
    api.add_exception_handler(BodyTooLarge, body_limit_handler(gateway.metrics))
    api.add_middleware(ShedBeforeReading, gateway=gateway)
    # Added last, so it runs first: an oversized body is refused before anything else.
    api.add_middleware(BodyLimit, limit=options.max_body_bytes, metrics=gateway.metrics)
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
        gateway.admit(request, bearer_key(authorization))
        parsed = parse_request(request_model, body)
        route = await gateway.route(
            parsed.texts(), model=parsed.model, source=parsed.source, target=parsed.target
        )
        settings = replace(
            options.decoding,
            beam_size=parsed.beam_size,
            n_best=parsed.n_best,
            **parsed.model_dump(include=set(SAMPLING_FIELDS)),
        )
        decode = DecodeOptions(settings, parsed.return_attention)
        results = await gateway.translate(
            route.model, parsed.texts(), decode, parsed.prefixes(), parsed.constraints()
        )
        content = _translate_body(route.model, results, parsed)
        if route.detected is not None:
            content["detected_language"] = libre.detection_body(route.detected)
        batch_size = str(max(r["batch_size"] for r in results))
        return JSONResponse(content, headers={BATCH_SIZE_HEADER: batch_size})

    @api.post(
        "/score",
        response_model=ScoreResponse,
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": score_model.model_json_schema()}},
                "required": True,
            }
        },
    )
    async def score(
        request: Request,
        body: Annotated[Any, Body()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """log P(translation | text) for each pair, as `nmt score` gives it."""
        gateway.admit(request, bearer_key(authorization))
        parsed = parse_request(score_model, body)
        route = await gateway.route(
            parsed.texts(), model=parsed.model, source=parsed.source, target=parsed.target
        )
        texts, translations = parsed.texts(), parsed.translations()
        scores = await gateway.call(
            route.model, lambda handle: handle.score_texts.remote(texts, translations)
        )
        return ScoreResponse(
            log_probs=[s["log_prob"] for s in scores],
            mean_log_probs=[s["mean_log_prob"] for s in scores],
            model=route.model.id,
        ).model_dump()

    async def libre_translate(request: Request, body: Any, authorization: str | None):
        fields = libre.fields_of(body, request.headers.get("content-type"))
        gateway.admit(request, libre.api_key_of(fields), bearer_key(authorization))
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
        gateway.admit(request, libre.api_key_of(fields), bearer_key(authorization))
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
