"""`nmt translate`: one translation per input line, in order, blank lines kept blank."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError

if TYPE_CHECKING:  # imported lazily at run time: torch is slow to import, --help should not be
    from pipeline.translator import Translation, Translator

EXAMPLES = """examples:
  echo "Ein Mann fährt Fahrrad." | nmt translate --model runs/exp/de-en
  nmt translate --model runs/exp/de-en --input test.de.gz --output test.en --beam-size 10
  nmt translate --model runs/exp/de-en --n-best 3 < test.de    # text<TAB>score, 3 per line
  echo "Ein Mann fährt Fahrrad." | nmt translate --model runs/exp/de-en --attention-plot a.png
  nmt translate --model runs/exp/de-en --input test.de --attention-plot heatmaps/  # one per line

--model takes a model dir or a training run dir (its model/ is used). --attention-plot
ending in .png draws the first non-blank line; anything else is a directory that gets
line-000001.png, line-000002.png, ... for every non-blank line.
"""

# The Translator's beam pruning (defined here so that --help need not import torch): beam
# extensions whose log-probability trails the step's best by more than this are dropped
# (`models.search.beam_search`'s `prune`). On the README's models it decodes a third fewer
# rows than the exact beam, at the same BLEU within +-0.25. 0 is exact beam search.
DEFAULT_BEAM_PRUNE = 2.0

# The precision of decoding's matrix products (`Translator(precision=...)`), named as in the
# training config. bf16 runs them under torch.autocast: about twice the matmul throughput on
# CPUs with AVX512-BF16 or AMX and on recent GPUs, while the decoder state, the softmaxes
# and the scores stay float32.
PRECISIONS = ("fp32", "bf16")
DEFAULT_PRECISION = "fp32"

# Lines translated together: the Translator sorts each chunk by length before batching, and
# output is written chunk by chunk, so a large file neither waits nor piles up in memory.
CHUNK_LINES = 2048


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """The search options `translate` and `evaluate` share (not --model: evaluate takes several)."""
    parser.add_argument("--beam-size", type=int, default=5, help="1 is greedy (default: 5)")
    parser.add_argument(
        "--alpha", type=float, default=0.6, help="length penalty exponent (default: 0.6)"
    )
    add_beam_prune_argument(parser)
    add_precision_argument(parser)
    parser.add_argument(
        "--batch-size", type=int, default=64, help="sentences decoded together (default: 64)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")


def add_beam_prune_argument(parser: argparse.ArgumentParser) -> None:
    """--beam-prune, for every command that decodes (translate, evaluate, serve, bulk)."""
    parser.add_argument(
        "--beam-prune",
        type=float,
        default=DEFAULT_BEAM_PRUNE,
        metavar="DELTA",
        help="drop beam extensions more than DELTA (log-probability) behind the step's best; "
        "0 is exact beam search; not applied with --n-best above 1 (default: %(default)s)",
    )


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision, for every command that decodes (translate, evaluate, serve, bulk)."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help="of the matrix products: bf16 is faster on CPUs with AVX512-BF16 or AMX and on "
        "recent GPUs, at the same BLEU within 0.11 on the README's models (default: %(default)s)",
    )


def check_precision(value: str) -> None:
    """For the library entry points (argparse already checks --precision's choices)."""
    if value not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {value!r}")


def check_beam_prune(value: float) -> None:
    if value < 0:
        raise UserError("--beam-prune must be 0 (exact beam search) or more")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="model dir or training run dir (path or URI)"
    )
    parser.add_argument("--input", help="text file, one sentence a line, .gz ok (default: stdin)")
    parser.add_argument("--output", help="where translations go, .gz ok (default: stdout)")
    parser.add_argument(
        "--n-best",
        type=int,
        default=1,
        metavar="K",
        help="write K candidates per line as text<TAB>score<TAB>text<TAB>score...",
    )
    parser.add_argument(
        "--attention-plot",
        metavar="PNG_OR_DIR",
        help="heatmap of the first sentence (a .png path) or of every sentence (a directory)",
    )
    add_decoding_arguments(parser)


def load_translator(model: str, args: argparse.Namespace) -> Translator:
    """A Translator for `model` with the decoding options in `args`, checked first."""
    import torch

    from pipeline.translator import Translator

    for option in ("beam_size", "batch_size"):
        if getattr(args, option) < 1:
            raise UserError(f"--{option.replace('_', '-')} must be at least 1")
    check_beam_prune(args.beam_prune)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Translator(
        model,
        device=device,
        beam_size=args.beam_size,
        alpha=args.alpha,
        batch_size=args.batch_size,
        beam_prune=args.beam_prune,
        precision=args.precision,
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.textfile import iter_lines, open_text

    translator = load_translator(args.model, args)
    if not 1 <= args.n_best <= args.beam_size:
        raise UserError(f"--n-best must be between 1 and --beam-size ({args.beam_size})")
    plots = AttentionPlots(args.attention_plot, translator) if args.attention_plot else None
    # One line at a time from a terminal, so each typed sentence is answered at once.
    chunk_lines = 1 if args.input is None and sys.stdin.isatty() else CHUNK_LINES
    with open_text(args.output, "w") as output:
        first_line = 1
        for chunk in _chunks(iter_lines(args.input), chunk_lines):
            want_attention = plots is not None and plots.wants_more
            translations = translator.translate(
                chunk, n_best=args.n_best, return_attention=want_attention
            )
            output.writelines(
                format_line(source, translation, args.n_best) + "\n"
                for source, translation in zip(chunk, translations, strict=True)
            )
            output.flush()
            if want_attention:
                plots.draw(first_line, chunk, translations)
            first_line += len(chunk)
    return 0


def format_line(source: str, translation: Translation, n_best: int) -> str:
    """The best translation, or with n_best > 1 its candidates as text<TAB>score pairs.
    A blank input line gives a blank output line either way."""
    if n_best == 1 or not source.strip():
        return translation.text
    return "\t".join(f"{text}\t{score:.4f}" for text, score in translation.alternatives)


class AttentionPlots:
    """Draws heatmaps for translated lines: the first non-blank line into one PNG, or every
    non-blank line into a directory."""

    def __init__(self, target: str, translator: Translator) -> None:
        if translator.model.config.attention == "none":
            raise UserError(
                f"{translator.name} has no attention (a fixed-context baseline): nothing to plot"
            )
        self.target = Path(target)
        self.single = self.target.suffix.lower() == ".png"
        self.drawn = 0

    @property
    def wants_more(self) -> bool:
        return not (self.single and self.drawn)

    def draw(self, first_line: int, sources: list[str], translations: list[Translation]) -> None:
        from pipeline.plots import attention_heatmap

        for line, source, translation in zip(
            itertools.count(first_line), sources, translations, strict=False
        ):
            if not translation.target_pieces or not self.wants_more:
                continue  # a blank line, or an empty translation: nothing to draw
            path = self.target if self.single else self.target / f"line-{line:06d}.png"
            title = f"{source}\n→ {translation.text}"
            attention_heatmap(
                translation.source_pieces,
                translation.target_pieces,
                translation.attention,
                path,
                title,
            )
            self.drawn += 1


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(lines)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
