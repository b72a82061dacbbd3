"""`nmt translate`: one translation per input line, in order, blank lines kept blank."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.translate.settings import DecodeSettings

if TYPE_CHECKING:  # imported lazily at run time: torch is slow to import, --help should not be
    from pipeline.translate.translator import Translation, Translator

EXAMPLES = """examples:
  echo "Ein Mann fährt Fahrrad." | nmt translate --model runs/exp/de-en
  nmt translate --model runs/exp/de-en --input test.de.gz --output test.en --beam-size 10
  nmt translate --model runs/exp/de-en --n-best 3 < test.de    # text<TAB>score, 3 per line
  echo "Ein Mann fährt Fahrrad." | nmt translate --model runs/exp/de-en --attention-plot a.png
  nmt translate --model runs/exp/de-en --input test.de --attention-plot heatmaps/  # one per line
  nmt translate --model runs/exp/de-en+runs/exp/de-en-2 --input test.de   # an ensemble of two
  printf 'Hund\tpooch\n' > terms.tsv
  echo "Ein Hund läuft." | nmt translate --model runs/exp/de-en --glossary terms.tsv
  nmt translate --model runs/exp/de-en --input test.de --target-prefix starts.en  # line-aligned
  nmt translate --model runs/exp/de-en --input test.de --signals   # text<TAB>signals as JSON
  nmt translate --model runs/exp/de-en --input test.de --precision int8   # quantized, CPU

--model takes a model dir or a training run dir (its model/ is used); A+B is the ensemble
of A and B (the mean of their log-probabilities at every step; they must share their
vocabularies), whose attention plot shows the mean of their attention. --attention-plot
ending in .png draws the first non-blank line; anything else is a directory that gets
line-000001.png, line-000002.png, ... for every non-blank line. --glossary is a TSV of
source<TAB>target terms: each output contains the target term of every source term its
line contains (constrained beam search; greedy runs it with a beam of at least 4).
--target-prefix holds one prefix per input line (blank: none): each output starts with it.
"""

# Lines translated together: the Translator sorts each chunk by length before batching, and
# output is written chunk by chunk, so a large file neither waits nor piles up in memory.
CHUNK_LINES = 2048


def add_decoding_arguments(parser: argparse.ArgumentParser, omit: tuple[str, ...] = ()) -> None:
    """The decoding flags and --device, shared by `translate` and `evaluate`."""
    DecodeSettings.add_arguments(parser, omit=omit)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="model dir or training run dir (path or URI); A+B: the ensemble of A and B",
    )
    parser.add_argument("--input", help="text file, one sentence a line, .gz ok (default: stdin)")
    parser.add_argument("--output", help="where translations go, .gz ok (default: stdout)")
    parser.add_argument(
        "--attention-plot",
        metavar="PNG_OR_DIR",
        help="heatmap of the first sentence (a .png path) or of every sentence (a directory)",
    )
    add_control_arguments(parser)
    parser.add_argument(
        "--signals",
        action="store_true",
        help="compute each translation's quality signals and append them as JSON after a "
        "TAB (they cost beam search some speed, so they are off without it)",
    )
    add_decoding_arguments(parser)


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    """--glossary and --target-prefix, shared by `translate` and `evaluate`."""
    parser.add_argument(
        "--glossary",
        metavar="TSV",
        help="source<TAB>target terms: every output contains the target term of each source "
        "term in its input",
    )
    parser.add_argument(
        "--target-prefix",
        metavar="FILE",
        help="one target prefix per input line (blank: none); each output starts with its own",
    )


class Controls:
    """The glossary and the prefixes of a run, served per chunk of input lines."""

    def __init__(self, args: argparse.Namespace) -> None:
        from pipeline.translate.glossary import read_glossary

        self.glossary = read_glossary(args.glossary) if args.glossary else None
        self.prefix_file = args.target_prefix
        self.prefixes = None
        if args.target_prefix:
            from pipeline.corpus.textfile import iter_lines

            self.prefixes = iter_lines(args.target_prefix)

    def options(self, chunk: list[str]) -> dict:
        """`Translator.translate` keywords for the next `chunk` of input lines."""
        from pipeline.translate.glossary import constraints_for

        options = {}
        if self.glossary:
            options["constraints"] = [constraints_for(text, self.glossary) for text in chunk]
        if self.prefixes is not None:
            prefixes = list(itertools.islice(self.prefixes, len(chunk)))
            if len(prefixes) < len(chunk):
                raise UserError(
                    f"--target-prefix {self.prefix_file} has fewer lines than the input: "
                    "give one prefix per input line"
                )
            options["prefixes"] = prefixes
        return options


def load_translator(model: str, args: argparse.Namespace) -> Translator:
    """A Translator for `model` with the decoding settings in `args` (checked first)."""
    import torch

    from pipeline.translate.translator import Translator

    decoding = DecodeSettings.from_args(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Translator(model, device=device, settings=decoding)


def run(args: argparse.Namespace) -> int:
    from pipeline.corpus.textfile import iter_lines, open_text

    translator = load_translator(args.model, args)
    plots = AttentionPlots(args.attention_plot, translator) if args.attention_plot else None
    controls = Controls(args)
    # One line at a time from a terminal, so each typed sentence is answered at once.
    chunk_lines = 1 if args.input is None and sys.stdin.isatty() else CHUNK_LINES
    with open_text(args.output, "w") as output:
        first_line = 1
        for chunk in _chunks(iter_lines(args.input), chunk_lines):
            want_attention = plots is not None and plots.wants_more
            translations = translator.translate(
                chunk, return_attention=want_attention, **controls.options(chunk)
            )
            output.writelines(
                format_line(source, translation, args.n_best, args.signals) + "\n"
                for source, translation in zip(chunk, translations, strict=True)
            )
            output.flush()
            if want_attention:
                plots.draw(first_line, chunk, translations)
            first_line += len(chunk)
    return 0


def format_line(source: str, translation: Translation, n_best: int, signals: bool = False) -> str:
    """The best translation, or with n_best > 1 its candidates as text<TAB>score pairs;
    with `signals` each text is followed by its quality signals as JSON. A blank input line
    gives a blank output line either way."""
    if not source.strip():
        return translation.text
    if n_best == 1 and not signals:
        return translation.text
    fields = []
    for index, (text, score) in enumerate(translation.alternatives[:n_best]):
        fields.append(text)
        if n_best > 1:
            fields.append(f"{score:.4f}")
        if signals:
            fields.append(_signals_json(translation.alternative_signals[index]))
    return "\t".join(fields)


def _signals_json(signals) -> str:
    import json

    values = {k: round(v, 4) if isinstance(v, float) else v for k, v in signals.to_dict().items()}
    return json.dumps(values)


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
        from pipeline.translate.plots import attention_heatmap

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
