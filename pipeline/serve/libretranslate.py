"""LibreTranslate's HTTP API, as its clients (libretranslatepy, browser and editor plug-ins)
use it: request parsing, checks and the response shapes.

`POST /translate` and `POST /detect` take a JSON body or a form-encoded one
(`application/x-www-form-urlencoded`): `q` (a string, or a list of strings in JSON),
`source` (a code or "auto"), `target`, `format` ("text"), `alternatives` (a count) and
`api_key`. Answers are LibreTranslate's: `{"translatedText", "alternatives",
"detectedLanguage"}` (lists when `q` is a list), and `{"error": "..."}` with a 4xx.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from pipeline.serve.options import ServeOptions
from pipeline.serve.schema import check_texts
from pipeline.translate.catalog import ModelCatalog
from pipeline.translate.language_id import Detection, language_name

FORMATS = ("text", "html")
FORM_TYPE = "application/x-www-form-urlencoded"


class LibreError(ValueError):
    """A bad LibreTranslate request: answered 400 with {"error": message}."""


@dataclass(frozen=True)
class LibreRequest:
    texts: list[str]
    batch: bool  # q was a list: the answer's fields are lists too
    source: str
    target: str
    alternatives: int

    @property
    def n_best(self) -> int:
        return self.alternatives + 1


def is_libre_body(body: Any) -> bool:
    """LibreTranslate's requests: a form body (not JSON), or a JSON object with `q`."""
    return isinstance(body, bytes) or (isinstance(body, dict) and "q" in body)


def fields_of(body: Any, content_type: str | None) -> dict[str, Any]:
    """The request's fields from a parsed JSON object or a raw form body."""
    if isinstance(body, dict):
        return body
    if not isinstance(body, bytes):
        raise LibreError("Invalid request: send a JSON object or a form-encoded body")
    if (content_type or "").split(";")[0].strip().lower() != FORM_TYPE:
        raise LibreError(f"Invalid request: send JSON or {FORM_TYPE}, not {content_type}")
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise LibreError("Invalid request: the form body is not UTF-8") from None
    return {name: values[0] for name, values in form.items()}


def parse_translate(fields: Mapping[str, Any], options: ServeOptions) -> LibreRequest:
    """Check a /translate request's fields against LibreTranslate's rules and our limits."""
    q = fields.get("q")
    if q is None or q == "" or q == []:
        raise LibreError("Invalid request: missing q parameter")
    batch = isinstance(q, list)
    texts = q if batch else [q]
    if not all(isinstance(text, str) for text in texts):
        raise LibreError("Invalid request: q must be a string or a list of strings")
    try:
        check_texts(texts, options, "q")
    except ValueError as error:
        raise LibreError(f"Invalid request: {error}") from None
    source, target = (_required_code(fields, name) for name in ("source", "target"))
    text_format = fields.get("format") or "text"
    if text_format == "html":
        raise LibreError("html format is not supported yet; send format=text")
    if text_format not in FORMATS:
        raise LibreError(f"{text_format} format is not supported")
    return LibreRequest(texts, batch, source, target, _alternatives(fields, options))


def parse_detect(fields: Mapping[str, Any], options: ServeOptions) -> str:
    """The text of a /detect request."""
    q = fields.get("q")
    if not isinstance(q, str) or not q.strip():
        raise LibreError("Invalid request: missing q parameter")
    if len(q) > options.max_chars:
        raise LibreError(
            f"Invalid request: q has {len(q)} characters; at most {options.max_chars} (max_chars)"
        )
    return q


def api_key_of(fields: Mapping[str, Any]) -> str | None:
    """LibreTranslate clients send the key in the body."""
    key = fields.get("api_key")
    return key if isinstance(key, str) and key else None


def _required_code(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise LibreError(f"Invalid request: missing {name} parameter")
    if not isinstance(value, str):
        raise LibreError(f"Invalid request: {name} must be a language code")
    return value


def _alternatives(fields: Mapping[str, Any], options: ServeOptions) -> int:
    value = fields.get("alternatives", 0)
    if isinstance(value, bool):  # JSON true is not a count
        raise LibreError("Invalid request: alternatives parameter is not a number")
    try:
        count = max(0, int(value))
    except (TypeError, ValueError):
        raise LibreError("Invalid request: alternatives parameter is not a number") from None
    if count + 1 > options.max_beam_size:
        raise LibreError(
            f"Invalid request: alternatives parameter must be <= {options.max_beam_size - 1}"
        )
    return count


def translate_response(
    request: LibreRequest, results: list[dict[str, Any]], detected: Detection | None
) -> dict[str, Any]:
    """LibreTranslate's answer: lists per text when q was a list, single values otherwise."""
    texts = [r["text"] for r in results]
    alternatives = [_other_texts(r) for r in results]
    body: dict[str, Any] = {"translatedText": texts if request.batch else texts[0]}
    if request.alternatives > 0:
        body["alternatives"] = alternatives if request.batch else alternatives[0]
    if detected is not None:
        found = detection_body(detected)
        body["detectedLanguage"] = [found] * len(texts) if request.batch else found
    return body


def _other_texts(result: Mapping[str, Any]) -> list[str]:
    """The n-best texts after the best, without repeats (different pieces can read alike)."""
    seen, others = {result["text"]}, []
    for text, _ in result.get("alternatives", [])[1:]:
        if text not in seen:
            seen.add(text)
            others.append(text)
    return others


def detection_body(detection: Detection) -> dict[str, Any]:
    return {"confidence": detection.confidence, "language": detection.language}


def languages_body(catalog: ModelCatalog) -> list[dict[str, Any]]:
    """GET /languages: every served language with the targets it translates into."""
    return [
        {"code": code, "name": language_name(code), "targets": catalog.targets(code)}
        for code in catalog.languages()
    ]
