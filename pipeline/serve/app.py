"""The Ray Serve deployments behind `nmt serve` (interface: see `pipeline.serve`).

Two deployments, so the model scales apart from HTTP handling:
- `TranslatorDeployment` holds a `Translator` per replica, autoscaled on ongoing requests.
  Each sentence of each HTTP request is one call to `translate_one`; `@serve.batch` gathers
  the calls that arrive together into one beam search.
- `TranslationApi` is the FastAPI ingress: validation, API key, fan-out of a request's
  texts to the translator, and the response in the request's order.

This module deliberately has no `from __future__ import annotations`: the request model is
built at replica start (limits are options), and FastAPI must see the real class.
"""

import asyncio
import hmac
import math
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from pipeline.errors import UserError
from pipeline.serve.options import API_DEPLOYMENT, TRANSLATOR_DEPLOYMENT, ServeOptions
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translation, Translator, find_model_dir

BATCH_SIZE_HEADER = "X-Batch-Size"  # the largest beam-search batch this request's texts joined
HEALTH_TIMEOUT_S = 5.0
PROBE_TEXT = "."  # any text exercises encoder, attention and decoder


@dataclass(frozen=True)
class DecodeOptions:
    """Sentences decode together only when these agree."""

    settings: DecodeSettings
    return_attention: bool = False


@serve.deployment(name=TRANSLATOR_DEPLOYMENT)
class TranslatorDeployment:
    """One `Translator` per replica; decoding runs on one worker thread so the event loop
    keeps accepting requests (and filling the next batch) while a batch decodes."""

    def __init__(self, model_dir: str, options: ServeOptions) -> None:
        # Fractional-CPU replicas share cores: one intra-op thread each avoids oversubscription.
        torch.set_num_threads(max(1, int(options.num_cpus)))
        # One Serve batch is one beam search.
        batch_size = max(options.decoding.batch_size, options.max_batch_size)
        settings = replace(options.decoding, batch_size=batch_size)
        self.translator = Translator(model_dir, device=options.device, settings=settings)
        self.decoder_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self._decode_batch.set_max_batch_size(options.max_batch_size)
        self._decode_batch.set_batch_wait_timeout_s(options.batch_wait_ms / 1000)

    async def translate_one(
        self,
        text: str,
        beam_size: int | None = None,
        n_best: int = 1,
        return_attention: bool = False,
    ) -> dict[str, Any]:
        """One sentence, decoded with whatever else arrives within the batch wait.

        Returns {"text", "score", "batch_size"}, plus "alternatives" (n-best [text, score],
        best first) when n_best > 1 and "source_pieces"/"target_pieces"/"attention"
        ([target piece][source piece]) when asked.
        """
        settings = self.translator.settings.with_overrides(beam_size=beam_size, n_best=n_best)
        return await self._decode_batch(text, DecodeOptions(settings, return_attention))

    async def translate_batch(self, texts: list[str], beam_size: int | None = None) -> list[str]:
        """A caller's own batch (bulk translation): best translations in input order."""
        settings = self.translator.settings.with_overrides(beam_size=beam_size)
        translations = await self._decode(texts, DecodeOptions(settings))
        return [t.text for t in translations]

    def info(self) -> dict[str, Any]:
        return self.translator.info()

    async def check_health(self) -> None:
        """Serve replaces the replica when this raises: the model must still translate."""
        greedy = replace(self.translator.settings, beam_size=1, n_best=1)
        (probe,) = await asyncio.to_thread(self.translator.translate, [PROBE_TEXT], greedy)
        if not math.isfinite(probe.score):
            raise RuntimeError(f"model is not usable: probe translation scored {probe.score}")

    # Max batch size and wait are set per replica in __init__. Serve records the batch
    # sizes it forms as the `ray_serve_actual_batch_size` metric.
    @serve.batch
    async def _decode_batch(
        self, texts: list[str], options: list[DecodeOptions]
    ) -> list[dict[str, Any]]:
        groups: dict[DecodeOptions, list[int]] = defaultdict(list)
        for index, option in enumerate(options):
            groups[option].append(index)
        results: list[dict[str, Any]] = [{} for _ in texts]
        for option, indices in groups.items():
            translations = await self._decode([texts[i] for i in indices], option)
            for index, translation in zip(indices, translations, strict=True):
                results[index] = _as_dict(translation, option, batch_size=len(indices))
        return results

    async def _decode(self, texts: list[str], options: DecodeOptions) -> list[Translation]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.decoder_thread,
            lambda: self.translator.translate(texts, options.settings, options.return_attention),
        )


def _as_dict(translation: Translation, options: DecodeOptions, batch_size: int) -> dict[str, Any]:
    result = {"text": translation.text, "score": translation.score, "batch_size": batch_size}
    if options.settings.n_best > 1:
        result["alternatives"] = [list(pair) for pair in translation.alternatives]
    if options.return_attention:
        result["source_pieces"] = translation.source_pieces or []
        result["target_pieces"] = translation.target_pieces or []
        result["attention"] = translation.attention or []
    return result


class Alternative(BaseModel):
    text: str
    score: float


class AttentionMatrix(BaseModel):
    source_pieces: list[str]
    target_pieces: list[str]
    weights: list[list[float]] = Field(description="[target piece][source piece]")


class TranslateResponse(BaseModel):
    translations: list[str] = Field(description="best translation per text, in request order")
    scores: list[float] = Field(description="log-probability over the GNMT length penalty")
    model: str
    alternatives: list[list[Alternative]] | None = Field(None, description="when n_best > 1")
    attention: list[AttentionMatrix] | None = Field(None, description="when return_attention")


def translate_request_model(options: ServeOptions) -> type[BaseModel]:
    """The POST /translate body, with this deployment's limits (shown in /docs)."""

    class TranslateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        text: str | list[str] = Field(
            description=f"one text or a list of 1 to {options.max_texts} texts, "
            f"each at most {options.max_chars} characters",
            examples=["Ein Mann fährt Fahrrad."],
        )
        beam_size: int = Field(options.decoding.beam_size, ge=1, le=options.max_beam_size)
        n_best: int = Field(1, ge=1, le=options.max_beam_size, description="<= beam_size")
        return_attention: bool = False

        @field_validator("text")
        @classmethod
        def within_limits(cls, text: str | list[str]) -> str | list[str]:
            texts = [text] if isinstance(text, str) else text
            if not texts:
                raise ValueError("the text list is empty; send at least one text")
            if len(texts) > options.max_texts:
                raise ValueError(
                    f"{len(texts)} texts; at most {options.max_texts} per request (max_texts)"
                )
            for index, item in enumerate(texts):
                if len(item) > options.max_chars:
                    raise ValueError(
                        f"text {index} has {len(item)} characters; "
                        f"at most {options.max_chars} per text (max_chars)"
                    )
            return text

        @model_validator(mode="after")
        def n_best_within_beam(self) -> "TranslateRequest":
            if self.n_best > self.beam_size:
                raise ValueError(f"n_best ({self.n_best}) exceeds beam_size ({self.beam_size})")
            return self

        def texts(self) -> list[str]:
            return [self.text] if isinstance(self.text, str) else self.text

    return TranslateRequest


def api_key_dependency(expected: str | None):
    """A FastAPI dependency: 401 unless `Authorization: Bearer <expected>` (when set)."""

    async def require_api_key(authorization: Annotated[str | None, Header()] = None) -> None:
        if expected is None:
            return
        scheme, _, key = (authorization or "").partition(" ")
        # compare_digest: the time taken does not reveal how much of the key matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.encode(), expected.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_api_key


async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    """422 with a one-line `error` naming the field and the limit, plus FastAPI's details."""
    summary = "; ".join(f"{_field_name(e['loc'])}: {e['msg']}" for e in error.errors())
    return JSONResponse(
        status_code=422, content={"error": summary, "detail": jsonable_encoder(error.errors())}
    )


def _field_name(location: tuple) -> str:
    # ("body", "text", "list[str]") -> "text.list[str]"; errors about the whole body -> "request"
    return ".".join(p for p in location[1:] if isinstance(p, str)) or "request"


@serve.deployment(name=API_DEPLOYMENT)
@serve.ingress()
class TranslationApi:
    """HTTP in front of the translator deployment; its FastAPI app is built per replica."""

    def __init__(self, translator: DeploymentHandle, options: ServeOptions) -> None:
        self.translator = translator
        self.options = options
        self.api_key = None
        if options.api_key_env:
            self.api_key = os.environ.get(options.api_key_env)
            if not self.api_key:  # fail closed rather than serve without the key asked for
                raise RuntimeError(f"{options.api_key_env} is not set in the replica's env")
        self.model_info: dict[str, Any] | None = None

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self)

    async def info(self) -> dict[str, Any]:
        if self.model_info is None:
            self.model_info = await self.translator.info.remote()
        return self.model_info

    async def translate(self, texts: list[str], options: DecodeOptions) -> dict[str, Any]:
        settings = options.settings
        calls = [
            self.translator.translate_one.remote(
                text, settings.beam_size, settings.n_best, options.return_attention
            )
            for text in texts
        ]
        results = await asyncio.gather(*calls)
        return {
            "translations": [r["text"] for r in results],
            "scores": [r["score"] for r in results],
            "model": (await self.info())["name"],
            "batch_size": max(r["batch_size"] for r in results),
            "alternatives": _alternatives(results) if settings.n_best > 1 else None,
            "attention": _attention(results) if options.return_attention else None,
        }

    async def health(self) -> dict[str, Any]:
        """Ready when a translator replica answers: its model is loaded."""
        try:
            info = await asyncio.wait_for(self.info(), HEALTH_TIMEOUT_S)
        except Exception as error:  # any failure means not ready; say which
            raise HTTPException(503, f"model not ready: {type(error).__name__}") from None
        return {"status": "ok", "model": info["name"]}


def _alternatives(results: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [[{"text": t, "score": s} for t, s in r["alternatives"]] for r in results]


def _attention(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("source_pieces", "target_pieces")
    return [{**{k: r[k] for k in keys}, "weights": r["attention"]} for r in results]


def create_api(gateway: TranslationApi) -> FastAPI:
    """The FastAPI app of one ingress replica: routes, validation, API key."""
    options = gateway.options
    request_model = translate_request_model(options)
    api = FastAPI(
        title="nmt serve",
        description=(
            "Bahdanau attention NMT on Ray Serve. Limits: "
            f"{options.max_texts} texts per request, {options.max_chars} characters per text, "
            f"beam size 1 to {options.max_beam_size} (default {options.decoding.beam_size}). "
            "Send `Authorization: Bearer <key>` when the server was started with an API key."
        ),
    )
    api.add_exception_handler(RequestValidationError, validation_error)
    secured = [Depends(api_key_dependency(gateway.api_key))]

    @api.post("/translate", dependencies=secured, response_model_exclude_none=True)
    async def translate(request: request_model, response: Response) -> TranslateResponse:  # type: ignore[valid-type]
        settings = replace(options.decoding, beam_size=request.beam_size, n_best=request.n_best)
        decode = DecodeOptions(settings, request.return_attention)
        body = await gateway.translate(request.texts(), decode)
        response.headers[BATCH_SIZE_HEADER] = str(body.pop("batch_size"))
        return TranslateResponse(**body)

    @api.get("/health")
    async def health() -> dict[str, Any]:
        return await gateway.health()

    @api.get("/model", dependencies=secured)
    async def model() -> dict[str, Any]:
        return {**await gateway.info(), "limits": _limits(options)}

    return api


def _limits(options: ServeOptions) -> dict[str, Any]:
    names = ("max_texts", "max_chars", "max_beam_size", "max_batch_size", "batch_wait_ms")
    return {name: getattr(options, name) for name in names} | {
        "beam_size": options.decoding.beam_size
    }


def bind_application(model_dir: str, options: ServeOptions) -> Application:
    """Both deployments with their resources, batching and autoscaling applied."""
    translator = TranslatorDeployment.options(
        autoscaling_config=options.autoscaling_config,
        # Room for a full batch decoding and the next one filling on the same replica.
        max_ongoing_requests=2 * options.max_batch_size,
        ray_actor_options={"num_cpus": options.num_cpus, "num_gpus": options.num_gpus},
    ).bind(model_dir, options)
    return TranslationApi.options(
        num_replicas=options.ingress_replicas,
        max_ongoing_requests=1000,  # the ingress only awaits; the translator applies back-pressure
        ray_actor_options={"num_cpus": 0.1},
    ).bind(translator, options)


def build_app(
    model_path: str | Path, options: ServeOptions | None = None, **flat_options: Any
) -> Application:
    """The Serve application for a model dir or run dir.

    Either `options` whole, or its fields as keywords (`ServeOptions.from_flat`: decoding
    fields such as beam_size go into its `decoding`). A model path is made absolute here,
    because replicas do not run in the caller's working directory; a URI is passed on as
    it is (each replica fetches the model on its own node).
    """
    if options is not None and flat_options:
        raise UserError("give build_app either a ServeOptions or its fields, not both")
    options = options or ServeOptions.from_flat(flat_options)
    return bind_application(find_model_dir(model_path).uri, options)


def app_builder(args: dict[str, Any]) -> Application:
    """Application builder for `serve run` / `serve deploy`: `args` holds `model` and any
    `ServeOptions` fields (as in serve_config.yaml, or `key=value` after the import path)."""
    args = dict(args)
    if "model" not in args:
        raise UserError("serve config args need `model` (a model dir or run dir)")
    model = args.pop("model")
    types = {f.name: f.type for f in (*fields(ServeOptions), *fields(DecodeSettings))}
    # `serve run pipeline.serve.app:app_builder key=value` passes every value as a string.
    converted = {name: _convert(value, types.get(name, "str")) for name, value in args.items()}
    return build_app(model, **converted)


def _convert(value: Any, type_name: str) -> Any:
    if not isinstance(value, str) or type_name.startswith("str"):
        return value
    if type_name.startswith("int"):
        return int(value)
    return float(value)
