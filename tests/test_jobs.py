"""The stages as Ray jobs against a real local Ray head, and the cluster launcher config."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from ray._private.authentication_test_utils import reset_auth_token_state

from jobs._stage import stage_argv, yaml_to_argv
from pipeline.corpus.synthetic import parallel_corpus

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def test_cluster_yaml_names_what_the_launcher_needs():
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert cluster["cluster_name"]
    assert cluster["provider"]["type"]
    node_types = cluster["available_node_types"]
    assert cluster["head_node_type"] in node_types
    assert any(t["resources"].get("GPU", 0) >= 1 for t in node_types.values())
    assert any(
        t["resources"].get("GPU", 0) == 0 and t.get("max_workers", 0) > 0
        for t in node_types.values()
    ), "a CPU worker type for Ray Data"
    assert any("pip install" in c and "rnnsearch-ray" in c for c in cluster["setup_commands"])
    mounted = [local for local in cluster["file_mounts"].values()]
    assert "." in mounted, "the project is synced to the nodes"


def test_job_config_expands_into_the_cli_flags(tmp_path):
    assert yaml_to_argv(
        {"src_lang": "de", "test": ["a", "b"], "gpu": True, "resume": False, "max-steps": 10}
    ) == ["--src-lang", "de", "--test", "a", "--test", "b", "--gpu", "--max-steps", "10"]
    config = tmp_path / "job.yaml"
    config.write_text("data: d\nout: o\nworkers: 2\n")
    assert stage_argv(["--config", str(config), "--workers", "3"]) == [
        "--data",
        "d",
        "--out",
        "o",
        "--workers",
        "2",
        "--workers",
        "3",
    ]  # last one wins


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head with the job server on free loopback ports, token authentication on (as on
    a real cluster: the client must present the token); stopped afterwards."""
    temp_dir = tmp_path_factory.mktemp("ray")
    port, dashboard = free_port(), free_port()
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    with pytest.MonkeyPatch.context() as env:
        for key, value in auth.items():
            env.setenv(key, value)
        env.delenv("RAY_ADDRESS", raising=False)
        # Ray caches the token per process: earlier modules' ray.init() (no auth) left
        # an empty one behind, which the job client would otherwise send.
        reset_auth_token_state()
        # --block: the head's processes are this command's, and stopping it stops them
        # alone (`ray stop` would stop every Ray on the machine, other sessions' too).
        head = subprocess.Popen(
            [
                RAY,
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                "--num-cpus=2",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                # the job agent's default port is taken whenever another Ray runs here
                f"--dashboard-agent-listen-port={free_port()}",
                f"--temp-dir={temp_dir}",
                "--disable-usage-stats",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{dashboard}"
            wait_for_dashboard(url, head)
            yield url
        finally:
            stop_head(head)
    reset_auth_token_state()  # the env is restored: later modules start without auth again


def wait_for_dashboard(url: str, head: subprocess.Popen, timeout: float = 300) -> None:
    """Until the head's dashboard answers (slow on a loaded 2-core machine)."""
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start --head exited with {head.returncode}")
        try:
            requests.get(f"{url}/api/version", timeout=5)
            return
        except requests.ConnectionError:
            time.sleep(1)
    pytest.fail(f"the Ray head's dashboard did not answer within {timeout:.0f} s")


def stop_head(head: subprocess.Popen) -> None:
    """SIGTERM the head (it stops the processes it started), then SIGKILL whatever of its
    process group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait(10)


def submit_and_wait(client, stage: str, config: Path, timeout: float = 300) -> str:
    from ray.job_submission import JobStatus

    job_id = submit_when_agent_ready(
        client,
        entrypoint=f"{sys.executable} -m jobs.{stage} --config {config}",
        runtime_env={
            "working_dir": str(REPO),
            "excludes": [".venv", "runs", ".git", "**/__pycache__"],
        },
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            break
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, f"{stage} job ended {status}:\n{logs[-3000:]}"
    return logs


def submit_when_agent_ready(client, timeout: float = 300, **job) -> str:
    """The head answers before its job agent is up (slow on a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def write_job_config(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def test_prepare_train_bulk_translate_chain_as_ray_jobs(ray_head, tmp_path):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head)
    corpus = parallel_corpus(1200, seed=3)
    for name, pairs in (("train", corpus[:1000]), ("valid", corpus[1000:])):
        (tmp_path / f"{name}.de").write_text("".join(de + "\n" for de, _ in pairs))
        (tmp_path / f"{name}.en").write_text("".join(en + "\n" for _, en in pairs))
    data, run, store, out = (tmp_path / n for n in ("data", "run", "store", "translated"))
    prepare = write_job_config(
        tmp_path / "prepare.yaml",
        {
            "src_lang": "de",
            "tgt_lang": "en",
            "train": str(tmp_path / "train"),
            "valid": str(tmp_path / "valid"),
            "out": str(data),
            "vocab_size": 120,
        },
    )
    logs = submit_and_wait(client, "prepare", prepare)
    assert str(data) in logs, "the job says where its outputs went"
    assert (data / "stats.json").is_file()

    train = write_job_config(
        tmp_path / "train.yaml",
        {
            "data": str(data),
            "out": str(run),
            "config": str(REPO / "configs" / "tiny.yaml"),
            "max_steps": 40,
            "valid_every": 20,
        },
    )
    logs = submit_and_wait(client, "train", train)
    assert str(run / "model") in logs
    assert (run / "model" / "weights.pt").is_file()

    store.mkdir()
    documents = [f"{de} {de}" for de, _ in parallel_corpus(30, seed=4)]
    pq.write_table(pa.table({"id": list(range(30)), "text": documents}), store / "a.parquet")
    bulk = write_job_config(
        tmp_path / "bulk.yaml",
        {
            "model": str(run),
            "input": str(store / "*.parquet"),
            "output": str(out),
            "text_column": "text",
            "id_column": "id",
            "beam_size": 2,
            "workers": 1,
        },
    )
    submit_and_wait(client, "bulk_translate", bulk)
    result = pq.read_table(out).to_pydict()
    assert sorted(result["id"]) == list(range(30))
    assert all(error is None for error in result["error"])
