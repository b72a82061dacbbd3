"""`nmt demo`: the whole pipeline on one machine in a few minutes.

Prepare Multi30K de->en with Ray Data (or a generated corpus when ../shared/data is absent),
train a small model with Ray Train, translate and score it, start the Serve endpoint and
query it over HTTP, bulk-translate a small Parquet store, and say where everything went.
Each stage is the same function the `nmt` subcommands and `jobs/` call.

Ray is quiet unless `--verbose`: its INFO logs and its workers' output go to its session's log
directory (named at the start and the end, and linked as `ray-logs` in --out); warnings and
errors of this process still print, and the training workers' `[train]` lines are echoed.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UserError

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
MARKER = ".nmt-demo"  # only a directory holding this file is replaced by a new demo run
SAMPLE_COUNT = 5
STORE_ROWS = 200

EXAMPLES = """examples:
  nmt demo                                  # a few minutes
  nmt demo --minutes 10 --out runs/demo10   # train longer
  nmt demo --toy                            # no Ray: a toy model learns to reverse letters
  nmt demo --toy --attention none           # ... and the fixed-context baseline fails to
  nmt demo --verbose                        # Ray's own logs on the console too

Looks for Multi30K in ../shared/data/multi30k (or --shared-data); without it, a generated
German-English corpus stands in (and the demo says so).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="where everything goes")
    parser.add_argument(
        "--shared-data", help="directory holding multi30k/ (default: ../shared/data)"
    )
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="training config (YAML)")
    parser.add_argument("--minutes", type=float, default=3.0, help="training time budget")
    parser.add_argument("--max-steps", type=int, help="training step budget (default: none)")
    parser.add_argument("--toy", action="store_true", help="the toy task instead, without Ray")
    parser.add_argument(
        "--attention",
        default="bahdanau",
        choices=["bahdanau", "luong", "none"],
        help="--toy: the attention to train",
    )
    parser.add_argument("--steps", type=int, default=600, help="--toy: training steps")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print Ray's logs and its workers' output here, not only to its log directory",
    )


def run(args: argparse.Namespace) -> int:
    if args.toy:
        return run_toy(args)
    out = claim_out_dir(Path(args.out))
    started = time.perf_counter()
    logs = start_ray(args.verbose)
    if logs is not None:
        link_logs(logs, out)
        print(f"Ray's logs: {logs}" + ("" if args.verbose else " (--verbose prints them here)"))
    try:
        data = prepare_stage(out, find_multi30k(args.shared_data))
        with echo_train_lines(logs if not args.verbose else None):
            model = train_stage(data, out / "run", args)
        translate_stage(model, data)
        serve_stage(model, data)
        bulk_stage(model, data, out)
    except BaseException:
        if logs is not None:  # the workers' side of a failure is in their log files
            print(f"\nnmt demo failed; Ray's logs: {logs}", file=sys.stderr, flush=True)
        raise
    print(
        f"\nDone in {time.perf_counter() - started:.0f}s. Everything is under {out}/:\n"
        f"  data/        prepared Parquet shards, sentencepiece models, stats.json\n"
        f"  run/         Ray Train run: metrics.csv, training.png, checkpoints\n"
        f"  run/model/   the best model (nmt translate/evaluate/serve --model {out / 'run'})\n"
        f"  store/       a small Parquet document store\n"
        f"  translated/  its translations and _SUCCESS manifest"
    )
    if logs is not None:
        print(f"  ray-logs/    Ray's logs, workers' output included: {logs}")
    return 0


def claim_out_dir(out: Path) -> Path:
    """A fresh --out: replaced only when an earlier demo made it, else it must be empty."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UserError(f"--out {out} exists and was not made by `nmt demo`; pick another")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by `nmt demo`; the next demo run replaces this directory\n")
    return out.resolve()


def start_ray(verbose: bool) -> Path | None:
    """Start Ray, quiet unless `verbose`; returns its session's log directory (None when
    Ray was already running, with settings of its own)."""
    import ray

    if ray.is_initialized():
        return None
    # Keep the dashboard: Ray Train's placement-group cleaner polls the state API it
    # serves, and without it logs "Failed to query Ray Train Controller" every second.
    if verbose:
        context = ray.init()
    else:
        # The workers' output (Train, Serve and Data actors' logs among it) stays in the
        # session's log files instead of being forwarded here.
        context = ray.init(logging_level="WARNING", log_to_driver=False)
        quiet_ray_libraries()
    return Path(context.address_info["session_dir"]) / "logs"


def quiet_ray_libraries() -> None:
    """Ray Data, Serve and Train log INFO records to the console through handlers of their
    own: raise those console handlers to WARNING, leaving their log files complete; Ray
    Data's progress bars stay, without the per-operator detail."""
    import ray.data
    import ray.serve  # noqa: F401 (importing it sets up its logger)
    import ray.train  # noqa: F401

    for name in ("ray", "ray.data", "ray.serve", "ray.train"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                handler.setLevel(logging.WARNING)
    ray.data.DataContext.get_current().execution_options.verbose_progress = False


def link_logs(logs: Path, out: Path) -> None:
    """`out/ray-logs` -> Ray's log directory, so the demo's outputs name all it wrote."""
    with contextlib.suppress(OSError):  # a filesystem without symlinks: the path is printed
        (out / "ray-logs").symlink_to(logs, target_is_directory=True)


@contextlib.contextmanager
def echo_train_lines(logs: Path | None, interval: float = 1.0) -> Iterator[None]:
    """Print the training workers' `[train]` progress lines, which Ray (with its workers'
    output kept off the console) writes only to the workers' .out files under `logs`."""
    if logs is None:
        yield
        return
    import ray

    pattern = f"worker-*-{ray.get_runtime_context().get_job_id()}-*.out"
    offsets: dict[Path, int] = {}
    stop = threading.Event()

    def poll() -> None:
        for path in sorted(logs.glob(pattern)):
            with path.open("rb") as file:
                file.seek(offsets.get(path, 0))
                text = file.read()
            complete = text[: text.rfind(b"\n") + 1]  # a partial last line waits
            offsets[path] = offsets.get(path, 0) + len(complete)
            for line in complete.decode(errors="replace").splitlines():
                if line.startswith("[train] "):
                    print(line, flush=True)

    def loop() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(OSError):  # a worker's file may be rotated away
                poll()

    thread = threading.Thread(target=loop, name="echo-train-lines", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(OSError):
            poll()  # what the last interval left


def find_multi30k(shared_data: str | None) -> Path | None:
    """Multi30K's directory, from --shared-data or ../shared/data beside the cwd or repo."""
    if shared_data:
        candidates = [Path(shared_data)]
    else:
        candidates = [Path.cwd().parent / "shared" / "data", REPO.parent / "shared" / "data"]
    for candidate in candidates:
        if (candidate / "multi30k" / "train.de.gz").is_file():
            return candidate / "multi30k"
    return None


def heading(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)), flush=True)


# -- the stages ----------------------------------------------------------------------------
def prepare_stage(out: Path, multi30k: Path | None) -> Path:
    from pipeline.prepare.preparation import prepare_corpus, summary

    if multi30k is None:
        heading("1/5 prepare: ../shared/data not found, using a GENERATED de-en corpus")
        prefixes = write_generated_corpus(out / "generated")
        vocab_size = 200  # the generated corpus has some sixty words a side
    else:
        heading(f"1/5 prepare: Multi30K de-en from {multi30k}")
        prefixes = {name: str(multi30k / name) for name in ("train", "val", "test_2016_flickr")}
        vocab_size = 8000
    started = time.perf_counter()
    stats = prepare_corpus(
        src_lang="de",
        tgt_lang="en",
        train=prefixes["train"],
        valid=prefixes["val"],
        test=[prefixes["test_2016_flickr"]],
        out=out / "data",
        vocab_size=vocab_size,
    )
    print(summary(stats, out / "data", time.perf_counter() - started))
    return out / "data"


def write_generated_corpus(directory: Path) -> dict[str, str]:
    """Seeded synthetic pairs as Multi30K-style gzipped text files; returns the prefixes."""
    from pipeline.corpus.synthetic import parallel_corpus

    pairs = parallel_corpus(12_000, seed=0)
    splits = {"train": pairs[:10_000], "val": pairs[10_000:11_000]}
    splits["test_2016_flickr"] = pairs[11_000:]
    directory.mkdir(parents=True)
    for name, split in splits.items():
        for side, lang in enumerate(("de", "en")):
            with gzip.open(directory / f"{name}.{lang}.gz", "wt", encoding="utf-8") as file:
                file.writelines(pair[side] + "\n" for pair in split)
    return {name: str(directory / name) for name in splits}


def train_stage(data: Path, run_dir: Path, args: argparse.Namespace) -> Path:
    from pipeline.train.config import TrainConfig
    from pipeline.train.trainer import train_model

    config = TrainConfig.from_yaml(args.config).override(
        time_budget_minutes=args.minutes, max_steps=args.max_steps
    )
    heading(f"2/5 train: Ray Train, {config.workers} worker(s), {args.minutes:g} minute budget")
    summary = train_model(data, run_dir, config)
    print(summary.describe())
    return summary.model_dir


def test_set(data: Path) -> tuple[list[str], list[str]]:
    """The prepared test set's raw source and reference text."""
    import pyarrow.parquet as pq

    (test_dir,) = (data / "test").iterdir()
    table = pq.read_table(test_dir, columns=["index", "src_text", "tgt_text"]).sort_by("index")
    return table["src_text"].to_pylist(), table["tgt_text"].to_pylist()


def translate_stage(model: Path, data: Path) -> None:
    from pipeline.translate.evaluate import decode, score_system
    from pipeline.translate.settings import DecodeSettings
    from pipeline.translate.translator import Translator

    settings = DecodeSettings(beam_size=5)
    heading(f"3/5 translate and score (beam {settings.beam_size})")
    translator = Translator(model, settings=settings)
    sources, references = test_set(data)
    hypotheses, seconds = decode(translator, sources)
    samples = zip(sources[:SAMPLE_COUNT], hypotheses, references, strict=False)
    for source, hypothesis, reference in samples:
        print(f"  de:  {source}\n  nmt: {hypothesis}\n  ref: {reference}\n")
    scores = score_system(translator, hypotheses, seconds, [references], None)
    print(
        f"test set: {len(sources)} sentences, BLEU {scores['bleu']['score']:.1f}, "
        f"chrF {scores['chrf']['score']:.1f}, {scores['sentences_per_second']:.0f} sentences/s "
        f"(a {translator.model.num_parameters() / 1e6:.1f}M-parameter model trained for minutes; "
        "the README has the full recipe)"
    )


def serve_stage(model: Path, data: Path) -> None:
    import requests
    from ray import serve

    from pipeline.serve import APP_NAME, build_app

    port = free_port()
    heading(f"4/5 serve: Ray Serve endpoint on http://127.0.0.1:{port}/translate")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(model, max_replicas=1), name=APP_NAME, route_prefix="/")
        request = {"text": test_set(data)[0][:3], "beam_size": 5}
        print(f"POST /translate {json.dumps(request, ensure_ascii=False)}")
        response = requests.post(f"http://127.0.0.1:{port}/translate", json=request, timeout=120)
        response.raise_for_status()
        print(json.dumps(response.json(), indent=2, ensure_ascii=False))
    finally:
        serve.shutdown()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bulk_stage(model: Path, data: Path, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.bulk.job import BulkOptions, bulk_translate

    heading(f"5/5 bulk-translate: a {STORE_ROWS}-document Parquet store with Ray Data")
    sources = test_set(data)[0]
    documents = [" ".join(sources[i : i + 2]) for i in range(0, 2 * STORE_ROWS, 2)]
    (out / "store").mkdir()
    half = len(documents) // 2
    for part, rows in enumerate((range(half), range(half, len(documents)))):
        table = pa.table({"doc_id": list(rows), "text": [documents[i] for i in rows]})
        pq.write_table(table, out / "store" / f"part-{part}.parquet")
    options = BulkOptions("text", id_column="doc_id", workers=min(2, os.cpu_count() or 1))
    manifest = bulk_translate(str(model), str(out / "store"), str(out / "translated"), options)
    print(
        f"{manifest['rows_in']} documents in, {manifest['rows_out']} out, "
        f"{manifest['rows_with_errors']} with errors; manifest {out / 'translated' / '_SUCCESS'}"
    )
    first = pq.read_table(out / "translated").sort_by("doc_id").slice(0, 1).to_pylist()[0]
    print(f"  {first['text']}\n  -> {first['translation']}")


# -- the toy task ----------------------------------------------------------------------------
def run_toy(args: argparse.Namespace) -> int:
    import torch

    from models.search import beam_search
    from models.toy import decode_symbols, encode_symbols, make_pairs, train_toy, translate_symbols
    from models.training import collate

    torch.set_num_threads(2)
    print(f"Training a {args.attention} toy model: reverse the input and shift each letter by 3")
    result = train_toy(args.attention, max_seconds=60, max_steps=args.steps, log_every=100)
    config = result.model.config
    print(
        f"{result.steps} steps in {result.seconds:.0f}s, "
        f"{result.model.num_parameters():,} parameters; "
        f"held-out exact match {result.exact_match:.1%}\n"
    )
    texts = ["hello", "attention", "neuralmachinetranslation", "abcdefghijklmnopqrstu"]
    texts += [decode_symbols(s) for s, _ in make_pairs(2, 3, 24, seed=99)]
    batch = collate(
        [(encode_symbols(t), []) for t in texts], config.pad_id, config.bos_id, config.eos_id
    )
    for text, (best,) in zip(
        texts, beam_search(result.model, batch.src, batch.src_len), strict=True
    ):
        output = decode_symbols(best.tokens)
        mark = "ok " if output == translate_symbols(text) else "ERR"
        print(f"{mark} {text:>26} -> {output}")
    return 0
