"""`nmt`: the command line. Each subcommand lives in its own module with `add_arguments`
and `run`; only the chosen one is imported, so `nmt --help` stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.errors import UserError

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("pipeline.demo", "prepare, train, translate, serve, bulk-translate: all in minutes"),
    "prepare": (
        "pipeline.prepare.cli",
        "tokenize a parallel corpus into Parquet blocks (Ray Data)",
    ),
    "train": ("pipeline.train.cli", "train a model on prepared data (Ray Train, DDP)"),
    "average": ("pipeline.train.average_cli", "average a training run's checkpoints into a model"),
    "translate": ("pipeline.translate.cli", "translate text from stdin or a file"),
    "evaluate": ("pipeline.translate.evaluate", "score a model with sacreBLEU and chrF"),
    "score": ("pipeline.translate.score_cli", "score given translations: log-probabilities"),
    "candidates": (
        "pipeline.translate.candidates_cli",
        "build a model's candidate list (faster decoding over a shortlist)",
    ),
    "serve": ("pipeline.serve.cli", "run the autoscaled HTTP translation endpoint (Ray Serve)"),
    "bulk-translate": ("pipeline.bulk.cli", "translate a Parquet document store (Ray Data)"),
    "chat": ("pipeline.chat.cli", "talk with a chat model in the terminal"),
}

EXAMPLES = """examples:
  nmt demo
  nmt prepare --src-lang de --tgt-lang en --train ../shared/data/multi30k/train \\
      --valid ../shared/data/multi30k/val --test ../shared/data/multi30k/test_2016_flickr \\
      --out runs/data/multi30k-de-en
  nmt train --data runs/data/multi30k-de-en --out runs/exp/de-en \\
      --config configs/multi30k_de_en.yaml
  echo "Ein Mann fährt Fahrrad." | nmt translate --model runs/exp/de-en
  nmt evaluate --model runs/exp/de-en --src ../shared/data/multi30k/test_2016_flickr.de.gz \\
      --ref ../shared/data/multi30k/test_2016_flickr.en.gz
  nmt serve --model runs/exp/de-en --port 8000
  nmt bulk-translate --model runs/exp/de-en --input 'store/*.parquet' --output out/ \\
      --text-column text
  nmt chat --model runs/chat/en

Run `nmt COMMAND --help` for a command's options and examples.
"""


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmt",
        description="Attention encoder-decoder NMT (Bahdanau et al. 2014) on Ray.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == command:
            module = importlib.import_module(module_name)
            sub.epilog = getattr(module, "EXAMPLES", None)
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except UserError as error:
        print(f"nmt {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `nmt ... | head` closed the pipe: not an error worth a trace
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
