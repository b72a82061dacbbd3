"""Remote storage for models and document stores: an S3 endpoint (moto, over HTTP) holds the
model and the Parquet store; the Translator and `nmt bulk-translate` work from its URIs
exactly as from local paths, including a killed job resumed on the object store.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.dataset as pads
import pytest
from s3_store import s3_environment
from test_bulk import GERMAN, make_store, options

from pipeline import storage
from pipeline.bulk import JobFailed, bulk_translate
from pipeline.bulk_store import MANIFEST_FILE, TEMP_PREFIX
from pipeline.errors import UserError
from pipeline.storage import Location, glob_files, local_copy
from pipeline.translator import Translator


@pytest.fixture(scope="module")
def bucket() -> Iterator[str]:
    with s3_environment() as uri:
        yield uri


@pytest.fixture(scope="module")
def ray_cluster(bucket) -> Iterator[None]:
    import ray

    # started after the S3 environment is set, so every Ray worker inherits the endpoint
    ray.init(num_cpus=2, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
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
    remote = Translator(remote_model, beam_size=2)
    local = Translator(tiny_model_dir, beam_size=2)
    assert remote.source.uri == f"{remote_model}/model"
    sentences = GERMAN[:8]
    assert [t.text for t in remote.translate(sentences)] == [
        t.text for t in local.translate(sentences)
    ]
    with pytest.raises(UserError, match="does not exist"):
        Translator(f"{remote_model}-missing")


def test_bulk_job_between_s3_stores_resumes_and_matches_a_local_job(
    ray_cluster, bucket, remote_model, tiny_model_dir, tmp_path, monkeypatch
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
