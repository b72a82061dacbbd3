"""Fault drills, small and bounded: a process of each stage killed with SIGKILL mid-work.

- serve: a translator replica killed under 32 clients costs no request (the ingress sends
  the requests it had in flight again) and Serve replaces it;
- train: the `nmt train` driver killed mid-run, then the same command again: it resumes
  from the last complete checkpoint and ends as an unbroken run would;
- prepare: a Ray Data tokenizer actor killed during `nmt prepare`: the output is complete
  and the same as an undisturbed run's.

One local Ray (2 CPUs) for the module; the training drill runs `nmt train` as a command in
its own process, with a Ray of its own, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from prepared_data import write_prepared_dataset
from test_prepare import write_pair
from test_serve import (
    eventually,
    free_port,
    init_ray_with_metrics,
    scrape,
    translator_replicas,
    wait_until,
)

from pipeline.corpus.synthetic import parallel_corpus
from pipeline.serve.options import TRANSLATOR_DEPLOYMENT

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def ray_cluster(metrics_port: int) -> Iterator[None]:
    ray = pytest.importorskip("ray")
    init_ray_with_metrics(metrics_port)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def live_actor_pids(class_part: str) -> list[int]:
    """The pids of this cluster's live actors whose class name contains `class_part`."""
    from ray._private import state

    return [
        actor["Pid"]
        for actor in state.actors().values()
        if class_part in actor["ActorClassName"] and actor["State"] == "ALIVE" and actor["Pid"]
    ]


def kill_when(condition: Callable[[], list[int]], timeout_s: float) -> int:
    """SIGKILL the first pid `condition` returns, polling until it returns one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = condition()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.05)
    pytest.fail(f"nothing to kill within {timeout_s:.0f} s")


# -- serve --------------------------------------------------------------------------------------
CLIENTS = 32
REQUESTS = 480
KILLS = 3  # replica kills before the drill gives up on seeing a retry
RETRY_EXPORT_S = 20  # metrics are exported every second; a retry shows well within this


def test_a_translator_replica_killed_under_load_costs_no_request(
    ray_cluster, tiny_model_dir: Path, metrics_port: int
) -> None:
    from ray import serve

    from pipeline.serve import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = build_app(
            tiny_model_dir, min_replicas=2, max_replicas=2, num_cpus=0.25, max_batch_size=16
        )
        serve.run(app, name="drill", route_prefix="/drill")
        retried = lambda: scrape(metrics_port, "ray_nmt_retries_total").get("de-en", 0)  # noqa: E731
        # A tiny model answers in milliseconds, so the killed replica may hold no request at
        # that instant and nothing is retried: then the drill kills again, under new load.
        for _ in range(KILLS):
            statuses = drive_and_kill(f"http://127.0.0.1:{port}/drill/translate")
            assert statuses == {200: REQUESTS}, "every request answered, none failed"
            seen_retries = eventually(lambda: retried() >= 1, RETRY_EXPORT_S)
            wait_until(lambda: translator_replicas("drill") == 2, 120, "the replica replaced")
            if seen_retries:
                return
        pytest.fail(f"no request was retried after {KILLS} replica kills under load")
    finally:
        serve.shutdown()


def drive_and_kill(url: str) -> dict[int, int]:
    """32 clients share REQUESTS requests; a third of the way in, one translator replica is
    killed. Returns the count of each status."""
    sentences = [de for de, _ in parallel_corpus(64, seed=41)]
    done: list[int] = []
    lock = threading.Lock()
    indices = iter(range(REQUESTS))

    def client() -> None:
        with requests.Session() as session:
            for index in indices:
                answer = session.post(url, json={"text": sentences[index % 64]}, timeout=TIMEOUT_S)
                with lock:
                    done.append(answer.status_code)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        clients = [pool.submit(client) for _ in range(CLIENTS)]
        wait_until(lambda: len(done) >= REQUESTS // 3, TIMEOUT_S, "the load to get going")
        kill_when(lambda: live_actor_pids(f":drill:{TRANSLATOR_DEPLOYMENT}"), 10)
        for finished in clients:
            finished.result()
    return {status: done.count(status) for status in set(done)}


# -- train --------------------------------------------------------------------------------------
def train_command(data: Path, out: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "pipeline.cli", "train"),
        *("--data", str(data), "--out", str(out), "--config", str(REPO / "configs/tiny.yaml")),
        *("--max-steps", "60", "--valid-every", "20"),
    ]


def committed_steps(out: Path) -> list[int]:
    """The steps of the checkpoints Ray Train has recorded as reported (its snapshot of the
    run, written once a checkpoint is whole); a checkpoint dir it does not list may be half
    written, and must never be resumed from."""
    snapshot = out / "ray_train" / "checkpoint_manager_snapshot.json"
    if not snapshot.is_file():
        return []
    results = json.loads(snapshot.read_text())["checkpoint_results"]
    return sorted(result["metrics"]["step"] for result in results)


def test_a_killed_train_driver_resumes_from_its_last_complete_checkpoint(tmp_path: Path) -> None:
    data = write_prepared_dataset(tmp_path / "data")
    out = tmp_path / "run"
    command = train_command(data, out)
    env = {**os.environ, "RAY_ADDRESS": "local"}  # a Ray of its own, never another's
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: committed_steps(out), 240, "the first complete checkpoint")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(TIMEOUT_S)
    time.sleep(2)  # the killed driver's Ray goes down with it
    complete = committed_steps(out)
    assert complete[-1] < 60, "killed mid-run"

    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = [int(step) for step in re.findall(r"resumed from step (\d+)", again.stdout)]
    assert resumed == [complete[-1]], again.stdout[-3000:]
    assert "trained 60 steps (resumed 1x from checkpoints)" in again.stdout
    with (out / "metrics.csv").open() as metrics:
        steps = [line.split(",")[0] for line in metrics.read().splitlines()[1:]]
    assert steps == ["20", "40", "60"], "each validation once: nothing lost, nothing twice"
    assert (out / "model" / "weights.pt").is_file()


# -- prepare ------------------------------------------------------------------------------------
@pytest.fixture
def many_blocks(monkeypatch) -> None:
    """Small blocks, so the tokenizer actor is busy for a while and can be killed mid-run."""
    from pipeline.prepare import dataflow

    monkeypatch.setattr(dataflow, "BATCH_ROWS", 200)
    monkeypatch.setattr(dataflow, "TARGET_BLOCK_BYTES", 8_000)


def test_a_killed_tokenizer_actor_leaves_the_output_complete_and_unchanged(
    ray_cluster, many_blocks, tmp_path: Path
) -> None:
    from pipeline.prepare.preparation import prepare_corpus

    pairs = parallel_corpus(12_000, seed=43)
    train = write_pair(tmp_path / "corpus" / "train", pairs[:11_000])
    valid = write_pair(tmp_path / "corpus" / "valid", pairs[11_000:])
    settings = {"src_lang": "de", "tgt_lang": "en", "train": train, "valid": valid}
    undisturbed = prepare_corpus(out=tmp_path / "undisturbed", vocab_size=150, **settings)

    outcome: dict = {}

    def prepare() -> None:
        try:
            outcome["stats"] = prepare_corpus(out=tmp_path / "killed", vocab_size=150, **settings)
        except Exception as error:  # the drill reports what a user would see
            outcome["error"] = error

    worker = threading.Thread(target=prepare)
    worker.start()
    kill_when(lambda: live_actor_pids("TokenizePairs"), 120)
    worker.join(240)
    assert not worker.is_alive()
    assert "error" not in outcome, f"the run failed: {outcome.get('error')!r}"
    assert outcome["stats"]["splits"] == undisturbed["splits"]
    for split in ("train", "valid"):
        assert read_rows(tmp_path / "killed" / split) == read_rows(tmp_path / "undisturbed" / split)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers, "no staging dir left behind"


def read_rows(directory: Path) -> list[dict]:
    return sorted(pq.read_table(directory).to_pylist(), key=lambda row: row["index"])
