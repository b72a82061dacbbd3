"""A head and two worker nodes on this machine (ray.cluster_utils.Cluster); a worker node is
removed mid-job, as when a spot instance is reclaimed, and replaced, as the autoscaler would."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from prepared_data import write_prepared_dataset
from ray.cluster_utils import Cluster

from pipeline.bulk.job import BulkOptions, bulk_translate
from pipeline.corpus.synthetic import parallel_corpus
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train_model
from pipeline.translate.settings import DecodeSettings

TINY = TrainConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
SLOT = "worker_slot"  # a resource only the worker nodes have, so training lands on them


@pytest.fixture
def cluster():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    workers = [cluster.add_node(num_cpus=1, resources={SLOT: 1}) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="ERROR")
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def run_in_thread(function, *args):
    """Run function(*args) in a thread; returns a callable that joins and returns/raises."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def join(timeout: float = 400):
        thread.join(timeout)
        assert not thread.is_alive(), "the job did not finish"
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return join


def lose_a_worker_node(cluster: Cluster, workers: list) -> None:
    cluster.remove_node(workers[0], allow_graceful=False)
    cluster.add_node(num_cpus=1, resources={SLOT: 1})


def test_bulk_translation_survives_losing_a_node(cluster, tiny_model_dir, tmp_path):
    cluster, workers = cluster
    store, out = tmp_path / "store", tmp_path / "out"
    store.mkdir()
    documents = [f"{de} {de}" for de, _ in parallel_corpus(240, seed=9)]
    for part in range(4):
        rows = range(part * 60, (part + 1) * 60)
        table = pa.table({"id": list(rows), "text": [documents[i] for i in rows]})
        pq.write_table(table, store / f"part-{part}.parquet", row_group_size=10)
    # Two one-CPU actors on three one-CPU nodes: at least one runs on the node that goes.
    options = BulkOptions(
        "text",
        id_column="id",
        decoding=DecodeSettings(beam_size=2),
        workers=2,
        rows_per_fragment=10,
        show_progress=False,
    )
    join = run_in_thread(bulk_translate, str(tiny_model_dir), str(store), str(out), options)
    wait_for(lambda: len(list(out.glob("*.parquet"))) >= 2, 300, "the first outputs")
    lose_a_worker_node(cluster, workers)
    manifest = join()
    result = pq.read_table(out).to_pydict()
    assert sorted(result["id"]) == list(range(240)), "every row exactly once"
    assert manifest["rows_in"] == manifest["rows_out"] == 240
    assert all(error is None for error in result["error"])


def test_training_survives_losing_a_worker_node(cluster, tmp_path):
    cluster, workers = cluster
    data = write_prepared_dataset(tmp_path / "data")
    out = tmp_path / "run"
    config = TINY.override(
        workers=2, max_steps=120, valid_every=20, cpus_per_worker=0.5, worker_resources={SLOT: 1}
    )
    join = run_in_thread(train_model, data, out, config)
    # The controller's snapshot is written once it has registered a checkpoint; the checkpoint
    # directory alone appears before that, and losing the node then restarts from scratch.
    snapshot = out / "ray_train" / "checkpoint_manager_snapshot.json"
    wait_for(snapshot.is_file, 300, "a first registered checkpoint")
    lose_a_worker_node(cluster, workers)
    summary = join()
    assert summary.steps == 120
    assert summary.resumes >= 1, "restarted from a checkpoint after losing the node"
    assert (out / "model" / "weights.pt").is_file()
