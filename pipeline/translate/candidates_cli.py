"""`nmt candidates`: build a model's candidate list for faster decoding."""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  nmt candidates --model runs/exp/de-en --data runs/data/multi30k-de-en
  nmt evaluate --model runs/exp/de-en --src test.de.gz --ref test.en.gz \\
      --candidates-frequent 200 --candidates-per-source 10

Writes candidates.npz into the model dir: the target pieces by frequency in the training
data and, per source piece, its likeliest translations by IBM Model 1 (EM over the
training pairs). Decoding with --candidates-frequent K --candidates-per-source K' (translate,
evaluate, serve, bulk-translate) then scores, per batch, only the K most frequent pieces,
the K' likeliest translations of each source piece in the batch, and unk/bos/eos.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.translate.candidates import CandidateSettings

    defaults = CandidateSettings()
    parser.add_argument("--model", required=True, help="model dir or training run dir")
    parser.add_argument("--data", required=True, help="the prepared data it was trained on")
    parser.add_argument(
        "--frequent",
        type=int,
        default=defaults.frequent,
        help="most frequent target pieces kept (default: %(default)s)",
    )
    parser.add_argument(
        "--per-source",
        type=int,
        default=defaults.per_source,
        help="translations kept per source piece (default: %(default)s)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=defaults.iterations,
        help="EM iterations of IBM Model 1 (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.translate.candidates import CandidateSettings, build_candidates

    settings = CandidateSettings(args.frequent, args.per_source, args.iterations)
    target = build_candidates(args.model, args.data, settings)
    print(f"wrote {target} ({settings.frequent} frequent, {settings.per_source} per source)")
    return 0
