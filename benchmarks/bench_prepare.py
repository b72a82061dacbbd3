"""Benchmark `nmt prepare` against the raw speed of sentencepiece (issue 4).

Amplifies Multi30K train (x1, x5, x20 by repetition), runs `nmt prepare` on each with a
fresh 2-CPU local Ray cluster, and prints side by side, all measured in this one run:
- pairs/s of the whole command (Ray start, sentencepiece training, all splits, writing);
- pairs/s of its train split alone (the Ray Data pipeline: read, clean, tokenize, write);
- pairs/s of `SentencePieceProcessor.encode(list_of_strings, num_threads=2)` over the same
  sentences in this process (the limit), and the ratios;
- the floor: seconds of the least any prepare must do, in this process and without Ray or
  cleaning (gunzip and split both files, encode with 2 threads, write ids as Parquet), and
  the best ratio that leaves (limit / floor), whatever the pipeline;
- peak RSS of the driver (it also samples and trains sentencepiece), and of the rest of the
  command's process tree (GCS, raylet, Ray workers): their sum and the largest of them
  (shared object-store pages count in each process that maps them).

    .venv/bin/python benchmarks/bench_prepare.py [--sizes 1 5 20] [--spm-sample 29000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sentencepiece as spm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.prepare.stages import ids_array  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"
PAGE = os.sysconf("SC_PAGE_SIZE")


def amplify(directory: Path, times: int) -> tuple[str, list[str], list[str]]:
    """Multi30K train repeated `times` times as P.de.gz/P.en.gz; returns P and the lines."""
    lines = {}
    for lang in ("de", "en"):
        text = gzip.decompress((DATA / f"train.{lang}.gz").read_bytes())
        (directory / f"train.{lang}.gz").write_bytes(gzip.compress(text * times, compresslevel=1))
        lines[lang] = text.decode().splitlines() * times
    return str(directory / "train"), lines["de"], lines["en"]


def process_tree_rss(root: int) -> tuple[int, int, int]:
    """Resident set sizes in bytes: of `root`, and the sum and largest over its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    sizes, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        sizes.append(_rss(pid))
    return _rss(root), sum(sizes), max(sizes, default=0)


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:  # the process has just exited
        return 0


def run_prepare(train: str, out: Path, extra: list[str]) -> tuple[float, dict, list[int]]:
    """Wall seconds, stats.json and the peaks of process_tree_rss of one `nmt prepare`."""
    command = [sys.executable, "-m", "pipeline.cli", "prepare", "--src-lang", "de"]
    command += ["--tgt-lang", "en", "--train", train, "--valid", str(DATA / "val")]
    command += ["--out", str(out), *extra]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0, 0, 0]

    def sample() -> None:
        while process.poll() is None:
            peak[:] = map(max, peak, process_tree_rss(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"nmt prepare failed:\n{stderr.decode()[-3000:]}")
    return seconds, json.loads((out / "stats.json").read_text()), peak


def encode_limit(model: Path, german: list[str], english: list[str]) -> float:
    """Seconds for plain sentencepiece to encode both sides with 2 threads."""
    processor = spm.SentencePieceProcessor(model_file=str(model))
    started = time.perf_counter()
    processor.encode(german, num_threads=2)
    processor.encode(english, num_threads=2)
    return time.perf_counter() - started


def floor_seconds(prefix: str, model: Path, out: Path) -> float:
    """Seconds for the least a prepare of `prefix`.{de,en}.gz must do, in one process:
    gunzip and split into lines, encode with 2 threads, write the ids as Parquet."""
    processor = spm.SentencePieceProcessor(model_file=str(model))
    started = time.perf_counter()
    columns = {}
    for lang in ("de", "en"):
        lines = gzip.decompress(Path(f"{prefix}.{lang}.gz").read_bytes()).decode().splitlines()
        columns[lang], _ = ids_array(processor.encode(lines, num_threads=2))
    pq.write_table(pa.table(columns), out)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument(
        "--spm-sample",
        type=int,
        help="passed on to nmt prepare (a fixed sample isolates the "
        "pipeline's memory from the sentencepiece trainer's)",
    )
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"Multi30K not found at {DATA}")
    header = (
        f"{'size':>5} {'pairs':>9} {'prepare s':>9} {'ray s':>6} {'spm s':>6} {'prepare/s':>10} "
        f"{'train s':>8} {'train/s':>9} {'spm/s':>9} {'ratio':>6} {'ratio train':>11} "
        f"{'floor s':>7} {'ratio floor':>11} "
        f"{'driver MiB':>10} {'others MiB':>10} {'max other MiB':>13}"
    )
    print(header)
    for times in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            train, german, english = amplify(Path(tmp), times)
            extra = ["--spm-sample", str(args.spm_sample)] if args.spm_sample else []
            seconds, stats, (driver, others, largest) = run_prepare(train, Path(tmp) / "out", extra)
            model = Path(tmp) / "out" / "spm.src.model"
            limit = encode_limit(model, german, english)
            floor = floor_seconds(train, model, Path(tmp) / "floor.parquet")
        pairs = len(german)
        stages = stats["seconds"]  # ray_init, sentencepiece (sample + training), each split
        whole, pipeline, raw = pairs / seconds, pairs / stages["train"], pairs / limit
        print(
            f"{'x' + str(times):>5} {pairs:>9,} {seconds:>9.1f} {stages['ray_init']:>6.1f} "
            f"{stages['sentencepiece']:>6.1f} {whole:>10,.0f} {stages['train']:>8.1f} "
            f"{pipeline:>9,.0f} {raw:>9,.0f} {whole / raw:>6.2f} {pipeline / raw:>11.2f} "
            f"{floor:>7.1f} {limit / floor:>11.2f} "
            f"{driver / 2**20:>10,.0f} {others / 2**20:>10,.0f} {largest / 2**20:>13,.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
