"""Quality signals on a translation: cheap flags for outputs worth a second look.

- `mean_log_prob`: the model's log-probability per predicted piece (eos included). Low when
  the model was unsure all along (rare words, input unlike the training data).
- `coverage`: the share of source pieces that received at least `COVERAGE_THRESHOLD` of
  attention in total over the output. Attention that never visits part of the source is the
  sign of dropped content (an untranslated clause): low coverage flags it.
- `repetition`: the output repeats a word n-gram more often than the source repeats any
  (the decoder looping: "a dog and a dog and a dog").
- `length_ratio`: output pieces over source pieces; far from the corpus's usual ratio means
  content dropped (low) or invented (high).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

COVERAGE_THRESHOLD = 0.5  # total attention a source piece needs to count as covered
REPEAT_NGRAM = 3  # words: short enough to catch loops, long enough to let "a man ... a man" be


@dataclass(frozen=True)
class QualitySignals:
    mean_log_prob: float
    coverage: float | None  # None for a model without attention
    repetition: bool
    length_ratio: float

    def to_dict(self) -> dict:
        return asdict(self)


def attention_coverage(
    attention: Sequence[Sequence[float]], threshold: float = COVERAGE_THRESHOLD
) -> float:
    """attention [target piece][source piece] -> the share of source pieces whose attention,
    summed over the target pieces, is at least `threshold` (1.0 for no target piece at all
    but an empty source, 0.0 for an empty output of a real source)."""
    if not attention:
        return 0.0
    totals = [sum(column) for column in zip(*attention, strict=True)]
    return sum(total >= threshold for total in totals) / len(totals) if totals else 1.0


def max_ngram_count(words: Sequence[str], n: int = REPEAT_NGRAM) -> int:
    """How often the most frequent word n-gram of `words` occurs (0 when shorter than n)."""
    counts = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return max(counts.values(), default=0)


def repeats_more_than_source(source: str, target: str, n: int = REPEAT_NGRAM) -> bool:
    """Whether `target` repeats some word n-gram more often than `source` repeats any
    (lower-cased, split on white space)."""
    return max_ngram_count(target.lower().split(), n) > max(
        1, max_ngram_count(source.lower().split(), n)
    )


def quality_signals(
    source: str,
    target: str,
    log_prob: float,
    predictions: int,
    source_pieces: int,
    target_pieces: int,
    attention: Sequence[Sequence[float]] | None,
) -> QualitySignals:
    """The signals of one translation: `log_prob` summed over `predictions` predicted pieces
    (eos included when it was predicted), attention [target piece][source piece] or None."""
    return QualitySignals(
        mean_log_prob=log_prob / max(1, predictions),
        coverage=None if attention is None else attention_coverage(attention),
        repetition=repeats_more_than_source(source, target),
        length_ratio=target_pieces / max(1, source_pieces),
    )


def combine_signals(parts: Sequence[QualitySignals]) -> QualitySignals | None:
    """One document's signals from its sentences': the mean log-probability and length
    ratio, the lowest coverage (one sentence that drops content flags the document), and
    whether any sentence repeats. None for a document without sentences."""
    if not parts:
        return None
    coverages = [p.coverage for p in parts]
    return QualitySignals(
        mean_log_prob=sum(p.mean_log_prob for p in parts) / len(parts),
        coverage=None if None in coverages else min(coverages),
        repetition=any(p.repetition for p in parts),
        length_ratio=sum(p.length_ratio for p in parts) / len(parts),
    )
