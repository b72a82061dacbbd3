"""`nmt demo` runs the whole pipeline: here on the generated corpus (as on a machine without
../shared/data) with the tiny config and a step budget, so that it is quick."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.demo import claim_out_dir

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_every_stage_on_the_generated_corpus(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "pipeline.cli", "demo", "--out", str(out)]
    command += ["--shared-data", str(tmp_path / "absent"), "--config", "configs/tiny.yaml"]
    command += ["--max-steps", "60"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout
    assert "GENERATED" in output, "says that it fell back to the generated corpus"
    for stage in ("1/5 prepare", "2/5 train", "3/5 translate", "4/5 serve", "5/5 bulk"):
        assert stage in output
    assert (out / "run" / "model" / "weights.pt").is_file()
    manifest = json.loads((out / "translated" / "_SUCCESS").read_text())
    assert manifest["rows_in"] == manifest["rows_out"] == 200
    translated = pq.read_table(out / "translated").to_pydict()
    assert sorted(translated["doc_id"]) == list(range(200))
    assert all(text for text in translated["translation"])
    assert '"translations"' in output, "the HTTP answer is shown"
    assert "[train] step" in output, "the training workers' progress is echoed"
    assert "200/200" in result.stderr, "the bulk stage's progress bar"

    # Ray is quiet: none of its INFO logs or its workers' output, and it says where they went
    console = output + result.stderr
    ray_info = [line for line in console.splitlines() if re.search(r"(^|\s)INFO\s", line)]
    assert not ray_info, "Ray's INFO logs reach the console:\n" + "\n".join(ray_info[:20])
    assert "pid=" not in console, "Ray's workers' output reaches the console"
    assert len(console.splitlines()) < 120
    logs = re.findall(r"^Ray's logs: (\S+)", output, re.MULTILINE)
    assert logs, "names Ray's log directory at the start"
    assert Path(logs[0]).is_dir() and str(Path(logs[0])) in output.splitlines()[-1]
    assert (out / "ray-logs").resolve() == Path(logs[0]).resolve()
    assert any(Path(logs[0]).glob("worker-*.out")), "the workers' output is in the log files"


def test_a_new_demo_replaces_only_what_an_earlier_demo_made(tmp_path):
    earlier = claim_out_dir(tmp_path / "demo")
    (earlier / "run").mkdir()
    again = claim_out_dir(tmp_path / "demo")
    assert again == earlier and not (again / "run").exists()


def test_demo_refuses_to_replace_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "demo", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "was not made by `nmt demo`" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "user data"
