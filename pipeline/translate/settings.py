"""How to decode: one frozen dataclass that every command, the Serve deployment and bulk
translation take whole, its command-line arguments and its check.

Plain values only (no torch), so `--help` stays fast and Ray can ship it to actors. A
per-request override is a `dataclasses.replace` of it.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from pipeline.errors import UserError

# Named as in the training config's `precision`; int8 is for decoding only (CPU).
PRECISIONS = ("fp32", "bf16", "int8")
# The sampling settings, which a request may set (serve) and a bulk job records.
SAMPLING_FIELDS = ("sample", "temperature", "top_k", "top_p", "seed", "no_repeat_ngram")


@dataclass(frozen=True)
class DecodeSettings:
    """The search and its numerics. `beam_size` 1 is greedy search."""

    beam_size: int = 5
    n_best: int = 1  # candidates returned per sentence, best first; at most beam_size
    alpha: float = 0.6  # GNMT length penalty exponent
    # Beam extensions whose log-probability trails the step's best by more than this are
    # dropped (`models.search.beam_search`'s `prune`); 0 is exact beam search.
    beam_prune: float = 2.0
    # bf16 runs the matrix products under torch.autocast (the recurrent state, the softmaxes
    # and the scores stay float32): faster where the hardware multiplies bfloat16 natively.
    # int8 quantizes the Linear layers' weights once and their inputs per product (CPU).
    precision: str = "fp32"
    batch_size: int = 64  # sentences decoded together
    max_len_a: float = 1.5  # output length limit: a * source length + b
    max_len_b: int = 10
    # Sampling instead of beam search (`models.sampling`), for chat models: the most probable
    # reply is the dull one. beam_size is then unused and n_best is that many distinct samples.
    sample: bool = False
    temperature: float = 1.0  # of the sampled distribution; 0 is greedy
    top_k: int = 0  # sample among the k most probable tokens; 0: all
    top_p: float = 1.0  # sample within the nucleus of this probability mass
    seed: int | None = None  # None: a fresh seed per call; else each sentence's sample repeats
    no_repeat_ngram: int = 0  # beam search and sampling never repeat an n-gram this long; 0: off
    # Quality signals on every translation (`pipeline.translate.quality`). Their coverage
    # needs the search to keep its attention weights, which costs beam search time.
    signals: bool = True
    # A candidate list (`models.candidates`, the model dir's candidates.npz from
    # `nmt candidates`): each batch decodes over the most frequent target pieces and the
    # likeliest translations of its source pieces only. Both 0: the whole vocabulary.
    candidates_frequent: int = 0
    candidates_per_source: int = 0

    @property
    def uses_candidates(self) -> bool:
        return bool(self.candidates_frequent or self.candidates_per_source)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """One-line `UserError`s for values no search can run with."""
        for name in ("beam_size", "n_best", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{_flag(name)} must be at least 1, not {getattr(self, name)}")
        if self.n_best > self.beam_size and not self.sample:
            raise UserError(
                f"--n-best must be between 1 and --beam-size ({self.beam_size}), not {self.n_best}"
            )
        if self.beam_prune < 0:
            raise UserError("--beam-prune must be 0 (exact beam search) or more")
        if self.precision not in PRECISIONS:
            raise UserError(
                f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"
            )
        if self.max_len_a < 0 or self.max_len_b < 0:
            raise UserError("the output length limit (max_len_a, max_len_b) cannot be negative")
        self._check_sampling()
        if self.candidates_frequent < 0 or self.candidates_per_source < 0:
            raise UserError("--candidates-frequent and --candidates-per-source cannot be negative")
        if self.uses_candidates and self.precision == "int8":
            raise UserError(
                "candidate lists need --precision fp32 or bf16: int8 quantizes the output layer "
                "whose rows a candidate list selects"
            )

    def _check_sampling(self) -> None:
        for name in ("temperature", "top_k", "no_repeat_ngram"):
            if getattr(self, name) < 0:
                raise UserError(f"{_flag(name)} cannot be negative, not {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be above 0 and at most 1, not {self.top_p}")
        if self.seed is not None and self.seed < 0:
            raise UserError(f"--seed must be 0 or more, not {self.seed}")

    @property
    def prune(self) -> float:
        """The pruning threshold the search applies: none for n-best lists, which pruning
        could leave shorter than asked."""
        return self.beam_prune if self.n_best == 1 else 0.0

    def sampling(self) -> dict[str, object]:
        """The sampling settings by name (SAMPLING_FIELDS), as sent to a Serve replica."""
        return {name: getattr(self, name) for name in SAMPLING_FIELDS}

    def with_overrides(self, **overrides: object) -> DecodeSettings:
        """A copy with the given fields changed; None values keep this object's value."""
        given = {name: value for name, value in overrides.items() if value is not None}
        return dataclasses.replace(self, **given) if given else self

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, omit: Collection[str] = ()) -> None:
        """The decoding flags of every command that decodes; `omit` names fields a command sets
        otherwise (e.g. serve takes beam size and n-best per request)."""
        flags = {
            "beam_size": dict(type=int, help="1 is greedy search (default: %(default)s)"),
            "n_best": dict(
                type=int,
                metavar="K",
                help="candidates per sentence, at most --beam-size (default: %(default)s)",
            ),
            "alpha": dict(type=float, help="length penalty exponent (default: %(default)s)"),
            "beam_prune": dict(
                type=float,
                metavar="DELTA",
                help="drop beam extensions more than DELTA (log-probability) behind the step's "
                "best; 0 is exact beam search; not applied with --n-best above 1 "
                "(default: %(default)s)",
            ),
            "precision": dict(
                choices=PRECISIONS,
                help="of the matrix products: bf16 is faster on CPUs with AVX512-BF16 or AMX and "
                "on recent GPUs; int8 (CPU only) quantizes the Linear layers "
                "(default: %(default)s)",
            ),
            "batch_size": dict(type=int, help="sentences decoded together (default: %(default)s)"),
            "sample": dict(
                action=argparse.BooleanOptionalAction,
                help="sample instead of beam search (chat models); --n-best K: K distinct samples "
                "(default: %(default)s)",
            ),
            "temperature": dict(
                type=float, help="with --sample; 0 is greedy (default: %(default)s)"
            ),
            "top_k": dict(
                type=int,
                metavar="K",
                help="with --sample: only the K most probable tokens; 0: all "
                "(default: %(default)s)",
            ),
            "top_p": dict(
                type=float,
                metavar="P",
                help="with --sample: only the nucleus of mass P (default: %(default)s)",
            ),
            "seed": dict(
                type=int,
                help="with --sample: the same seed gives each sentence the same sample "
                "(default: a fresh one)",
            ),
            "no_repeat_ngram": dict(
                type=int,
                metavar="N",
                help="never repeat an N-gram (beam search and sampling); 0: off "
                "(default: %(default)s)",
            ),
            "candidates_frequent": dict(
                type=int,
                metavar="K",
                help="decode over a candidate list (built by `nmt candidates`): the K most "
                "frequent target pieces... (default: %(default)s: off)",
            ),
            "candidates_per_source": dict(
                type=int,
                metavar="K",
                help="...plus the K likeliest translations of each source piece of the batch "
                "(default: %(default)s)",
            ),
        }
        for name, options in flags.items():
            if name not in omit:
                parser.add_argument(_flag(name), default=getattr(cls(), name), **options)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DecodeSettings:
        """The settings `add_arguments` put on `args` (fields it did not add keep defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in names and v is not None})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
