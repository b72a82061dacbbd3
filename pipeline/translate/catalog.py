"""The models a service or a job translates with: an id, the languages, where each lives.

Models are named on the command line as `ID=PATH` (repeated), as a bare `PATH` whose id comes
from its `meta.json` (`{src_lang}-{tgt_lang}`, e.g. `de-en`), or as a directory holding one
model dir or run dir per subdirectory (`--models DIR`); a YAML list of `{id, path}` mappings
does the same in config files. Paths may be run dirs and URIs, as everywhere.

A `ModelCatalog` answers "which model?" for a request: by id, or by source and target
language. It only ever looks ids and codes up among its entries, so nothing a request sends
is used as a path.

Plain values and no torch at import time: the command line, the Serve deployments and the
bulk actors share these objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.storage import Location

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

CatalogSpec = str | Path | Mapping[str, Any]  # "ID=PATH", a bare PATH, or {"id": ..., "path": ...}


class RouteError(UserError):
    """A request names a model or language pair that no configured model serves."""


@dataclass(frozen=True)
class ModelEntry:
    """One configured model. `info` is the Translator's `info()`, filled in when the model
    was loaded once to check it (`load_models`)."""

    id: str
    uri: str  # the model dir as `find_model_dir` resolved it: an absolute path or a URI
    source: str | None = None  # language codes from meta.json; None where it names none
    target: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def pair(self) -> str:
        return f"{self.source or '?'}-{self.target or '?'}"

    def describe(self) -> str:
        return self.id if self.id == self.pair else f"{self.id} ({self.pair})"


def split_spec(spec: str) -> tuple[str | None, str]:
    """`"ID=PATH"` -> (ID, PATH); a bare PATH (nothing before an `=` that is an id) ->
    (None, PATH)."""
    head, sep, tail = spec.partition("=")
    if sep and tail and ID_PATTERN.fullmatch(head):
        return head, tail
    return None, spec


def resolve_model(path: str | Path, model_id: str | None = None) -> ModelEntry:
    """The entry of a model dir or run dir (path or URI), or of an ensemble of them (`A+B`:
    the languages and name are the first member's), its languages read from meta.json;
    without `model_id` the id is `{src_lang}-{tgt_lang}` (else meta's name, else the dir's)."""
    # torch stays out of `--help`
    from pipeline.translate.translator import (
        META_FILE,
        find_model_dir,
        model_spec_paths,
        model_spec_uri,
    )

    location = find_model_dir(model_spec_paths(path)[0])
    meta = _read_meta(location / META_FILE)
    source, target = meta.get("src_lang"), meta.get("tgt_lang")
    if model_id is None:
        model_id = f"{source}-{target}" if source and target else _fallback_id(location, meta)
    if not ID_PATTERN.fullmatch(str(model_id)):
        raise UserError(
            f"model id {model_id!r} ({location}) must be letters, digits, '.', '_' or '-' "
            "(at most 64); name it with ID=PATH"
        )
    return ModelEntry(str(model_id), model_spec_uri(path), source, target)


def _fallback_id(location: Location, meta: dict[str, Any]) -> str:
    """meta.json's name, else the run dir's or model dir's name, made a valid id."""
    name = str(meta.get("name") or (location.parent if location.name == "model" else location).name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-._")[:64] or "model"


def resolve_models(
    specs: Iterable[CatalogSpec | ModelEntry] = (), models_dir: str | Path | None = None
) -> list[ModelEntry]:
    """Every model of `specs` and of `models_dir`'s subdirectories, ids checked unique."""
    entries = [_entry_of(spec) for spec in specs]
    if models_dir is not None:
        entries += _models_in(models_dir)
    if not entries:
        raise UserError("no model given: pass --model PATH (or ID=PATH), or --models DIR")
    ModelCatalog(entries)  # checks the ids
    return entries


def load_models(entries: Sequence[ModelEntry]) -> list[ModelEntry]:
    """Load each model once, so a broken one is one clear error before anything serves;
    returns the entries with their `info`."""
    from pipeline.translate.translator import Translator

    loaded = []
    for entry in entries:
        try:
            translator = Translator(entry.uri)
        except Exception as error:  # any failure to load is the model's: name it
            raise UserError(
                f"model {entry.id} ({entry.uri}) cannot be loaded: {_first_line(error)}"
            ) from None
        loaded.append(replace(entry, info=translator.info()))
    return loaded


def _first_line(error: Exception) -> str:
    """One line of an exception (torch's unpickling errors run to a page)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if isinstance(error, UserError) else f"{type(error).__name__}: {text}"


def _entry_of(spec: CatalogSpec | ModelEntry) -> ModelEntry:
    if isinstance(spec, ModelEntry):
        return spec
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"id", "path"})
        if "path" not in spec or unknown:
            raise UserError(f"a model in a list is {{id: ..., path: ...}}, not {dict(spec)}")
        return resolve_model(spec["path"], spec.get("id"))
    model_id, path = split_spec(str(spec))
    return resolve_model(path, model_id)


def _models_in(directory: str | Path) -> list[ModelEntry]:
    from pipeline.translate.translator import find_model_dir

    location = Location.of(directory)
    if not location.is_dir():
        raise UserError(f"--models {location} is not a directory")
    entries = []
    for child in location.children():
        try:
            find_model_dir(child)
        except UserError:
            continue  # not a model: notes, logs, ...
        entries.append(resolve_model(child.uri))
    if not entries:
        raise UserError(f"--models {location} holds no model dir or run dir")
    return entries


def _read_meta(meta_file: Location) -> dict[str, Any]:
    if not meta_file.is_file():
        return {}
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as error:
        raise UserError(f"{meta_file} is not valid JSON: {error}") from None
    return meta if isinstance(meta, dict) else {}


class ModelCatalog:
    """The configured models; the first is the default. Lookups by id or language pair."""

    def __init__(self, entries: Sequence[ModelEntry]) -> None:
        if not entries:
            raise UserError("no models configured")
        self.entries = tuple(entries)
        self.by_id: dict[str, ModelEntry] = {}
        for entry in entries:
            if entry.id in self.by_id:
                raise UserError(
                    f"two models have the id {entry.id!r} ({self.by_id[entry.id].uri} and "
                    f"{entry.uri}); name them apart with ID=PATH"
                )
            self.by_id[entry.id] = entry

    @property
    def default(self) -> ModelEntry:
        return self.entries[0]

    def sources(self) -> list[str]:
        """Languages some model translates from."""
        return sorted({e.source for e in self.entries if e.source})

    def targets(self, source: str | None = None) -> list[str]:
        """Languages some model (from `source`, when given) translates into."""
        return sorted({e.target for e in self.entries if e.target and source in (None, e.source)})

    def languages(self) -> list[str]:
        return sorted(set(self.sources()) | set(self.targets()))

    def pairs(self) -> str:
        return ", ".join(e.describe() for e in self.entries)

    def get(self, model_id: str) -> ModelEntry:
        entry = self.by_id.get(model_id)
        if entry is None:
            raise RouteError(f"unknown model {model_id!r}; models: {self.pairs()}")
        return entry

    def route(
        self, model: str | None = None, source: str | None = None, target: str | None = None
    ) -> ModelEntry:
        """The model for a request: by id, else by the languages given (the first model
        of a pair when two serve it), else the default."""
        if model is not None:
            return self._check_languages(self.get(model), source, target)
        if source is None and target is None:
            return self.default
        self._check_served(source, target)
        matches = [
            e for e in self.entries if source in (None, e.source) and target in (None, e.target)
        ]
        if not matches:
            raise RouteError(f"no model translates {source} to {target}; pairs: {self.pairs()}")
        if len({e.pair for e in matches}) > 1:
            given, missing = ("source", "target") if source else ("target", "source")
            raise RouteError(
                f"several models match {given} {source or target}; give {missing} too "
                f"(pairs: {', '.join(e.pair for e in matches)})"
            )
        return matches[0]

    def _check_served(self, source: str | None, target: str | None) -> None:
        if source is not None and source not in self.sources():
            raise RouteError(
                f"source language {source!r} is not served; served: {', '.join(self.sources())}"
            )
        if target is not None and target not in self.targets():
            raise RouteError(
                f"target language {target!r} is not served; served: {', '.join(self.targets())}"
            )

    @staticmethod
    def _check_languages(entry: ModelEntry, source: str | None, target: str | None) -> ModelEntry:
        for given, own in ((source, entry.source), (target, entry.target)):
            if given is not None and given != own:
                raise RouteError(f"model {entry.id} translates {entry.pair}, not {given}")
        return entry
