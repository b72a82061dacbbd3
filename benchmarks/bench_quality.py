"""Quality at equal time, side by side with the reference toolkit (Joey NMT 2.3.0) on this
machine: each trains for --minutes as a user would run it (its own validation inside the
budget, the checkpoint it picks by validation BLEU), then both decode test_2016_flickr and
the validation set, greedy and beam 5; BLEU and chrF2 are sacrebleu's (13a) against the raw
references, beside each search's sentences/s (batch 64 or --batch-size, model loading
excluded: the reference's own "Generation took"), so the decoding ratio is read at trained
quality.

    .venv/bin/python benchmarks/bench_quality.py --minutes 35
    .venv/bin/python benchmarks/bench_quality.py --minutes 35 --only reference
    .venv/bin/python benchmarks/bench_quality.py --minutes 35 --only ours --config my.yaml
    .venv/bin/python benchmarks/bench_quality.py --decode-only --our-model runs/exp/de-en/model
    .venv/bin/python benchmarks/bench_quality.py --decode-only --batch-size 1 \
        --splits test_2016_flickr --precision int8

The reference is Joey NMT with the peer configuration (`../shared/peers/joeynmt`), installed as
bench_reference.py installs it (the same --cache-dir venv); ours is `nmt train --config
RECIPE --time-budget MINUTES` and the Translator as `nmt evaluate` runs it. The two train one
after the other, so run it on an otherwise quiet machine: each row records the mean number of
runnable threads while it trained. The table goes to --out (Markdown, a JSON beside it; one
toolkit's rows are kept when the other is run later with --only). A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench_reference import (
    DEFAULT_CACHE,
    MULTI30K,
    PEER_DIR,
    RECIPE,
    ROOT,
    SEARCHES,
    TEST,
    RunQueue,
    check_shared,
    fresh_train,
    machine,
    ours_translate,
    prepare_ours,
)
from joeynmt_reference import Reference

SPLITS = {TEST: TEST, "valid": "val"}  # row name: Multi30K file stem
DEFAULT_OUT = ROOT / "runs" / "bench_quality" / "results.md"


@dataclass
class Score:
    toolkit: str
    split: str
    search: str
    bleu: float
    chrf: float
    sentences_per_second: float  # search only: model loading excluded (Joey's own timing)
    signature: str


@dataclass
class Training:
    toolkit: str
    minutes: float  # wall time of the training command (start-up and validation included)
    steps: int
    runnable: float  # mean runnable threads on the machine while it trained
    how: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=35, help="training time of each (35)")
    parser.add_argument("--only", choices=("reference", "ours"), help="one toolkit")
    parser.add_argument("--config", type=Path, default=RECIPE, help="our training config")
    parser.add_argument(
        "--decode-only",
        action="store_true",
        help="decode with the models already trained (in --cache-dir, or --our-model)",
    )
    parser.add_argument("--our-model", type=Path, help="decode this model dir as ours")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="sentences a decoding batch, both (64)"
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="our decoding precision (fp32); the reference decodes in fp32",
    )
    parser.add_argument(
        "--splits", nargs="+", choices=SPLITS, default=list(SPLITS), help="splits decoded"
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="venv, data, runs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both (2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the Markdown table")
    return parser.parse_args(argv)


def score(toolkit: str, split: str, search: str, hyps: list[str], seconds: float) -> Score:
    """BLEU and chrF2 of `hyps` against the split's references, and the decoding speed."""
    import sacrebleu

    refs = references(split)
    bleu, chrf = sacrebleu.metrics.BLEU(tokenize="13a"), sacrebleu.metrics.CHRF()
    b, c = bleu.corpus_score(hyps, [refs]), chrf.corpus_score(hyps, [refs])
    speed = round(len(hyps) / seconds, 1)
    result = Score(
        toolkit,
        split,
        search,
        round(b.score, 2),
        round(c.score, 2),
        speed,
        str(bleu.get_signature()),
    )
    print(f"   {toolkit} {split} {search}: BLEU {result.bleu}, {speed} sentences/s", flush=True)
    return result


def references(split: str) -> list[str]:
    from pipeline.corpus.textfile import read_lines

    return read_lines(MULTI30K / f"{SPLITS[split]}.en.gz")


# ---------------------------------------------------------------- the reference


def run_reference(args: argparse.Namespace) -> tuple[Training | None, list[Score]]:
    reference = Reference(
        PEER_DIR, args.cache_dir / "joeynmt-venv", args.cache_dir / "joeynmt-quality", args.threads
    )
    reference.install()
    reference.prepare_data(MULTI30K)
    reference.write_configs(validate=True, decode_batch=args.batch_size)
    training = None if args.decode_only else train_reference(reference, args)
    scores = []
    for split in args.splits:
        source = reference.data / f"{SPLITS[split]}.de"
        for search in SEARCHES:
            log = args.out.parent / f"joey-{split}-{search}.log"
            decoded = reference.translate(search, source, log)
            scores.append(
                score("Joey NMT 2.3.0", split, search, decoded.hypotheses, decoded.seconds)
            )
    return training, scores


def train_reference(reference: Reference, args: argparse.Namespace) -> Training:
    log = args.out.parent / "joey-train.log"
    print(f"== Joey NMT: training {args.minutes:g} minutes (log: {log})", flush=True)
    with RunQueue() as queue:
        joey = reference.train(args.minutes * 60, log)
    how = "its config, validation every 100 steps inside the budget, best.ckpt"
    return Training("Joey NMT 2.3.0", joey.seconds / 60, joey.steps, queue.mean, how)


# ---------------------------------------------------------------- ours


def run_ours(args: argparse.Namespace) -> tuple[Training | None, list[Score]]:
    run = args.cache_dir / "ours-quality"
    training = None if args.decode_only else train_ours(args, run)
    model = args.our_model or run / "model"
    scores = [
        ours_score(model, split, search, args) for split in args.splits for search in SEARCHES
    ]
    return training, scores


def train_ours(args: argparse.Namespace, run: Path) -> Training:
    """`nmt train`'s library entry with the config as given and a time budget, a fresh run."""
    from pipeline.train.config import TrainConfig

    data = args.cache_dir / "ours-data"
    prepare_ours(data)
    config = TrainConfig.from_yaml(args.config).override(
        time_budget_minutes=args.minutes, threads_per_worker=args.threads
    )
    print(f"== ours: {args.config.name}, {args.minutes:g} minutes, into {run}", flush=True)
    with RunQueue() as queue:
        started = time.perf_counter()
        summary = fresh_train(data, run, config)
        minutes = (time.perf_counter() - started) / 60
    how = f"nmt train --config {args.config.name}, validation inside the budget, {summary.exported}"
    return Training("ours", minutes, summary.steps, queue.mean, how)


def ours_score(model_dir: Path, split: str, search: str, args: argparse.Namespace) -> Score:
    from pipeline.corpus.textfile import read_lines

    sources = read_lines(MULTI30K / f"{SPLITS[split]}.de.gz")
    hypotheses, seconds = ours_translate(
        model_dir, search, sources, args.batch_size, args.precision
    )
    toolkit = "ours" if args.precision == "fp32" else f"ours ({args.precision})"
    return score(toolkit, split, search, hypotheses, seconds)


# ---------------------------------------------------------------- the report


def render(record: dict) -> str:
    lines = [f"Machine: {record['machine']['cpu']}, {record['threads']} threads.", ""]
    lines += [
        "| toolkit | trained (min) | steps | runnable threads | how |",
        "|---|---:|---:|---:|---|",
    ]
    for t in record["training"].values():
        lines.append(
            f"| {t['toolkit']} | {t['minutes']:.1f} | {t['steps']:,} | {t['runnable']:.2f} "
            f"| {t['how']} |"
        )
    batch = record.get("batch_size", 64)
    lines += ["", f"| toolkit | split | search, batch {batch} | BLEU | chrF2 | sentences/s |"]
    lines += ["|---|---|---|---:|---:|---:|"]
    for toolkit in record["scores"]:
        for s in record["scores"][toolkit]:
            lines.append(
                f"| {toolkit} | {s['split']} | {s['search']} | {s['bleu']:.2f} | {s['chrf']:.2f} "
                f"| {s['sentences_per_second']:.1f} |"
            )
    signatures = {s["signature"] for rows in record["scores"].values() for s in rows}
    lines += ["", *(f"BLEU signature: `{sig}`" for sig in sorted(signatures))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # see bench_reference.main
    check_shared()
    args.cache_dir, args.out = args.cache_dir.expanduser().resolve(), args.out.resolve()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    saved = args.out.with_suffix(".json")
    record = json.loads(saved.read_text()) if saved.is_file() else {"training": {}, "scores": {}}
    record |= {"machine": machine(), "threads": args.threads, "batch_size": args.batch_size}
    runs = {"reference": run_reference, "ours": run_ours}
    for name, run in runs.items():
        if args.only in (None, name):
            started = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
            training, scores = run(args)
            if training is not None:  # --decode-only keeps the training rows as they were
                record["training"][name] = asdict(training) | {"started": started}
            record["scores"][name] = [asdict(s) for s in scores]
            saved.write_text(json.dumps(record, indent=2) + "\n")
            args.out.write_text(render(record) + "\n")
    print(f"\n{render(record)}\nwritten to {args.out} and {saved}", flush=True)


if __name__ == "__main__":
    main()
