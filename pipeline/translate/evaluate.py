"""`nmt evaluate`: sacreBLEU and chrF (with signatures), decoding speed, BLEU by source length.

Several `--model`s are decoded on the same test set and compared in one table and one plot:
that is how the attention model and the fixed-context baseline are set side by side
(Bahdanau et al. 2014, Fig. 2). A `--model A+B` is one system, the ensemble of A and B.

`--rewrite-source` also scores each system on the sources rewritten the way people type
(final punctuation stripped, lower-cased, or both) against the same references, beside the
untouched sources; `--lowercase-bleu` makes BLEU case-insensitive.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.corpus.rewrite import SOURCE_REWRITES
from pipeline.errors import UserError
from pipeline.translate.cli import (
    Controls,
    add_control_arguments,
    add_decoding_arguments,
    load_translator,
)

if TYPE_CHECKING:
    from sacrebleu.metrics import BLEU, CHRF

    from pipeline.translate.translator import Translator

EXAMPLES = """examples:
  nmt evaluate --model runs/exp/de-en --src ../shared/data/multi30k/test_2016_flickr.de.gz \\
      --ref ../shared/data/multi30k/test_2016_flickr.en.gz
  nmt evaluate --model runs/exp/rnnsearch --model runs/exp/baseline \\
      --src test.de.gz --ref test.en.gz --by-length bleu_by_length.png   # side by side
  nmt evaluate --model runs/exp/en-zh --src test.en --ref test.zh --json   # tok:zh from meta.json
  nmt evaluate --model runs/exp/a+runs/exp/b --src test.de.gz --ref test.en.gz   # an ensemble
  nmt evaluate --model runs/exp/de-en --src test.de.gz --ref test.en.gz \\
      --rewrite-source strip-final-punct lowercase both --lowercase-bleu   # as people type
  nmt evaluate --model runs/exp/de-en --src test.de.gz --ref test.en.gz --glossary terms.tsv
  nmt evaluate --model runs/exp/de-en --src test.de.gz --ref test.en.gz --precision int8

Scores are sacreBLEU's on detokenized output against the raw references. The BLEU tokenizer
is zh when the model's meta.json says tgt_lang zh (13a otherwise); --tokenize overrides it.
Source length is counted in words (characters for Chinese or Japanese sources).
"""

CHARACTER_LANGUAGES = ("zh", "cmn", "ja")  # written without spaces between words


@dataclass
class Bucket:
    """Sentences whose source length falls in [low, high]."""

    low: int
    high: int
    indices: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="model dir or training run dir (A+B: their ensemble); repeat to compare models "
        "on the same test set",
    )
    parser.add_argument("--src", required=True, help="source sentences, one a line (.gz ok)")
    parser.add_argument(
        "--ref", required=True, nargs="+", help="reference file(s), line-aligned with --src"
    )
    parser.add_argument(
        "--tokenize",
        help="sacreBLEU tokenizer, e.g. 13a, zh, intl, char (default: from the target language)",
    )
    parser.add_argument(
        "--by-length", metavar="PNG", help="also BLEU per source-length bucket: table and plot"
    )
    parser.add_argument(
        "--bucket-width", type=int, default=5, help="source words per bucket (default: 5)"
    )
    parser.add_argument(
        "--min-bucket",
        type=int,
        default=20,
        help="merge the longest buckets until the last has this many sentences (default: 20)",
    )
    parser.add_argument(
        "--hypotheses",
        metavar="FILE",
        help="also write the translations (several models: FILE.1, FILE.2, ...)",
    )
    parser.add_argument(
        "--rewrite-source",
        nargs="+",
        action="extend",
        choices=list(SOURCE_REWRITES),
        default=[],
        metavar="REWRITE",
        help="also score on the sources rewritten: "
        f"{', '.join(SOURCE_REWRITES)} (repeatable; default: none)",
    )
    parser.add_argument(
        "--lowercase-bleu", action="store_true", help="case-insensitive BLEU (sacreBLEU -lc)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    add_control_arguments(parser)
    add_decoding_arguments(parser, omit=("n_best",))
    parser.set_defaults(signals=False)  # scores need no quality signals: spare their cost


def run(args: argparse.Namespace) -> int:
    from pipeline.corpus.textfile import read_lines

    sources = read_lines(args.src)
    references = [read_lines(path) for path in args.ref]
    for path, lines in zip(args.ref, references, strict=True):
        if len(lines) != len(sources):
            raise UserError(
                f"--src {args.src} has {len(sources)} lines but --ref {path} has {len(lines)}: "
                "they must be line-aligned"
            )
    if args.bucket_width < 1 or args.min_bucket < 1:
        raise UserError("--bucket-width and --min-bucket must be at least 1")
    translators = [load_translator(model, args) for model in args.model]
    report = {"src": args.src, "ref": args.ref, "sentences": len(sources), "systems": []}
    scoring = Scoring(references, args.tokenize, args.lowercase_bleu)
    if sources:  # an empty test set is not an error: there is just nothing to score
        controls = Controls(args).options(sources)  # glossary constraints, prefixes
        decoded = [decode(translator, sources, controls) for translator in translators]
        report["systems"] = [
            score_system(
                translator, hypotheses, seconds, references, args.tokenize, args.lowercase_bleu
            )
            for translator, (hypotheses, seconds) in zip(translators, decoded, strict=True)
        ]
        rewrites = [name for name in dict.fromkeys(args.rewrite_source) if name != "none"]
        for translator, system in zip(translators, report["systems"], strict=True):
            system["rewrites"] = score_rewrites(translator, sources, rewrites, scoring)
        hypotheses_by_system = [hypotheses for hypotheses, _ in decoded]
        if args.by_length:
            report["by_length"] = by_length(
                sources, references, report["systems"], hypotheses_by_system, translators, args
            )
        if args.hypotheses:
            _write_hypotheses(args.hypotheses, hypotheses_by_system)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else format_report(report))
    return 0


def decode(
    translator: Translator, sources: list[str], controls: dict | None = None
) -> tuple[list[str], float]:
    """The translations of `sources` (with `controls`: `Translator.translate`'s prefixes
    and constraints) and the seconds the decoding took."""
    start = time.perf_counter()
    translations = translator.translate(sources, **(controls or {}))
    hypotheses = [translation.text for translation in translations]
    return hypotheses, time.perf_counter() - start


@dataclass(frozen=True)
class Scoring:
    """How every system is scored: the references, sacreBLEU's tokenizer (None: from the
    target language) and whether BLEU ignores case."""

    references: list[list[str]]
    tokenize: str | None = None
    lowercase: bool = False

    def scores(self, tgt_lang: str | None, hypotheses: list[str], seconds: float) -> dict:
        """BLEU, chrF and the speed of one decoding of the test set."""
        bleu, chrf = metrics(tgt_lang, self.tokenize, self.lowercase)
        return {
            "bleu": _score_json(bleu, bleu.corpus_score(hypotheses, self.references)),
            "chrf": _score_json(chrf, chrf.corpus_score(hypotheses, self.references)),
            "seconds": round(seconds, 3),
            "sentences_per_second": round(len(hypotheses) / seconds, 2),
        }


def score_system(
    translator: Translator,
    hypotheses: list[str],
    seconds: float,
    references: list[list[str]],
    tokenize: str | None,
    lowercase: bool = False,
) -> dict:
    """BLEU, chrF and speed of one model's translations, with the settings that made them."""
    scoring = Scoring(references, tokenize, lowercase)
    settings = translator.settings
    return {
        "name": translator.name,
        "model": translator.uri,
        "beam_size": settings.beam_size,
        "alpha": settings.alpha,
        "beam_prune": settings.beam_prune if settings.beam_size > 1 else None,
        "batch_size": settings.batch_size,
        "device": str(translator.device),
        "precision": settings.precision,
        **(settings.sampling() if settings.sample else {}),
        **scoring.scores(translator.meta.get("tgt_lang"), hypotheses, seconds),
    }


def score_rewrites(
    translator: Translator, sources: list[str], rewrites: list[str], scoring: Scoring
) -> dict[str, dict]:
    """Rewrite name -> the scores of `translator` on the sources rewritten so (same
    references)."""
    tgt_lang = translator.meta.get("tgt_lang")
    results = {}
    for name in rewrites:
        hypotheses, seconds = decode(translator, [SOURCE_REWRITES[name](s) for s in sources])
        results[name] = scoring.scores(tgt_lang, hypotheses, seconds)
    return results


def metrics(
    tgt_lang: str | None, tokenize: str | None, lowercase: bool = False
) -> tuple[BLEU, CHRF]:
    """sacreBLEU's BLEU (zh tokenizer for Chinese targets unless `tokenize` says;
    case-insensitive with `lowercase`) and chrF."""
    from sacrebleu.metrics import BLEU, CHRF

    if tokenize is None:
        tokenize = "zh" if (tgt_lang or "").lower().startswith(("zh", "cmn")) else "13a"
    if tokenize not in BLEU.TOKENIZERS:
        raise UserError(f"--tokenize {tokenize}: choose one of {', '.join(BLEU.TOKENIZERS)}")
    try:
        return BLEU(tokenize=tokenize, lowercase=lowercase), CHRF()
    except Exception as error:  # e.g. ja-mecab without its optional package
        raise UserError(f"sacreBLEU cannot use --tokenize {tokenize}: {error}") from None


def _score_json(metric, score) -> dict:
    """sacreBLEU's own JSON for a score, with the score unrounded."""
    result = json.loads(score.format(signature=str(metric.get_signature()), is_json=True))
    return {**result, "score": score.score}


def source_lengths(sources: list[str], src_lang: str | None) -> tuple[list[int], str]:
    """Length of each source in words, or characters for languages written without spaces."""
    if (src_lang or "").lower().startswith(CHARACTER_LANGUAGES):
        return [len("".join(s.split())) for s in sources], "characters"
    return [len(s.split()) for s in sources], "words"


def length_buckets(lengths: list[int], width: int, min_count: int) -> list[Bucket]:
    """Buckets 1-width, width+1-2*width, ...; the longest merged until the last one holds
    `min_count` sentences (or all are one bucket), so no point rests on a handful of them."""
    members = defaultdict(list)
    for index, length in enumerate(lengths):
        members[max(0, length - 1) // width].append(index)
    buckets = [Bucket(k * width + 1, (k + 1) * width, members[k]) for k in sorted(members)]
    while len(buckets) > 1 and len(buckets[-1].indices) < min_count:
        buckets[-2].indices += buckets.pop().indices
    buckets[0].low = min(lengths[i] for i in buckets[0].indices)
    buckets[-1].high = max(lengths[i] for i in buckets[-1].indices)
    return buckets


def by_length(
    sources: list[str],
    references: list[list[str]],
    systems: list[dict],
    hypotheses_by_system: list[list[str]],
    translators: list[Translator],
    args: argparse.Namespace,
) -> dict:
    """BLEU of every system per source-length bucket (buckets from the first model's source
    language); draws the plot to args.by_length."""
    from pipeline.translate.plots import bleu_by_length_plot

    lengths, unit = source_lengths(sources, translators[0].meta.get("src_lang"))
    buckets = length_buckets(lengths, args.bucket_width, args.min_bucket)
    bleu_by_system = {}
    for name, system, hypotheses in zip(
        _unique_names(systems), systems, hypotheses_by_system, strict=True
    ):
        bleu, _ = metrics(None, system["bleu"]["tok"], args.lowercase_bleu)
        bleu_by_system[name] = [
            bleu.corpus_score(
                [hypotheses[i] for i in bucket.indices],
                [[reference[i] for i in bucket.indices] for reference in references],
            ).score
            for bucket in buckets
        ]
    labels = [bucket.label for bucket in buckets]
    counts = [len(bucket.indices) for bucket in buckets]
    bleu_by_length_plot(labels, counts, bleu_by_system, args.by_length, unit)
    return {
        "unit": unit,
        "plot": args.by_length,
        "buckets": labels,
        "sentences": counts,
        "bleu": bleu_by_system,
    }


def _pruning(beam_prune: float | None) -> str:
    if beam_prune is None:  # greedy
        return ""
    return f" (pruned at {beam_prune})" if beam_prune > 0 else " (exact, no pruning)"


def format_report(report: dict) -> str:
    """The human-readable report: per model its settings, scores with signatures and speed,
    then the by-length table in Markdown (pastes into a README as it is)."""
    if not report["systems"]:
        return f"{report['src']} is empty: nothing to score"
    lines = []
    for system in report["systems"]:
        bleu, chrf = system["bleu"], system["chrf"]
        lines += [
            f"{system['name']} ({system['model']}): beam {system['beam_size']}"
            f"{_pruning(system['beam_prune'])}, alpha {system['alpha']}, "
            f"batch {system['batch_size']}, {system['device']}, {system['precision']}",
            f"  BLEU|{bleu['signature']} = {bleu['score']:.2f} {bleu['verbose_score']}",
            f"  chrF2|{chrf['signature']} = {chrf['score']:.2f}",
            f"  speed: {report['sentences']} sentences in {system['seconds']:.1f} s = "
            f"{system['sentences_per_second']:.1f} sentences/s",
        ]
    if any(system["rewrites"] for system in report["systems"]):
        lines += ["", *_rewrites_table(report["systems"])]
    if "by_length" in report:
        lines += [
            "",
            *_by_length_table(report["by_length"]),
            "",
            f"plot: {report['by_length']['plot']}",
        ]
    return "\n".join(lines)


def _by_length_table(table: dict) -> list[str]:
    names = list(table["bleu"])
    rows = [
        [bucket, str(count), *(f"{table['bleu'][name][row]:.2f}" for name in names)]
        for row, (bucket, count) in enumerate(
            zip(table["buckets"], table["sentences"], strict=True)
        )
    ]
    header = [f"source {table['unit']}", "sentences", *(f"BLEU {name}" for name in names)]
    return _markdown_table(header, rows)


def _rewrites_table(systems: list[dict]) -> list[str]:
    """BLEU per system on the untouched and on each rewritten source, in Markdown."""
    rewrites = list(systems[0]["rewrites"])
    header = ["system", "untouched", *rewrites]
    rows = [
        [name, *(f"{s['bleu']['score']:.2f}" for s in (system, *system["rewrites"].values()))]
        for name, system in zip(_unique_names(systems), systems, strict=True)
    ]
    return [
        f"BLEU on rewritten sources ({systems[0]['bleu']['signature']})",
        *_markdown_table(header, rows),
    ]


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _unique_names(systems: list[dict]) -> list[str]:
    """System names, numbered where two models share one."""
    names = [system["name"] for system in systems]
    return [f"{name} ({i + 1})" if names.count(name) > 1 else name for i, name in enumerate(names)]


def _write_hypotheses(path: str, hypotheses_by_system: list[list[str]]) -> None:
    from pipeline.corpus.textfile import open_text

    several = len(hypotheses_by_system) > 1
    for number, hypotheses in enumerate(hypotheses_by_system, start=1):
        with open_text(f"{path}.{number}" if several else path, "w") as output:
            output.writelines(line + "\n" for line in hypotheses)
