"""`nmt train`: the command line of training (`pipeline.train.trainer`)."""

from __future__ import annotations

import argparse

from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train_model

EXAMPLES = """examples:
  nmt train --data runs/data/multi30k-de-en --out runs/exp/de-en \\
      --config configs/multi30k_de_en.yaml
  nmt train --data runs/data/multi30k-de-en --out runs/exp/de-en --workers 2 --max-steps 2000
  nmt train --data runs/data/multi30k-de-en --out runs/exp/de-en --resume   # continue a run
  nmt train --data runs/data/multi30k-de-en --out runs/exp/de-en --gpu --workers 4 --time-budget 60
  nmt train --data s3://bucket/data/multi30k-de-en --out s3://bucket/exp/de-en --workers 4
  nmt train --data runs/data/multi30k-de-en --out runs/exp/de-en --average-last 5

Input noise and subword regularization are settings of the YAML config (noise:,
subword_sampling:; see docs/train.md).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", required=True, help="a dataset dir written by `nmt prepare` (path or URI)"
    )
    parser.add_argument(
        "--out", required=True, help="the run dir (model/, metrics, checkpoints; path or URI)"
    )
    parser.add_argument("--config", help="YAML training config (configs/*.yaml); flags override")
    parser.add_argument("--workers", type=int, help="data-parallel workers (default 1)")
    parser.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker")
    parser.add_argument("--cpus-per-worker", type=float, help="default: leave one CPU for Ray Data")
    parser.add_argument(
        "--threads-per-worker",
        type=int,
        help="torch threads per worker (default: the node's cores / workers)",
    )
    limits = parser.add_mutually_exclusive_group()
    limits.add_argument("--max-steps", type=int)
    limits.add_argument("--max-epochs", type=int)
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="MINUTES",
        help="stop cleanly (with a final checkpoint) after this many minutes",
    )
    parser.add_argument("--valid-every", type=int, help="validate and checkpoint every N steps")
    parser.add_argument(
        "--average-last",
        type=int,
        metavar="N",
        help="at the end, average the last N checkpoints and export the average if it "
        "validates better than the best checkpoint (keeps every checkpoint)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="require a previous run in --out to continue (re-running the same "
        "command resumes anyway when checkpoints exist)",
    )


def run(args: argparse.Namespace) -> int:
    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    config = config.override(
        workers=args.workers,
        gpu=args.gpu,
        cpus_per_worker=args.cpus_per_worker,
        threads_per_worker=args.threads_per_worker,
        max_steps=args.max_steps,
        max_epochs=args.max_epochs,
        time_budget_minutes=args.time_budget,
        valid_every=args.valid_every,
        average_last=args.average_last,
    )
    summary = train_model(args.data, args.out, config, resume=args.resume)
    print(summary.describe())
    return 0
