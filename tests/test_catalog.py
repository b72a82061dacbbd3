"""The model catalog, the language detector and LibreTranslate's request rules, without Ray:
how models get their ids, how a request finds its model, and the messages when none does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from model_zoo import build_zoo, model_variant

from pipeline.errors import UserError
from pipeline.serve import libretranslate as libre
from pipeline.serve.options import ServeOptions
from pipeline.translate.catalog import (
    ModelCatalog,
    ModelEntry,
    RouteError,
    load_models,
    resolve_models,
    split_spec,
)
from pipeline.translate.language_id import LanguageDetector
from pipeline.translate.routing import Router

CATALOG = ModelCatalog(
    [
        ModelEntry("de-en", "/m/de-en", "de", "en"),
        ModelEntry("en-de", "/m/en-de", "en", "de"),
        ModelEntry("en-zh", "/m/en-zh", "en", "zh"),
    ]
)


@pytest.fixture(scope="module")
def zoo(tiny_model_dir: Path, tmp_path_factory) -> dict[str, Path]:
    return build_zoo(tiny_model_dir, tmp_path_factory.mktemp("zoo"), ("de-en", "zh-en"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("de-en=runs/exp/de-en", ("de-en", "runs/exp/de-en")),
        ("runs/exp/de-en", (None, "runs/exp/de-en")),
        ("s3://bucket/a=b", (None, "s3://bucket/a=b")),  # not an id before the "="
        ("runs/x=y", (None, "runs/x=y")),
    ],
)
def test_split_spec(spec: str, expected: tuple) -> None:
    assert split_spec(spec) == expected


def test_ids_come_from_meta_json_or_are_given(zoo: dict[str, Path], tmp_path: Path) -> None:
    first, second = resolve_models([str(zoo["de-en"]), f"chinese={zoo['zh-en']}"])
    assert (first.id, first.source, first.target, first.uri) == (
        "de-en",
        "de",
        "en",
        str(zoo["de-en"]),
    )
    assert (second.id, second.source, second.target) == ("chinese", "zh", "en")
    run_dir = tmp_path / "my run"  # a run dir holding model/, without languages in meta.json
    shutil.copytree(zoo["de-en"], run_dir / "model")
    (run_dir / "model" / "meta.json").write_text(json.dumps({}))
    (entry,) = resolve_models([str(run_dir)])
    assert (entry.id, entry.source, entry.uri) == ("my-run", None, str(run_dir / "model"))
    mapping = resolve_models([{"id": "x", "path": str(zoo["zh-en"])}])
    assert mapping[0].id == "x"


def test_a_models_dir_holds_one_model_per_subdirectory(zoo: dict[str, Path]) -> None:
    directory = zoo["de-en"].parent
    (directory / "notes").mkdir(exist_ok=True)  # not a model: left out
    assert [e.id for e in resolve_models(models_dir=directory)] == ["de-en", "zh-en"]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([], "no model given"),
        (["a={de}", "a={zh}"], "two models have the id 'a'"),
        (["{de}", "{de}"], "two models have the id 'de-en'"),
        (["bad id!={de}"], "does not exist"),  # not an id: the whole spec is the path
        ([{"path": "{de}", "name": "x"}], "is {id: ..., path: ...}"),
    ],
)
def test_bad_model_lists_are_user_errors(zoo: dict[str, Path], specs: list, message: str) -> None:
    paths = {"de": zoo["de-en"], "zh": zoo["zh-en"]}
    filled = [
        {k: v.format(**paths) for k, v in s.items()} if isinstance(s, dict) else s.format(**paths)
        for s in specs
    ]
    with pytest.raises(UserError, match=message):
        resolve_models(filled)


def test_loading_names_the_model_that_breaks(zoo: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(zoo["zh-en"], broken)
    (broken / "config.json").write_text("{")
    entries = resolve_models([str(zoo["de-en"]), f"zh={broken}"])
    with pytest.raises(
        UserError, match=f"model zh \\({broken}\\) cannot be loaded: Expecting property"
    ):
        load_models(entries)
    (loaded,) = load_models(entries[:1])
    assert loaded.info["src_vocab_size"] > 0 and loaded.info["name"] == "tiny-de-en"


@pytest.mark.parametrize(
    ("request_fields", "model_id"),
    [
        ({}, "de-en"),  # the default
        ({"model": "en-zh"}, "en-zh"),
        ({"source": "de"}, "de-en"),  # one target from de
        ({"source": "en", "target": "zh"}, "en-zh"),
        ({"target": "en"}, "de-en"),  # one source into en
    ],
)
def test_requests_find_their_model(request_fields: dict, model_id: str) -> None:
    assert CATALOG.route(**request_fields).id == model_id


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"source": "en"}, "several models match source en; give target too"),
        ({"source": "fr", "target": "en"}, "source language 'fr' is not served; served: de, en"),
        (
            {"source": "de", "target": "fr"},
            "target language 'fr' is not served; served: de, en, zh",
        ),
        ({"source": "de", "target": "zh"}, "no model translates de to zh; pairs: de-en, en-de"),
        ({"model": "/m/de-en"}, "unknown model '/m/de-en'; models: de-en, en-de, en-zh"),
        ({"model": "de-en", "target": "zh"}, "model de-en translates de-en, not zh"),
    ],
)
def test_requests_no_model_serves_name_what_is_served(request_fields: dict, message: str) -> None:
    with pytest.raises(RouteError, match=message.replace("(", "\\(")):
        CATALOG.route(**request_fields)


def test_detection_chooses_among_the_served_languages() -> None:
    detector = LanguageDetector(["de", "zh", "xx-unknown"])
    assert detector.languages == ["de", "zh"] and detector.unknown == ["xx-unknown"]
    best = detector.detect("Zwei Hunde spielen im Schnee.")
    assert best.language == "de" and 50 < best.confidence <= 100
    assert detector.detect("一只狗在公园里玩！").language == "zh"
    with pytest.raises(RouteError, match="looks like Spanish \\(es\\).*served: de, zh"):
        detector.detect("Hola, ¿cómo estás? Muy bien, gracias por preguntar.")
    with pytest.raises(RouteError, match="knows none of the served source languages"):
        LanguageDetector(["xx-unknown"]).detect("Hallo")
    router = Router(CATALOG)
    route = router.route(["Ein Hund läuft im Park."], source="auto", target="en")
    assert route.model.id == "de-en" and route.detected.language == "de"
    with pytest.raises(RouteError, match="empty text"):
        router.route(["  "], source="auto")


def test_libretranslate_form_bodies_and_shapes() -> None:
    fields = libre.fields_of(b"q=Ein+Hund.&source=de&target=en&alternatives=2", libre.FORM_TYPE)
    request = libre.parse_translate(fields, ServeOptions())
    assert (request.texts, request.batch, request.n_best) == (["Ein Hund."], False, 3)
    results = [{"text": "A dog.", "alternatives": [["A dog.", -1], ["A dog.", -2], ["Dog.", -3]]}]
    body = libre.translate_response(request, results, None)
    assert body == {"translatedText": "A dog.", "alternatives": ["Dog."]}
    with pytest.raises(libre.LibreError, match="not text/plain"):
        libre.fields_of(b"q=x", "text/plain")
    assert libre.api_key_of({"api_key": ""}) is None


def test_an_ensemble_spec_is_one_model_whose_members_every_process_can_find(
    zoo: dict[str, Path], tmp_path: Path
) -> None:
    from pipeline.translate.translator import Translator

    other = model_variant(zoo["de-en"], tmp_path / "other", "de", "en", seed=5)
    spec = f"{zoo['de-en']}+{other}"
    (entry,) = resolve_models([f"pair={spec}"])
    assert (entry.id, entry.source, entry.target) == ("pair", "de", "en")
    members = entry.uri.split("+")
    assert len(members) == 2 and all(Path(member).is_absolute() for member in members)
    served = Translator(entry.uri)  # as a replica or a bulk worker loads it
    assert len(served.model_dirs) == 2
    texts = ["Ein Hund läuft.", "Eine Frau liest."]
    assert [t.text for t in served.translate(texts)] == [
        t.text for t in Translator(spec).translate(texts)
    ]
