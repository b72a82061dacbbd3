"""The request and response bodies of our own HTTP API (`POST /translate` with `text`), and
its 422s: one line naming the field and the limit.

This module deliberately has no `from __future__ import annotations`: the request model is
built at replica start (limits are options), and FastAPI and pydantic must see real classes.
"""

from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.serve.options import ServeOptions


class Alternative(BaseModel):
    text: str
    score: float


class AttentionMatrix(BaseModel):
    source_pieces: list[str]
    target_pieces: list[str]
    weights: list[list[float]] = Field(description="[target piece][source piece]")


class DetectedLanguage(BaseModel):
    language: str
    confidence: float = Field(description="0 to 100")


class TranslateResponse(BaseModel):
    translations: list[str] = Field(description="best translation per text, in request order")
    scores: list[float] = Field(description="log-probability over the GNMT length penalty")
    model: str = Field(description="the id of the model that translated")
    alternatives: list[list[Alternative]] | None = Field(None, description="when n_best > 1")
    attention: list[AttentionMatrix] | None = Field(None, description="when return_attention")
    detected_language: DetectedLanguage | None = Field(None, description="with source 'auto'")


def translate_request_model(options: ServeOptions) -> type[BaseModel]:
    """The POST /translate body, with this deployment's limits (shown in /docs)."""

    class TranslateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        text: str | list[str] = Field(
            description=f"one text or a list of 1 to {options.max_texts} texts, "
            f"each at most {options.max_chars} characters",
            examples=["Ein Mann fährt Fahrrad."],
        )
        source: str | None = Field(
            None, description="source language code, or 'auto' to detect it (see /languages)"
        )
        target: str | None = Field(None, description="target language code")
        model: str | None = Field(None, description="a model id from /models (instead of a pair)")
        beam_size: int = Field(options.decoding.beam_size, ge=1, le=options.max_beam_size)
        n_best: int = Field(1, ge=1, le=options.max_beam_size, description="<= beam_size")
        return_attention: bool = False
        sample: bool = Field(options.decoding.sample, description="sample instead of beam search")
        temperature: float = Field(options.decoding.temperature, ge=0, le=100)
        top_k: int = Field(options.decoding.top_k, ge=0, description="0: all tokens")
        top_p: float = Field(options.decoding.top_p, gt=0, le=1)
        seed: int | None = Field(
            options.decoding.seed, ge=0, description="the same seed gives the same samples"
        )
        no_repeat_ngram: int = Field(options.decoding.no_repeat_ngram, ge=0, le=100)

        @field_validator("text")
        @classmethod
        def within_limits(cls, text: str | list[str]) -> str | list[str]:
            check_texts([text] if isinstance(text, str) else text, options, "text")
            return text

        @model_validator(mode="after")
        def n_best_within_beam(self) -> "TranslateRequest":
            if self.n_best > self.beam_size and not self.sample:
                raise ValueError(f"n_best ({self.n_best}) exceeds beam_size ({self.beam_size})")
            return self

        def texts(self) -> list[str]:
            return [self.text] if isinstance(self.text, str) else self.text

    return TranslateRequest


def check_texts(texts: list[str], options: ServeOptions, name: str) -> None:
    """ValueError naming the first text that is empty or over a limit (both APIs)."""
    if not texts:
        raise ValueError(f"the {name} list is empty; send at least one text")
    if len(texts) > options.max_texts:
        raise ValueError(f"{len(texts)} texts; at most {options.max_texts} per request (max_texts)")
    for index, item in enumerate(texts):
        if not item.strip():
            raise ValueError(f"{name} {index} is empty; send text to translate")
        if len(item) > options.max_chars:
            raise ValueError(
                f"{name} {index} has {len(item)} characters; "
                f"at most {options.max_chars} per text (max_chars)"
            )


def parse_request(model: type[BaseModel], body: Any) -> BaseModel:
    """`body` (already parsed JSON) as the request model; a 422 like FastAPI's otherwise."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        details = [{**e, "loc": ("body", *e["loc"])} for e in error.errors()]
        raise RequestValidationError(details) from None


async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
    """422 with a one-line `error` naming the field and the limit, plus FastAPI's details."""
    summary = "; ".join(f"{_field_name(e['loc'])}: {e['msg']}" for e in error.errors())
    details = jsonable_encoder(error.errors(), custom_encoder={ValueError: str})
    return JSONResponse(status_code=422, content={"error": summary, "detail": details})


def _field_name(location: tuple) -> str:
    # ("body", "text", "list[str]") -> "text.list[str]"; errors about the whole body -> "request"
    return ".".join(p for p in location[1:] if isinstance(p, str)) or "request"
