"""`nmt average`: checkpoint averaging of a training run (`pipeline.train.average`)."""

from __future__ import annotations

import argparse

from pipeline.train.average import average_run

EXAMPLES = """examples:
  nmt average --run runs/exp/de-en --last 5 --out runs/exp/de-en-avg5
  nmt average --run runs/exp/de-en --best 3 --out runs/exp/de-en-best3
  nmt evaluate --model runs/exp/de-en --model runs/exp/de-en-avg5 --src test.de --ref test.en

The run keeps the checkpoints its training config says: the best `checkpoints_to_keep` by
validation BLEU (3 by default), or every one when `average_last` is set. --last counts the
checkpoints the run still has. The output is a model dir like the run's model/: every
command that takes --model takes it.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # dest: `args.run` is the command's entry point (pipeline.cli)
    parser.add_argument(
        "--run", dest="run_dir", required=True, help="a training run dir (path or URI)"
    )
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--last", type=int, metavar="N", help="average the last N checkpoints")
    choice.add_argument(
        "--best", type=int, metavar="N", help="average the N best by validation BLEU"
    )
    parser.add_argument("--out", required=True, help="the model dir to write (must not exist)")
    parser.add_argument(
        "--data",
        help="the run's prepared dataset, for its tokenizers when the run has no model/ yet",
    )


def run(args: argparse.Namespace) -> int:
    result = average_run(args.run_dir, args.out, last=args.last, best=args.best, data=args.data)
    print(result.describe())
    return 0
