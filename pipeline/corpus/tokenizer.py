"""Sentencepiece tokenizers: training on a sample, and the source/target pair a model uses.

Ids are fixed across the project (see ModelConfig): pad=0, unk=1, bos=2, eos=3.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

SRC_SPM = "spm.src.model"
TGT_SPM = "spm.tgt.model"


def train_sentencepiece(
    sentences: Iterable[str],
    vocab_size: int,
    character_coverage: float = 1.0,
    model_type: str = "unigram",
    num_threads: int = 2,
    user_defined_symbols: Sequence[str] = (),
) -> bytes:
    """Train a sentencepiece model on `sentences`; returns the serialized model.

    character_coverage=1.0 keeps every character seen (Chinese needs this; for Latin
    scripts it only adds a handful of rare pieces). `hard_vocab_limit=False` lets a tiny
    corpus produce fewer pieces than asked instead of failing. `user_defined_symbols` are
    pieces always kept whole (the dialogue turn separator).
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        model_type=model_type,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        hard_vocab_limit=False,
        num_threads=num_threads,
        minloglevel=2,
        user_defined_symbols=list(user_defined_symbols),
    )
    return model.getvalue()


class Tokenizer:
    """One sentencepiece model: text <-> ids and pieces."""

    def __init__(self, path: str | Path | None = None, serialized: bytes | None = None) -> None:
        self.path = Path(path) if path is not None else None
        if serialized is not None:
            self.processor = spm.SentencePieceProcessor(model_proto=serialized)
        else:
            self.processor = spm.SentencePieceProcessor(model_file=str(path))

    @classmethod
    def from_serialized(cls, serialized: bytes) -> Tokenizer:
        """A tokenizer from model bytes (shipped to remote workers instead of a path)."""
        return cls(serialized=serialized)

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        return self.processor.encode(list(texts), num_threads=num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode(list(ids))

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.processor.id_to_piece(int(i)) for i in ids]


def load_pair(directory: str | Path) -> tuple[Tokenizer, Tokenizer]:
    """The (source, target) tokenizers stored in a prepared-data or model directory."""
    directory = Path(directory)
    missing = [name for name in (SRC_SPM, TGT_SPM) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} has no tokenizer ({', '.join(missing)} missing)")
    return Tokenizer(directory / SRC_SPM), Tokenizer(directory / TGT_SPM)
