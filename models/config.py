"""The model's hyper-parameters: everything needed to rebuild the network from its weights."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

AttentionKind = Literal["bahdanau", "luong", "none"]

# Bumped when the model-dir layout or the meaning of a config field changes, so that an old
# model dir is refused with a clear message instead of being loaded into the wrong network.
FORMAT_VERSION = 1


@dataclass
class ModelConfig:
    """RNNsearch (Bahdanau et al. 2014) and its no-attention baseline (Cho et al. 2014).

    Token ids follow the sentencepiece models that `nmt prepare` trains: pad=0, unk=1,
    bos=2, eos=3.
    """

    src_vocab_size: int
    tgt_vocab_size: int
    emb_size: int = 256
    enc_hidden_size: int = 256  # per direction; annotations are 2 * enc_hidden_size wide
    enc_layers: int = 1
    dec_hidden_size: int = 512
    attention_size: int = 512  # width of the additive-attention MLP
    deep_output_size: int = 256  # maxout output width (Bahdanau's l); == emb_size to tie
    dropout: float = 0.2  # on the embeddings and the deep output t
    # on what the deep output reads, [s_i; E y_{i-1}; c_i]: where Joey NMT's hidden_dropout
    # sits, so the context is dropped too (0: off, as in Bahdanau et al.)
    hidden_dropout: float = 0.0
    attention: AttentionKind = "bahdanau"
    # Nematus/Marian's conditional GRU: attention queried by the state after a first GRU
    # transition on the previous word, then a second transition on the context.
    conditional_gru: bool = False
    tie_target_embeddings: bool = False  # output layer shares the target embedding matrix
    share_embeddings: bool = False  # one embedding for source and target (joint vocabulary)
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3

    def __post_init__(self) -> None:
        if self.attention not in ("bahdanau", "luong", "none"):
            raise ValueError(f"attention must be bahdanau, luong or none, not {self.attention!r}")
        if self.tie_target_embeddings and self.deep_output_size != self.emb_size:
            raise ValueError("tie_target_embeddings needs deep_output_size == emb_size")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError("share_embeddings needs one joint vocabulary (equal vocab sizes)")

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = dict(data)
        version = data.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ValueError(
                f"model format version {version} is not supported by this version of nmt "
                f"(expects {FORMAT_VERSION}); retrain or use a matching nmt release"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config fields {unknown}: written by a newer nmt?")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
