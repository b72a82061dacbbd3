"""Ensembles: several models decoding as one, in the same batched greedy and beam search.

At every step each member advances its own decoder state over its own encoding of the
source, and the ensemble scores the next token by the mean of the members' log-probabilities
(the log of their distributions' geometric mean, not renormalised), so the scores of an
ensemble of one model, or of copies of one model, are that model's. The members must share
their vocabularies and special ids; their sizes may differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.attention import RowSources
from models.config import ModelConfig
from models.search import StepDecoder, top_k
from models.seq2seq import Seq2Seq

# What the members must agree on: the ids they read and write mean the same tokens.
SHARED_FIELDS = ("src_vocab_size", "tgt_vocab_size", "pad_id", "unk_id", "bos_id", "eos_id")


class Ensemble(nn.Module):
    """Seq2Seq models decoded together (`models.search` takes it where it takes a Seq2Seq).

    Its `config` is the first member's, with the attention kind of the first member that
    attends (so a fixed-context member does not switch the ensemble's attention off). The
    attention weights it returns are the mean of the attending members' weights."""

    def __init__(self, models: Sequence[Seq2Seq]) -> None:
        super().__init__()
        check_shared_vocabularies([model.config for model in models])
        self.members = nn.ModuleList(models)
        attending = [m.config.attention for m in models if m.config.attention != "none"]
        first = models[0].config
        self.config = dataclasses.replace(first, attention=(attending or ["none"])[0])

    def step_decoder(self, src: Tensor, src_len: Tensor) -> EnsembleStepDecoder:
        """src [B, S], src_len [B] -> the ensemble's step decoder over the batch."""
        return EnsembleStepDecoder(
            [StepDecoder(model, *model.encode(src, src_len)) for model in self.members]
        )

    def num_parameters(self) -> int:
        return sum(model.num_parameters() for model in self.members)

    def store_linear_weights_in(self, dtype: torch.dtype) -> Ensemble:
        """As `Seq2Seq.store_linear_weights_in`, for every member."""
        for model in self.members:
            model.store_linear_weights_in(dtype)
        return self


class EnsembleStepDecoder:
    """The members' step decoders advanced together; rows are selected in all of them alike,
    so row r is the same hypothesis in every member."""

    def __init__(self, members: Sequence[StepDecoder]) -> None:
        self.members = list(members)

    @property
    def rows(self) -> RowSources | None:
        return self.members[0].rows

    def restricted_to(self, vocabulary: Tensor) -> EnsembleStepDecoder:
        """Every member scores only the target ids `vocabulary` (a candidate list)."""
        for member in self.members:
            member.restricted_to(vocabulary)
        return self

    def top_log_probs(self, prev_tokens: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """prev_tokens [R] -> the k best mean log-probabilities [R, k], their token ids
        [R, k], the mean attention weights [R, S] of the attending members (or None)."""
        log_probs, mean_weights = self.log_probs(prev_tokens)
        scores, columns = top_k(log_probs, min(k, log_probs.size(-1)))
        return scores, self.members[0].token_ids(columns), mean_weights

    def log_probs(self, prev_tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """prev_tokens [R] -> the mean log-probabilities [R, V], the mean attention weights
        [R, S] of the attending members (or None)."""
        steps = [member.log_probs(prev_tokens) for member in self.members]
        log_probs = torch.stack([log_probs for log_probs, _ in steps]).mean(dim=0)
        weights = [w for _, w in steps if w is not None]
        return log_probs, (torch.stack(weights).mean(dim=0) if weights else None)

    def select(
        self, rows: Tensor, sentences: Tensor | None = None, row_sources: RowSources | None = None
    ) -> None:
        """As `StepDecoder.select`, in every member."""
        for member in self.members:
            member.select(rows, sentences, row_sources)


def check_shared_vocabularies(configs: Sequence[ModelConfig]) -> None:
    """Raises ValueError naming the first setting a member does not share with the first
    member (vocabulary sizes, special ids), or when there is no member."""
    if not configs:
        raise ValueError("an ensemble needs at least one model")
    for number, config in enumerate(configs[1:], start=2):
        for name in SHARED_FIELDS:
            mine, theirs = getattr(configs[0], name), getattr(config, name)
            if mine != theirs:
                raise ValueError(
                    f"model {number} has {name} {theirs} but model 1 has {mine}: "
                    "the models of an ensemble must share their vocabularies"
                )
