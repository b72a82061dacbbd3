"""Bulk translation throughput and memory, measured side by side in one run.

Same generated German documents (3 sentences each) through:
1. the in-process `Translator` on one process with one thread (the per-CPU baseline);
2. `bulk_translate` (Ray Data actor pool, one CPU and one thread per actor), store x1 and x10;
3. `bulk_translate --via-serve` (the Serve deployment, one replica per actor's CPU), store x10.

Prints sentences/s, the ratio per CPU to the in-process figure (end to end, and for the
sentences x10 has beyond x1, which leaves out the job's fixed start-up), the largest peak RSS
of a bulk actor for the x1 and x10 stores (flat means memory is bounded by a fragment, not
by the store). Figures on a shared machine move with whatever else runs there.

    .venv/bin/python benchmarks/bench_bulk.py [--model DIR | --size tiny|reference]
        [--docs 200] [--cpus 2] [--rows-per-fragment 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.bulk.job import BulkOptions, bulk_translate  # noqa: E402
from pipeline.corpus.synthetic import parallel_corpus  # noqa: E402
from pipeline.translate.settings import DecodeSettings  # noqa: E402
from pipeline.translate.translator import Translator  # noqa: E402

SENTENCES_PER_DOC = 3


def write_store(directory: Path, docs: int, files: int) -> list[str]:
    """`files` Parquet files of `docs` documents in all; returns every sentence, in order."""
    german = [g for g, _ in parallel_corpus(docs * SENTENCES_PER_DOC, seed=5)]
    directory.mkdir(parents=True)
    per_file = docs // files
    for index in range(files):
        rows = range(index * per_file, (index + 1) * per_file)
        texts = [" ".join(german[r * 3 : r * 3 + 3]) for r in rows]
        pq.write_table(pa.table({"id": list(rows), "text": texts}), directory / f"{index}.parquet")
    return german[: files * per_file * SENTENCES_PER_DOC]


def in_process_rate(model: str, sentences: list[str], beam: int, batch: int) -> float:
    torch.set_num_threads(1)
    translator = Translator(model, settings=DecodeSettings(beam_size=beam, batch_size=batch))
    started = time.perf_counter()
    translator.translate(sentences)
    return len(sentences) / (time.perf_counter() - started)


def bulk_run(model: str | None, store: Path, output: Path, options: BulkOptions) -> dict:
    manifest = bulk_translate(model, str(store), str(output), options)
    return {**manifest, "rate": manifest["sentences"] / manifest["seconds"]}


def start_serve(model: str, replicas: int, beam: int) -> None:
    from ray import serve

    from pipeline.serve import APP_NAME, build_app

    serve.start(http_options={"host": "127.0.0.1", "port": 0})
    app = build_app(
        model, num_cpus=0.9, min_replicas=replicas, max_replicas=replicas, beam_size=beam
    )
    serve.run(app, name=APP_NAME, route_prefix="/bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model dir (default: train the tests' tiny model)")
    parser.add_argument("--docs", type=int, default=200, help="documents in the x1 store")
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs = bulk actors")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rows-per-fragment", type=int, default=50)
    parser.add_argument(
        "--size", choices=["tiny", "reference"], default="tiny", help="model built without --model"
    )
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench_bulk_"))
    model = args.model or str(_build_model(work / "model", args.size))
    small = write_store(work / "x1", args.docs, files=2)
    large = write_store(work / "x10", args.docs * 10, files=20)
    baseline = in_process_rate(model, large, args.beam_size, args.batch_size)

    ray.init(num_cpus=args.cpus, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    options = BulkOptions(
        text_column="text",
        id_column="id",
        decoding=DecodeSettings(beam_size=args.beam_size, batch_size=args.batch_size),
        rows_per_fragment=args.rows_per_fragment,
        workers=args.cpus,
        show_progress=False,
    )
    runs = {
        "bulk x1": bulk_run(model, work / "x1", work / "out1", options),
        "bulk x10": bulk_run(model, work / "x10", work / "out10", options),
    }
    if not args.skip_serve:
        start_serve(model, replicas=args.cpus, beam=args.beam_size)
        serve_options = replace(options, via_serve=True, workers=2)
        runs["via-serve x10"] = bulk_run(None, work / "x10", work / "out_serve", serve_options)
    report(baseline, len(small), len(large), runs, args.cpus)


def _build_model(directory: Path, size: str) -> Path:
    """The tests' tiny trained model, or the same dir with the reference-size network
    (configs/multi30k_de_en.yaml) in untrained weights: it never emits eos, so every
    hypothesis decodes to the length limit, as decode-heavy as real long outputs."""
    from models.config import ModelConfig
    from models.model_dir import save_model
    from models.seq2seq import Seq2Seq
    from tests.conftest import build_tiny_model_dir

    torch.set_num_threads(2)
    build_tiny_model_dir(directory)
    if size == "reference":
        vocab = load_vocab_size(directory)
        torch.manual_seed(0)
        save_model(
            Seq2Seq(ModelConfig(src_vocab_size=vocab, tgt_vocab_size=vocab)).eval(), directory
        )
    return directory


def load_vocab_size(directory: Path) -> int:
    from pipeline.corpus.tokenizer import SRC_SPM, Tokenizer

    return Tokenizer(directory / SRC_SPM).vocab_size


def report(baseline: float, small: int, large: int, runs: dict, cpus: int) -> None:
    print(f"\nsentences: x1 {small}, x10 {large}; Ray CPUs {cpus}; in-process: 1 thread\n")
    print("| run | sentences/s | per CPU vs in-process | actor peak RSS (MiB) |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| in-process Translator, 1 thread | {baseline:.1f} | 1.00 | - |")
    for name, run in runs.items():
        per_cpu = run["rate"] / cpus / baseline
        label = f"{name} ({run['seconds']:.1f} s end to end)"
        print(f"| {label} | {run['rate']:.1f} | {per_cpu:.2f} | {run['worker_peak_rss_mib']} |")
    # The in-process figure excludes loading the model; bulk's end-to-end figures include
    # starting the actors and loading it in each. x10 minus x1 is the same job on 9x more
    # sentences, so the difference in time is what those extra sentences cost, start-up out.
    x1, x10 = runs["bulk x1"], runs["bulk x10"]
    extra = (x10["sentences"] - x1["sentences"]) / (x10["seconds"] - x1["seconds"])
    start_up = x1["seconds"] - x1["sentences"] / extra
    label = "bulk, x10 minus x1 (start-up excluded)"
    print(f"| {label} | {extra:.1f} | {extra / cpus / baseline:.2f} | - |")
    print(f"\nfixed cost of a bulk job (start-up, model loading, tail): {start_up:.1f} s")


if __name__ == "__main__":
    main()
