"""What `nmt prepare` is asked to do: one frozen dataclass that the CLI builds from its flags,
the library entry takes whole (or builds from keywords), and stats.json records.

Plain values only, so Ray can ship it to tasks and `--help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PrepareSettings:
    """The options of `nmt prepare`, named as its flags (`src_lang` is `--src-lang`)."""

    src_lang: str
    tgt_lang: str
    train: str  # each input: a prefix, a .tsv file or Parquet; a path or a URI
    valid: str
    out: str | Path
    test: tuple[str, ...] = ()  # a list is accepted and kept as a tuple
    overwrite: bool = False
    src_col: str | None = None  # a column number (.tsv) or name (Parquet)
    tgt_col: str | None = None
    vocab_size: int = 8000
    separate_vocab: bool = False
    character_coverage: float = 1.0
    spm_sample: int = 200_000  # train pairs sampled to train sentencepiece
    max_len: int = 100  # train only: most tokens per side
    max_ratio: float = 3.0  # train only: most tokens of the longer side per token of the other
    dedup: bool = False
    skip_invalid_utf8: bool = False
    workers: int | None = None  # tokenizer actors; None: as many as the cluster's CPUs allow
    seed: int = 0  # of the sentencepiece sample
    context_turns: int = 1  # dialogue inputs: the turns before a reply that are its source
    tokenizer: str = "unigram"  # "unigram" or "bpe" (sentencepiece subwords), or "word"
    lexicon: str | None = None  # extra train pairs: a source<TAB>target .tsv, or "cedict"

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", tuple(self.test))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PrepareSettings:
        """From `nmt prepare`'s parsed flags (other attributes, such as `command`, ignored)."""
        return cls(**{field.name: getattr(args, field.name) for field in dataclasses.fields(cls)})

    def to_json(self) -> dict:
        """As stats.json records it: every field, `out` as a string and `test` as a list."""
        return dataclasses.asdict(self) | {"out": str(self.out), "test": list(self.test)}
