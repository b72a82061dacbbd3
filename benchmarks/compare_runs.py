"""Training runs side by side: validation BLEU against minutes and against target tokens
trained, from each run's `metrics.csv` (what `nmt train --out RUN` writes), as one plot and
a Markdown table. For ablations trained at the same time on one machine, e.g.

    .venv/bin/python benchmarks/compare_runs.py runs/exp/abl-recipe runs/exp/abl-batch1000 \
        --out docs/images/ablations.png

A run is named by its directory; `--label` renames them in order. Reading only, never a test.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run dirs (each with metrics.csv)")
    parser.add_argument("--label", action="append", help="a name per run, in order")
    parser.add_argument("--out", type=Path, required=True, help="the plot (PNG)")
    parser.add_argument("--title", default="validation BLEU (greedy) during training")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.runs):
        parser.error(f"{len(args.label)} --label for {len(args.runs)} runs")
    return args


def validations(run: Path) -> list[dict[str, float]]:
    """The rows of RUN/metrics.csv that carry a validation BLEU, as numbers."""
    path = run / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (is {run} a training run's --out?)")
    with path.open() as lines:
        rows = [row for row in csv.DictReader(lines) if row.get("valid_bleu")]
    keys = ("step", "elapsed_seconds", "target_tokens", "valid_bleu")
    return [{key: float(row[key]) for key in keys} for row in rows]


def table(curves: dict[str, list[dict[str, float]]]) -> str:
    lines = [
        "| run | validations | steps | minutes | target tokens | last valid BLEU | best |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, rows in curves.items():
        last = rows[-1]
        best = max(row["valid_bleu"] for row in rows)
        lines.append(
            f"| {label} | {len(rows)} | {last['step']:,.0f} | {last['elapsed_seconds'] / 60:.1f} "
            f"| {last['target_tokens'] / 1e6:.2f} M | {last['valid_bleu']:.2f} | {best:.2f} |"
        )
    return "\n".join(lines)


def plot(curves: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_time, by_tokens) = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for label, rows in curves.items():
        bleu = [row["valid_bleu"] for row in rows]
        by_time.plot([row["elapsed_seconds"] / 60 for row in rows], bleu, marker=".", label=label)
        by_tokens.plot([row["target_tokens"] / 1e6 for row in rows], bleu, marker=".")
    by_time.set(xlabel="minutes (validation included)", ylabel="BLEU")
    by_tokens.set(xlabel="target tokens trained (millions)")
    by_time.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    labels = args.label or [run.name for run in args.runs]
    curves = {label: validations(run) for label, run in zip(labels, args.runs, strict=True)}
    empty = [label for label, rows in curves.items() if not rows]
    if empty:
        raise SystemExit(f"no validation rows yet in: {', '.join(empty)}")
    plot(curves, args.out, args.title)
    print(table(curves))
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
