"""`nmt bulk-translate`: a small Parquet store of German and Chinese documents through Ray
Data, checked row for row against the in-process Translator; a killed job resumed; the
same work through the Serve deployment; rows routed among several models by a language
column and by detection.

One Ray instance (2 CPUs) for the module. Every job's fragments hold 4 rows, so a 3-file
store of 30 documents is 9 fragments: enough to kill a job half-way.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from model_zoo import build_zoo

from pipeline.bulk.documents import translate_documents
from pipeline.bulk.job import BulkOptions, JobFailed, bulk_translate
from pipeline.bulk.store import (
    JOB_FILE,
    MANIFEST_FILE,
    TEMP_PREFIX,
    count_outputs,
    find_inputs,
    plan_fragments,
)
from pipeline.cli import main as nmt
from pipeline.corpus.synthetic import parallel_corpus
from pipeline.errors import UserError
from pipeline.translate.glossary import constraints_for
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator

GERMAN = [german for german, _ in parallel_corpus(60, seed=11)]
CHINESE = ["一个男人在跑。", "一只狗在公园里玩！", "孩子们在哪里？", "她说：“好。”", "猫在睡觉。"]
ROWS_PER_FILE = 10
BEAM = 2


def german_document(row: int) -> tuple[str, list[str], list[str]]:
    """A document of 2 paragraphs; returns it, its sentences and the separators between."""
    sentences = GERMAN[2 * row : 2 * row + 3]
    separators = [" ", "\n\n"] if row % 2 else ["\n\n", " "]
    text = sentences[0] + separators[0] + sentences[1] + separators[1] + sentences[2]
    return text, sentences, separators


def chinese_document(row: int) -> tuple[str, list[str], list[str]]:
    sentences = [CHINESE[row % 5], CHINESE[(row + 1) % 5], CHINESE[(row + 3) % 5]]
    return "".join(sentences[:2]) + "\n\n" + sentences[2], sentences, [" ", "\n\n"]


def make_store(directory: Path) -> dict[int, tuple[list[str], list[str]]]:
    """3 files of 10 rows (2 row groups each); returns {id: (sentences, separators)} for the
    rows that should translate. Row 3 is null, row 4 empty, row 5 too long."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = {}
    for file_index in range(3):
        ids, texts = [], []
        for row in range(file_index * ROWS_PER_FILE, (file_index + 1) * ROWS_PER_FILE):
            build = chinese_document if file_index == 2 else german_document
            text, sentences, separators = build(row)
            expected[row] = (sentences, separators)
            ids.append(row)
            texts.append(text)
        texts[3], texts[4], texts[5] = None, "", "Ein Hund läuft. " * 40
        for row in (3, 4, 5):
            expected.pop(file_index * ROWS_PER_FILE + row)
        table = pa.table({"doc_id": ids, "body": texts, "source": [f"file{file_index}"] * 10})
        pq.write_table(table, directory / f"part-{file_index}.parquet", row_group_size=6)
    return expected


def options(**changes) -> BulkOptions:
    """The tests' job options; decoding fields among `changes` go into its DecodeSettings."""
    decoding_names = {f.name for f in fields(DecodeSettings)}
    decoding = {"beam_size": BEAM} | {k: v for k, v in changes.items() if k in decoding_names}
    defaults = dict(
        text_column="body",
        id_column="doc_id",
        rows_per_fragment=4,
        max_chars=300,
        workers=2,
        show_progress=False,
    )
    others = {k: v for k, v in changes.items() if k not in decoding_names}
    return BulkOptions(decoding=DecodeSettings(**decoding), **{**defaults, **others})


def read_output(directory: Path) -> pa.Table:
    return pads.dataset(directory, format="parquet").to_table()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never another's cluster
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, dict]:
    directory = tmp_path_factory.mktemp("store")
    return directory, make_store(directory)


@pytest.fixture(scope="module")
def finished_job(ray_cluster, store, tiny_model_dir, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted job: its output dir and manifest."""
    output = tmp_path_factory.mktemp("out") / "complete"
    manifest = bulk_translate(str(tiny_model_dir), str(store[0]), str(output), options())
    return output, manifest


def test_every_row_comes_out_once_translated_in_sentence_order(finished_job, store, tiny_model_dir):
    output, manifest = finished_job
    table = read_output(output)
    assert table.column_names == ["doc_id", "body", "source", "translation", "error"]
    assert table["doc_id"].to_pylist() == list(range(30)), "every id once, in input order"
    translator = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=BEAM))
    rows = {row["doc_id"]: row for row in table.to_pylist()}
    for doc_id, (sentences, separators) in store[1].items():
        translated = [t.text for t in translator.translate(sentences)]
        # separators in the target's layout: within a line, a space after English
        expected = translated[0] + separators[0] + translated[1] + separators[1] + translated[2]
        assert rows[doc_id]["translation"] == expected, f"document {doc_id}"
        assert rows[doc_id]["error"] is None
    assert any(rows[i]["translation"].startswith("A ") for i in range(3)), "real translations"
    assert manifest["sentences"] == 3 * len(store[1]), "Chinese split at 。！？ too"
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_with_errors"]) == (30, 30, 6)


def test_bad_rows_get_an_error_and_empty_text_an_empty_translation(finished_job):
    rows = {row["doc_id"]: row for row in read_output(finished_job[0]).to_pylist()}
    for first in (0, 10, 20):
        assert rows[first + 3]["translation"] is None
        assert rows[first + 3]["error"] == "text is null"
        assert (rows[first + 4]["translation"], rows[first + 4]["error"]) == ("", None)
        assert rows[first + 5]["translation"] is None
        assert "more than --max-chars 300" in rows[first + 5]["error"]


def test_manifest_is_written_last_and_no_temporary_file_is_left(finished_job):
    output, manifest = finished_job
    assert json.loads((output / MANIFEST_FILE).read_text()) == manifest
    names = sorted(p.name for p in output.iterdir())
    assert not [n for n in names if n.startswith(TEMP_PREFIX)]
    assert len([n for n in names if n.endswith(".parquet")]) == manifest["fragments"] == 9


def test_killed_job_resumes_to_the_same_output_without_duplicates(
    finished_job, store, tiny_model_dir, tmp_path, monkeypatch
):
    output = tmp_path / "killed"
    monkeypatch.setenv("_NMT_BULK_FAIL_FROM_FRAGMENT", "4")
    with pytest.raises(JobFailed, match="rerun with --resume") as failure:
        bulk_translate(str(tiny_model_dir), str(store[0]), str(output), options())
    assert "injected failure before renaming" in str(failure.value.__cause__)
    monkeypatch.delenv("_NMT_BULK_FAIL_FROM_FRAGMENT")
    assert not (output / MANIFEST_FILE).exists()
    kept = {p.name: p.stat().st_mtime_ns for p in output.glob("*.parquet")}
    assert 0 < len(kept) <= 4, "fragments 4..8 never got their final name"
    assert list(output.glob(f"{TEMP_PREFIX}*")), "the failed writer left its temp file"

    manifest = bulk_translate(str(tiny_model_dir), str(store[0]), str(output), options(resume=True))
    assert manifest["fragments_translated"] == 9 - len(kept)
    assert {
        p.name: p.stat().st_mtime_ns for p in output.glob("*.parquet") if p.name in kept
    } == kept
    assert not list(output.glob(f"{TEMP_PREFIX}*"))
    assert read_output(output).equals(read_output(finished_job[0]))


def test_output_of_a_finished_or_other_job_needs_resume_with_the_same_settings(
    finished_job, store, tiny_model_dir, tmp_path
):
    output = tmp_path / "copy"
    shutil.copytree(finished_job[0], output)
    with pytest.raises(UserError, match="already holds .* pass --resume"):
        bulk_translate(str(tiny_model_dir), str(store[0]), str(output), options())
    with pytest.raises(UserError, match="another job's results \\(beam_size differ\\)"):
        bulk_translate(
            str(tiny_model_dir), str(store[0]), str(output), options(resume=True, beam_size=3)
        )
    manifest = bulk_translate(str(tiny_model_dir), str(store[0]), str(output), options(resume=True))
    assert manifest["fragments_translated"] == 0 and manifest["rows_out"] == 30
    # A job file from before --beam-prune and --precision existed: that job ran the exact
    # beam in fp32, so it resumes with those settings and not with the pruned default.
    job = json.loads((output / JOB_FILE).read_text())
    del job["beam_prune"], job["precision"]
    (output / JOB_FILE).write_text(json.dumps(job))
    with pytest.raises(UserError, match="\\(beam_prune differ\\)"):
        bulk_translate(str(tiny_model_dir), str(store[0]), str(output), options(resume=True))
    older_job = options(resume=True, beam_prune=0.0, precision="fp32")
    assert (
        bulk_translate(str(tiny_model_dir), str(store[0]), str(output), older_job)["rows_out"] == 30
    )
    (output / JOB_FILE).unlink()
    with pytest.raises(UserError, match="not written by nmt bulk-translate"):
        bulk_translate(str(tiny_model_dir), str(store[0]), str(output), options(resume=True))


def test_missing_or_duplicated_rows_are_reported(finished_job, store, tmp_path):
    output = tmp_path / "damaged"
    shutil.copytree(finished_job[0], output)
    fragments = plan_fragments(find_inputs(str(store[0])), rows_per_fragment=4)
    (output / fragments[0].output_name).unlink()
    second = output / fragments[1].output_name
    table = pq.read_table(second)
    pq.write_table(
        pa.concat_tables([table.slice(0, 1), table.slice(0, table.num_rows - 1)]), second
    )
    counts, problems = count_outputs(fragments, output, "error", "doc_id")
    assert counts.rows_in == 30 and counts.rows_out == 26
    assert len(problems) == 1 and "10 rows in, 6 out (1 fragments missing)" in problems[0]
    (output / fragments[0].output_name).write_bytes(
        (finished_job[0] / fragments[0].output_name).read_bytes()
    )
    _, problems = count_outputs(fragments, output, "error", "doc_id")
    assert problems == [
        f"{fragments[0].path}: the 'doc_id' values of the outputs differ from the input: "
        "1 missing, 1 extra"
    ]


def test_documents_failing_to_translate_get_errors_and_the_rest_translate():
    def translate(sentences: list[str]) -> list[str]:
        if "kaputt." in sentences:
            raise RuntimeError("decoder failed")
        return [s.upper() for s in sentences]

    texts = ["Eins. Zwei.\n\nDrei!", "kaputt.", 7, "", "  Vier?  "]
    result = translate_documents(texts, translate, max_chars=100)
    assert result.translations == ["EINS. ZWEI.\n\nDREI!", None, None, "", "  VIER?  "]
    assert result.errors[1] == "translation failed: RuntimeError: decoder failed"
    assert result.errors[2] == "text is not a string but int"
    assert [e is None for e in result.errors] == [True, False, False, True, True]
    assert result.sentences == 4


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--text-column", "text"], "has no column 'text' \\(--text-column\\)"),
        (["--text-column", "body", "--id-column", "id"], "has no column 'id' \\(--id-column\\)"),
        (["--text-column", "body", "--target-column", "source"], "already has a column 'source'"),
        (["--text-column", "body", "--beam-size", "0"], "--beam-size must be at least 1"),
        (["--text-column", "body", "--beam-prune", "-1"], "--beam-prune must be 0"),
    ],
)
def test_cli_rejects_bad_columns_and_options(
    store, tiny_model_dir, tmp_path, capsys, arguments, message
):
    common = [
        "bulk-translate",
        "--model",
        str(tiny_model_dir),
        "--input",
        str(store[0] / "*.parquet"),
    ]
    assert nmt([*common, "--output", str(tmp_path / "out"), *arguments]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists(), "nothing written before the input is checked"


def test_cli_input_matching_nothing_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    arguments = ["--input", str(tmp_path / "*.parquet"), "--output", str(tmp_path / "out")]
    code = nmt(["bulk-translate", "--model", str(tiny_model_dir), "--text-column", "t", *arguments])
    assert code == 2
    assert "matches no files" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_via_serve_gives_the_same_translations(
    finished_job, store, routed, tiny_model_dir, tmp_path
):
    from ray import serve

    from pipeline.serve import APP_NAME, build_app

    with pytest.raises(UserError, match="no Serve application 'nmt'"):
        bulk_translate(None, str(store[0]), str(tmp_path / "none"), options(via_serve=True))
    routed_store, rows, zoo = routed
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    try:  # the tiny model (id de-en, the default) and zh-en, multiplexed
        models = [str(tiny_model_dir), str(zoo["zh-en"])]
        app = build_app(models, num_cpus=0.25, min_replicas=1, max_replicas=1)
        serve.run(app, name=APP_NAME, route_prefix="/bulk-test")
        output = tmp_path / "served"
        manifest = bulk_translate(None, str(store[0]), str(output), options(via_serve=True))
        by_language = options(via_serve=True, source_lang_column="lang")
        bulk_translate(None, str(routed_store), str(tmp_path / "routed"), by_language)
    finally:
        serve.shutdown()
    assert manifest["rows_out"] == 30 and manifest["job"]["model"] == "serve:nmt"
    served, local = read_output(output), read_output(finished_job[0])
    assert served.equals(local), "unrouted rows go to the deployment's default model"
    languages = [lang for _, lang in rows]
    languages[8], languages[9] = "source language 'fr' is not served", "no language in column"
    check_routed_output(tmp_path / "routed", expected_rows(rows, zoo, languages))


# -- several models, rows routed by language -------------------------------------------------
FRENCH = "Le chat dort sur le canapé pendant que les enfants jouent dehors."
ROUTED_MODELS = ("de-en", "zh-en")


def make_routed_store(directory: Path) -> list[tuple[str | None, str | None]]:
    """One file of 12 one-sentence documents with a `lang` column: German, Chinese, French,
    German without a language, a null text and an empty one. Returns (text, lang) by row."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [(text, "de") for text in GERMAN[40:45]] + [(text, "zh") for text in CHINESE[:3]]
    rows += [(FRENCH, "fr"), (GERMAN[50], None), (None, "de"), ("", "zh")]
    table = pa.table(
        {
            "doc_id": list(range(len(rows))),
            "body": [t for t, _ in rows],
            "lang": [g for _, g in rows],
        }
    )
    pq.write_table(table, directory / "mixed.parquet")
    return rows


@pytest.fixture(scope="module")
def routed(tiny_model_dir, tmp_path_factory) -> tuple[Path, list, dict[str, Path]]:
    """The routed store, its rows, and the de-en and zh-en models (tests/model_zoo.py)."""
    store = tmp_path_factory.mktemp("routed")
    zoo = build_zoo(tiny_model_dir, tmp_path_factory.mktemp("zoo"), ROUTED_MODELS)
    return store, make_routed_store(store), zoo


def expected_rows(rows: list, zoo: dict[str, Path], languages: list) -> list[tuple]:
    """(translation, error) per row, from each model's own Translator; `languages` is the
    language each row should be routed by (None: its text decides the outcome alone)."""
    translators = {
        model_id: Translator(path, settings=DecodeSettings(beam_size=BEAM))
        for model_id, path in zoo.items()
    }
    expected = []
    for (text, _), language in zip(rows, languages, strict=True):
        if text is None:
            expected.append((None, "text is null"))
        elif not text:
            expected.append(("", None))
        elif language in ("de", "zh"):
            translation = translators[f"{language}-en"].translate([text])[0].text
            expected.append((translation, None))
        else:
            expected.append((None, language))  # an error message that names the language
    return expected


def check_routed_output(output: Path, expected: list[tuple]) -> None:
    rows = read_output(output).to_pylist()
    assert [row["doc_id"] for row in rows] == list(range(len(expected))), "every row once"
    for row, (translation, error) in zip(rows, expected, strict=True):
        if translation is None and error not in (None, "text is null"):
            assert row["translation"] is None and error in row["error"], row
        else:
            assert (row["translation"], row["error"]) == (translation, error), row


def test_rows_are_routed_to_the_model_of_their_language_column(ray_cluster, routed, tmp_path):
    store, rows, zoo = routed
    models = [f"de-en={zoo['de-en']}", str(zoo["zh-en"])]  # ID=PATH and a bare path
    routing = {"source_lang_column": "lang", "target_lang": "en"}
    manifest = bulk_translate(models, str(store), str(tmp_path / "out"), options(**routing))
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_with_errors"]) == (12, 12, 3)
    assert manifest["job"]["model"] == {m: str(zoo[m]) for m in ROUTED_MODELS}
    languages = [lang for _, lang in rows]
    languages[8] = "source language 'fr' is not served; served: de, zh"
    languages[9] = "no language in column 'lang'"
    check_routed_output(tmp_path / "out", expected_rows(rows, zoo, languages))


def test_rows_are_routed_by_their_detected_language(ray_cluster, routed, tmp_path):
    store, rows, zoo = routed
    models = [str(zoo[m]) for m in ROUTED_MODELS]
    manifest = bulk_translate(
        models, str(store), str(tmp_path / "out"), options(detect_source=True)
    )
    assert (manifest["rows_out"], manifest["rows_with_errors"]) == (12, 2)
    languages = [lang for _, lang in rows]
    languages[8] = "looks like French (fr), which no model translates from; served: de, zh"
    languages[9] = "de"  # no language in the column, but its text is German
    check_routed_output(tmp_path / "out", expected_rows(rows, zoo, languages))
    with pytest.raises(UserError, match="another job's results \\(.*model.*differ\\)"):
        bulk_translate(models[:1], str(store), str(tmp_path / "out"), options(resume=True))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "2 models: route the rows with --source-lang-column COLUMN or --detect-source"),
        (["--detect-source", "--source-lang-column", "lang"], "not both"),
        (["--detect-source", "--target-lang", "fr"], "--target-lang fr: no model translates"),
        (["--source-lang-column", "language"], "has no column 'language' \\(--source-lang"),
    ],
)
def test_cli_rejects_bad_routing(routed, tmp_path, capsys, arguments, message):
    store, _, zoo = routed
    models = [argument for m in ROUTED_MODELS for argument in ("--model", str(zoo[m]))]
    common = ["bulk-translate", *models, "--input", str(store), "--text-column", "body"]
    assert nmt([*common, "--output", str(tmp_path / "out"), *arguments]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_a_job_file_from_before_routing_resumes(finished_job, store, tiny_model_dir, tmp_path):
    output = tmp_path / "old"
    shutil.copytree(finished_job[0], output)
    job = json.loads((output / JOB_FILE).read_text())
    assert job["model"] == str(tiny_model_dir), "one model: recorded by its dir, as before"
    for key in ("source_lang_column", "detect_source", "target_lang"):
        del job[key]
    (output / JOB_FILE).write_text(json.dumps(job))
    manifest = bulk_translate(str(tiny_model_dir), str(store[0]), str(output), options(resume=True))
    assert manifest["rows_out"] == 30 and manifest["fragments_translated"] == 0


# -- bad stores: error cells or one clear line, never a traceback, never rows lost ----------
def write_bad_rows_store(directory: Path) -> None:
    """A good file, a file whose text column holds integers, one of lists of strings, one
    with an over-long document, and an empty file."""
    directory.mkdir()
    tables = {
        "good": pa.table({"doc_id": [0, 1], "body": GERMAN[:2]}),
        "numbers": pa.table({"doc_id": [2, 3], "body": [7, 8]}),
        "lists": pa.table({"doc_id": [4, 5], "body": [[GERMAN[2]], [GERMAN[3], GERMAN[4]]]}),
        "long": pa.table({"doc_id": [6], "body": ["Ein Hund läuft. " * 40]}),
        "empty": pa.table({"doc_id": pa.array([], pa.int64()), "body": pa.array([], pa.string())}),
    }
    for name, table in tables.items():
        pq.write_table(table, directory / f"{name}.parquet")


def test_bad_rows_get_error_cells_and_every_row_comes_out(ray_cluster, tiny_model_dir, tmp_path):
    write_bad_rows_store(tmp_path / "store")
    output = tmp_path / "out"
    manifest = bulk_translate(str(tiny_model_dir), str(tmp_path / "store"), str(output), options())
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_with_errors"]) == (7, 7, 5)
    # one file at a time: the body column's type differs between them
    rows = {row["doc_id"]: row for part in output.glob("*.parquet") for row in read_rows(part)}
    assert sorted(rows) == list(range(7))
    assert all(rows[i]["translation"] and rows[i]["error"] is None for i in (0, 1))
    assert [rows[i]["error"] for i in (2, 3)] == ["text is not a string but int"] * 2
    assert [rows[i]["error"] for i in (4, 5)] == ["text is not a string but list"] * 2
    assert "more than --max-chars 300" in rows[6]["error"]


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def corrupt_data_pages(path: Path) -> None:
    """Zeros over the first data page, the footer left whole: the file plans, then fails to
    read."""
    data = bytearray(path.read_bytes())
    data[4:200] = bytes(196)
    path.write_bytes(bytes(data))


def test_an_unreadable_file_is_one_clear_error_and_keeps_the_rest(
    ray_cluster, tiny_model_dir, tmp_path, capsys
):
    store = tmp_path / "store"
    write_bad_rows_store(store)
    (store / "empty.parquet").unlink()
    corrupt_data_pages(store / "numbers.parquet")
    output = tmp_path / "out"
    argv = ["bulk-translate", "--model", str(tiny_model_dir), "--input", str(store)]
    argv += ["--output", str(output), "--text-column", "body", "--beam-size", "2"]
    assert nmt([*argv, "--workers", "1", "--max-chars", "300"]) == 2
    stderr = capsys.readouterr().err
    error = stderr.strip().splitlines()[-1]  # after the progress bar
    assert error.startswith("nmt bulk-translate: error: cannot read ")
    assert "Traceback" not in stderr
    assert "numbers.parquet (row group 0)" in error
    assert not (output / MANIFEST_FILE).exists()
    assert len(list(output.glob("*.parquet"))) == 3, "the readable files' fragments are kept"
    # with ids the file is read before anything is translated, with the same kind of line
    assert nmt([*argv, "--output", str(tmp_path / "ids"), "--id-column", "doc_id"]) == 2
    error = capsys.readouterr().err.strip()
    assert "cannot read column 'doc_id' of" in error and "numbers.parquet" in error
    assert "\n" not in error and not (tmp_path / "ids").exists()


def test_a_file_that_is_not_parquet_is_refused_before_anything_is_written(
    tiny_model_dir, tmp_path, capsys
):
    store = tmp_path / "store"
    write_bad_rows_store(store)
    (store / "notes.parquet").write_text("doc_id,body\n9,Ein Hund.\n")
    argv = ["bulk-translate", "--model", str(tiny_model_dir), "--input", str(store)]
    assert nmt([*argv, "--output", str(tmp_path / "out"), "--text-column", "body"]) == 2
    error = capsys.readouterr().err.strip()
    assert "notes.parquet is not a readable Parquet file" in error and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_duplicate_ids_are_refused_with_a_count_before_anything_is_written(
    tiny_model_dir, tmp_path, capsys
):
    store = tmp_path / "store"
    store.mkdir()
    pq.write_table(pa.table({"doc_id": [1, 2, 2, 3], "body": GERMAN[:4]}), store / "a.parquet")
    pq.write_table(pa.table({"doc_id": [3, 3, 4], "body": GERMAN[4:7]}), store / "b.parquet")
    argv = ["bulk-translate", "--model", str(tiny_model_dir), "--input", str(store)]
    argv += ["--output", str(tmp_path / "out"), "--text-column", "body", "--id-column", "doc_id"]
    assert nmt(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "--id-column 'doc_id': 2 ids appear more than once in the input" in error
    assert "(3 rows more than ids), e.g. 2, 3" in error and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_glossary_column_signals_and_scoring(ray_cluster, tiny_model_dir, tmp_path):
    """Issue 22 in bulk: per-row glossaries (a bad one is an error cell), the quality-signal
    columns, and a scoring job equal to the Translator's scores."""
    texts = GERMAN[:5]
    word = texts[0].split()[1]
    glossaries = [[(word, "water")], None, [("Hund", " ")], [(word, "water")], []]
    kind = pa.map_(pa.string(), pa.string())
    references = [english for _, english in parallel_corpus(60, seed=11)][:5]
    table = pa.table({"body": texts, "terms": pa.array(glossaries, kind), "reference": references})
    (tmp_path / "store").mkdir()
    pq.write_table(table, tmp_path / "store" / "part.parquet")
    store = str(tmp_path / "store")
    settings = {"id_column": None, "workers": 1}
    # `signals` is a job option (the columns) and a decoding field: the job sets the latter
    options_ = replace(options(glossary_column="terms", **settings), signals=True)
    bulk_translate(str(tiny_model_dir), store, str(tmp_path / "out"), options_)
    out = read_output(tmp_path / "out").to_pydict()
    translator = Translator(tiny_model_dir, settings=options_.decoding)
    constraints = [
        constraints_for(text, dict(terms)) if terms and row != 2 else []
        for row, (text, terms) in enumerate(zip(texts, glossaries, strict=True))
    ]
    expected = translator.translate(texts, constraints=constraints)
    for row in (0, 1, 3, 4):
        assert out["translation"][row] == expected[row].text and out["error"][row] is None
        assert out["coverage"][row] == pytest.approx(expected[row].signals.coverage)
    assert "water" in out["translation"][0]
    assert out["translation"][2] is None and "terms: empty term" in out["error"][2]
    scoring = options(score_column="reference", **settings)
    bulk_translate(str(tiny_model_dir), store, str(tmp_path / "scored"), scoring)
    scored = read_output(tmp_path / "scored").to_pydict()
    assert "translation" not in scored
    assert scored["log_prob"] == pytest.approx(
        [s.log_prob for s in translator.score(texts, references)], abs=1e-4
    )
    with pytest.raises(UserError, match="need the job's own models: drop --via-serve"):
        options(score_column="reference", via_serve=True)
