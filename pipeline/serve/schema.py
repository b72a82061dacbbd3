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
from pipeline.translate.glossary import check_glossary, constraints_for


class Signals(BaseModel):
    mean_log_prob: float = Field(description="log-probability per predicted piece")
    coverage: float | None = Field(
        description="share of source pieces given at least 0.5 attention in total"
    )
    repetition: bool = Field(description="repeats a word 3-gram more than the source does")
    length_ratio: float = Field(description="output pieces over source pieces")


class Alternative(BaseModel):
    text: str
    score: float
    signals: Signals | None = None


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
    signals: list[Signals] | None = Field(None, description="quality signals per translation")


class ScoreResponse(BaseModel):
    log_probs: list[float] = Field(description="log P(translation + eos | text), per pair")
    mean_log_probs: list[float] = Field(description="the same per predicted piece")
    model: str


def score_request_model(options: ServeOptions) -> type[BaseModel]:
    """The POST /score body: texts and the translations to score, pair by pair."""

    class ScoreRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        text: str | list[str] = Field(description="source texts", examples=["Ein Hund läuft."])
        translation: str | list[str] = Field(
            description="one translation per text", examples=["A dog runs."]
        )
        source: str | None = None
        target: str | None = None
        model: str | None = None

        @field_validator("text")
        @classmethod
        def within_limits(cls, text: str | list[str]) -> str | list[str]:
            check_texts([text] if isinstance(text, str) else text, options, "text")
            return text

        @model_validator(mode="after")
        def paired(self) -> "ScoreRequest":
            if len(self.texts()) != len(self.translations()):
                raise ValueError(
                    f"{len(self.texts())} texts but {len(self.translations())} translations"
                )
            for index, item in enumerate(self.translations()):
                if len(item) > options.max_chars:
                    raise ValueError(f"translation {index} is over {options.max_chars} chars")
            return self

        def texts(self) -> list[str]:
            return [self.text] if isinstance(self.text, str) else self.text

        def translations(self) -> list[str]:
            return [self.translation] if isinstance(self.translation, str) else self.translation

    return ScoreRequest


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
        target_prefix: str | list[str | None] | None = Field(
            None,
            description="where each translation must start: one for all, or one per text",
        )
        glossary: dict[str, str] | None = Field(
            None,
            description="source term -> target term: each translation of a text containing "
            "the source term contains the target term",
        )

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

        @field_validator("glossary")
        @classmethod
        def glossary_terms(cls, glossary: dict[str, str] | None) -> dict[str, str] | None:
            return None if glossary is None else check_glossary(glossary)

        @model_validator(mode="after")
        def prefix_per_text(self) -> "TranslateRequest":
            prefix = self.target_prefix
            if isinstance(prefix, list) and len(prefix) != len(self.texts()):
                raise ValueError(f"{len(prefix)} target prefixes for {len(self.texts())} texts")
            return self

        def texts(self) -> list[str]:
            return [self.text] if isinstance(self.text, str) else self.text

        def prefixes(self) -> list[str | None] | None:
            prefix = self.target_prefix
            return [prefix] * len(self.texts()) if isinstance(prefix, str) else prefix

        def constraints(self) -> list[list[str]] | None:
            if not self.glossary:
                return None
            return [constraints_for(text, self.glossary) for text in self.texts()]

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
