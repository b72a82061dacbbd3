"""Remote storage: corpora, prepared datasets, run dirs, models and document stores on S3 (a
local moto server, reached over HTTP like a cloud store, from the driver and Ray's workers).

`nmt prepare`, `nmt train`, the Translator and `nmt bulk-translate` work from URIs as from
local paths: same token ids, a resumed run, the same translations, a killed bulk job resumed
on the object store."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import ray
from s3_store import s3_environment
from test_bulk import GERMAN, make_store, options
from test_prepare import read_split, write_pair

from models.model_dir import load_model
from pipeline import storage
from pipeline.bulk.job import JobFailed, bulk_translate
from pipeline.bulk.store import MANIFEST_FILE, TEMP_PREFIX
from pipeline.corpus.synthetic import parallel_corpus
from pipeline.errors import UserError
from pipeline.prepare.preparation import is_prepared, prepare_corpus
from pipeline.storage import Location, glob_files, local_copy
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train_model
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator

# A few steps in one torch thread: threads spin-waiting on each other on a busy 2-core
# machine cost more than the tiny model's matmuls gain.
TINY = TrainConfig.from_yaml(
    Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
).override(valid_every=2, log_every=2, threads_per_worker=1)
OPTIONS = {"src_lang": "de", "tgt_lang": "en", "vocab_size": 100, "src_col": "de", "tgt_col": "en"}


@pytest.fixture(scope="module")
def bucket():
    """The S3 endpoint first, so that the Ray workers started next inherit its settings."""
    with s3_environment() as uri:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        try:
            yield uri
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def remote_model(bucket, tiny_model_dir) -> str:
    """The tiny model uploaded as the `model/` of a run dir on S3; returns the run dir URI."""
    run = Location.of(f"{bucket}/runs/tiny")
    (run / "model").upload(tiny_model_dir)
    return run.uri


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(storage, "CACHE_DIR", tmp_path / "cache")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Local files: train (gzipped text), valid (plain text), test (a Parquet directory)."""
    directory = tmp_path_factory.mktemp("corpus")
    pairs = parallel_corpus(400, seed=7)
    write_pair(directory / "train", pairs[:300])
    write_pair(directory / "valid", pairs[300:360], gz=False)
    (directory / "store").mkdir()
    test = pairs[360:]
    for part in range(2):
        rows = test[part * 20 : part * 20 + 20]
        table = pa.table({"de": [d for d, _ in rows], "en": [e for _, e in rows]})
        pq.write_table(table, directory / "store" / f"part-{part}.parquet")
    return directory


def inputs(root: str) -> dict:
    return {"train": f"{root}/train", "valid": f"{root}/valid", "test": [f"{root}/store"]}


@pytest.fixture(scope="module")
def remote_data(bucket, corpus) -> tuple[str, dict]:
    """The corpus uploaded to S3 and prepared from there into s3://.../data."""
    Location.of(f"{bucket}/corpus").upload(corpus)
    out = f"{bucket}/data/de-en"
    return out, prepare_corpus(out=out, **inputs(f"{bucket}/corpus"), **OPTIONS)


def read_remote_split(location: Location) -> list[dict]:
    table = pq.read_table(location.path, filesystem=location.filesystem)
    return sorted(table.to_pylist(), key=lambda row: row["index"])


def test_prepare_reads_and_writes_s3_like_local_disk(remote_data, corpus, tmp_path):
    uri, stats = remote_data
    data = Location.of(uri)
    assert is_prepared(uri) and not is_prepared(f"{uri}-missing")
    assert Location.of(f"{uri}/stats.json").read_text().startswith("{")
    splits = stats["splits"]
    assert (splits["train"]["in"], splits["valid"]["kept"], splits["test/store"]["kept"]) == (
        300,
        60,
        40,
    )
    shards = (data / "train").files()
    assert shards and all(shard.name.endswith(".parquet") for shard in shards)
    remote = {name: read_remote_split(data / name) for name in ("train", "valid", "test/store")}
    assert len(remote["train"]) == splits["train"]["kept"]
    assert [row["index"] for row in remote["test/store"]] == list(range(40))

    local = tmp_path / "local"
    prepare_corpus(out=local, **inputs(str(corpus)), **OPTIONS)
    assert (data / "spm.src.model").read_bytes() == (local / "spm.src.model").read_bytes()
    for name, rows in remote.items():
        local_rows = read_split(local / name)
        assert [(r["src_ids"], r["tgt_ids"]) for r in rows] == [
            (r["src_ids"], r["tgt_ids"]) for r in local_rows
        ]

    with pytest.raises(UserError, match="already exists"):
        prepare_corpus(out=uri, **inputs(str(corpus)), **OPTIONS)


def test_train_on_s3_exports_and_resumes(remote_data, tmp_path):
    uri, _ = remote_data
    out = Location.of(uri).parent.parent / "runs" / "de-en"
    first = train_model(uri, out.uri, TINY.override(max_steps=4))
    assert first.steps == 4
    for name in ("model/config.json", "model/weights.pt", "model/spm.src.model", "metrics.csv"):
        assert (out / name).is_file(), name
    assert str(first.model_dir) == f"{out.uri}/model"

    second = train_model(uri, out.uri, TINY.override(max_steps=6))
    assert second.steps == 6 and second.resumes == 1
    rows = list(csv.DictReader(io.StringIO((out / "metrics.csv").read_text())))
    assert [int(row["step"]) for row in rows] == [2, 4, 6]
    model = load_model((out / "model").download(tmp_path / "model"))
    assert model.config.src_vocab_size > 0


def test_globs_name_the_same_files_as_on_a_local_disk(bucket, tmp_path):
    make_store(tmp_path / "store")
    Location.of(f"{bucket}/globs/store").upload(tmp_path / "store")
    names = ["part-0.parquet", "part-1.parquet", "part-2.parquet"]
    expected = [f"{bucket}/globs/store/{name}" for name in names]
    assert glob_files(f"{bucket}/globs/store") == expected
    assert glob_files(f"{bucket}/globs/store/*.parquet") == expected
    assert glob_files(f"{bucket}/globs/*/part-[01].parquet") == expected[:2]
    assert glob_files(f"{bucket}/globs/store/part-2.parquet") == expected[2:]
    assert glob_files(f"{bucket}/globs/nothing/*.parquet") == []
    local = [p.rsplit("/", 1)[1] for p in glob_files(str(tmp_path / "store" / "*.parquet"))]
    assert local == names


def test_a_remote_dir_is_fetched_once_and_again_when_it_changes(bucket, tmp_path):
    remote = Location.of(f"{bucket}/cached")
    (remote / "a.txt").write_text("first")
    copy = local_copy(remote, "test")
    assert (copy / "a.txt").read_text() == "first"
    assert local_copy(remote, "test") == copy  # unchanged: the same copy
    (remote / "a.txt").write_text("second version")
    changed = local_copy(remote, "test")
    assert changed != copy and (changed / "a.txt").read_text() == "second version"
    with pytest.raises(UserError, match="does not exist"):
        local_copy(Location.of(f"{bucket}/nothing-here"), "test")


def test_translator_from_a_remote_run_dir_translates_as_the_local_model(
    remote_model, tiny_model_dir
):
    remote = Translator(remote_model, settings=DecodeSettings(beam_size=2))
    local = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=2))
    assert remote.source.uri == f"{remote_model}/model"
    sentences = GERMAN[:8]
    assert [t.text for t in remote.translate(sentences)] == [
        t.text for t in local.translate(sentences)
    ]
    with pytest.raises(UserError, match="does not exist"):
        Translator(f"{remote_model}-missing")


def test_bulk_job_between_s3_stores_resumes_and_matches_a_local_job(
    bucket, remote_model, tiny_model_dir, tmp_path, monkeypatch
):
    expected = make_store(tmp_path / "store")
    Location.of(f"{bucket}/store").upload(tmp_path / "store")
    local = bulk_translate(
        str(tiny_model_dir), str(tmp_path / "store"), str(tmp_path / "out"), options()
    )
    output = f"{bucket}/translated"

    monkeypatch.setenv("_NMT_BULK_FAIL_FROM_FRAGMENT", "4")
    with pytest.raises(JobFailed, match="rerun with --resume"):
        bulk_translate(remote_model, f"{bucket}/store/*.parquet", output, options())
    monkeypatch.delenv("_NMT_BULK_FAIL_FROM_FRAGMENT")
    names = [f.name for f in Location.of(output).files()]
    assert MANIFEST_FILE not in names and any(n.startswith(TEMP_PREFIX) for n in names)

    manifest = bulk_translate(
        remote_model, f"{bucket}/store/*.parquet", output, options(resume=True)
    )
    assert 0 < manifest["fragments_translated"] < manifest["fragments"]
    assert manifest["rows_in"] == manifest["rows_out"] == local["rows_out"] == 30
    names = [f.name for f in Location.of(output).files()]
    assert MANIFEST_FILE in names and not any(n.startswith(TEMP_PREFIX) for n in names)

    remote_rows = pads.dataset(output, format="parquet").to_table().sort_by("doc_id")
    local_rows = pads.dataset(tmp_path / "out", format="parquet").to_table().sort_by("doc_id")
    assert remote_rows.column("doc_id").to_pylist() == list(range(30))
    for column in ("translation", "error", "body"):
        assert remote_rows.column(column).equals(local_rows.column(column))
    # the rows to translate, plus one empty document per file, translated without error
    assert remote_rows.column("error").null_count == len(expected) + 3
