"""Rows routed to models: by a language column or by the detected language of each document,
into one target language. A row whose language no model translates gets an error in the
error column; the job goes on and every row still comes out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.bulk.documents import TranslatedDocuments, TranslateSentences, translate_documents
from pipeline.errors import UserError
from pipeline.translate.catalog import ModelCatalog, ModelEntry, RouteError
from pipeline.translate.routing import AUTO, Router


@dataclass(frozen=True)
class RowRouting:
    """How each row chooses its model; plain values, so Ray can ship it to actors."""

    source_column: str | None = None  # the column holding each row's language code
    detect: bool = False  # detect each document's language instead
    target: str | None = None  # None: the one language all the models translate into


@dataclass(frozen=True)
class RowRoute:
    model_id: str | None = None
    error: str | None = None


def plan_routing(
    models: Sequence[ModelEntry],
    source_column: str | None,
    detect: bool,
    target: str | None,
) -> RowRouting | None:
    """Check the routing flags against the models; None when rows need no routing."""
    if source_column and detect:
        raise UserError("give --source-lang-column or --detect-source, not both")
    if not (source_column or detect):
        if len(models) > 1:
            raise UserError(
                f"{len(models)} models: route the rows with --source-lang-column COLUMN "
                "or --detect-source (and --target-lang)"
            )
        if models and target not in (None, models[0].target):
            raise UserError(f"--target-lang {target}: the model translates into {models[0].target}")
        return None
    catalog = ModelCatalog(models)
    targets = catalog.targets()
    if target is None and len(targets) > 1:
        raise UserError(f"give --target-lang: the models translate into {', '.join(targets)}")
    if target is not None and target not in targets:
        raise UserError(f"--target-lang {target}: no model translates into it; targets: {targets}")
    return RowRouting(source_column, detect, target)


def route_rows(
    texts: Sequence[object],
    languages: Sequence[object] | None,
    router: Router | None,
    routing: RowRouting,
) -> list[RowRoute]:
    """Each row's model, or why it has none. Rows without text go to the default model,
    which gives them the usual result (an error for null, "" for an empty text)."""
    if router is None:
        raise ValueError("routed rows need a router over the job's models")
    routes = []
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            routes.append(RowRoute(router.catalog.default.id))
            continue
        source = AUTO if routing.detect else (languages or [None] * len(texts))[index]
        if not isinstance(source, str) or not source:
            routes.append(RowRoute(error=f"no language in column {routing.source_column!r}"))
            continue
        try:
            route = router.route([text], source=source, target=routing.target)
        except RouteError as error:
            routes.append(RowRoute(error=str(error)))
            continue
        routes.append(RowRoute(route.model.id))
    return routes


def translate_routed(
    texts: Sequence[object],
    routes: Sequence[RowRoute],
    translator_for: Callable[[str], TranslateSentences],
    max_chars: int,
    glossaries: Sequence[Mapping[str, str] | None] | None = None,
) -> TranslatedDocuments:
    """Translate each model's rows together; rows without a model keep their error."""
    result = TranslatedDocuments(
        [None] * len(texts), [r.error for r in routes], 0, [None] * len(texts)
    )
    rows_of: dict[str, list[int]] = defaultdict(list)
    for index, route in enumerate(routes):
        if route.model_id is not None:
            rows_of[route.model_id].append(index)
    for model_id, rows in rows_of.items():
        part = translate_documents(
            [texts[i] for i in rows],
            translator_for(model_id),
            max_chars,
            None if glossaries is None else [glossaries[i] for i in rows],
        )
        for row, translation, error, signals in zip(
            rows, part.translations, part.errors, part.signals, strict=True
        ):
            result.translations[row], result.errors[row] = translation, error
            result.signals[row] = signals
        result.sentences += part.sentences
    return result
