"""`nmt score`: the log-probability a model gives each (source, translation) pair."""

from __future__ import annotations

import argparse
import json

from pipeline.errors import UserError
from pipeline.translate.cli import add_decoding_arguments, load_translator

EXAMPLES = """examples:
  nmt score --model runs/exp/de-en --src test.de.gz --tgt test.en.gz   # sum<TAB>mean per line
  nmt score --model runs/exp/de-en --src test.de --tgt hyp.en --json   # one JSON object a line
  nmt score --model runs/exp/a+runs/exp/b --src test.de --tgt hyp.en   # an ensemble's scores

Each line gets log P(translation | source) summed over its target pieces and the final eos,
then the same per predicted piece (the sum over pieces + 1): the model's training loss on
the pair, negated. Pairs are scored in batches of --batch-size, one teacher-forced pass
each. A blank source line is an error; a blank translation scores the eos alone.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="model dir or training run dir; A+B: an ensemble"
    )
    parser.add_argument("--src", required=True, help="source sentences, one a line (.gz ok)")
    parser.add_argument("--tgt", required=True, help="their translations, line-aligned (.gz ok)")
    parser.add_argument("--output", help="where scores go (default: stdout)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_decoding_arguments(parser, omit=("beam_size", "n_best", "alpha", "beam_prune"))


def run(args: argparse.Namespace) -> int:
    from pipeline.corpus.textfile import open_text, read_lines

    sources, targets = read_lines(args.src), read_lines(args.tgt)
    if len(sources) != len(targets):
        raise UserError(
            f"--src {args.src} has {len(sources)} lines but --tgt {args.tgt} has "
            f"{len(targets)}: they must be line-aligned"
        )
    translator = load_translator(args.model, args)
    scores = translator.score(sources, targets)
    with open_text(args.output, "w") as output:
        for score in scores:
            if args.json:
                line = json.dumps(
                    {
                        "log_prob": round(score.log_prob, 4),
                        "mean_log_prob": round(score.mean_log_prob, 4),
                        "predictions": score.predictions,
                    }
                )
            else:
                line = f"{score.log_prob:.4f}\t{score.mean_log_prob:.4f}"
            output.write(line + "\n")
    return 0
