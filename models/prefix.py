"""Forced prefixes: the output of a sentence starts with given target pieces, and the
search goes on from there.

`ForcedPrefix` wraps any step decoder (a model's or an ensemble's): while a row's sentence
still has prefix pieces to emit, every other token gets log-probability -inf, so greedy,
beam and sampling searches alike can only pick the prefix's piece, scored with the model's
own log-probability for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from models.attention import RowSources
from models.search import StepDecoding, top_k


class ForcedPrefix:
    """A step decoder whose rows of sentence i emit prefixes[i] at their first steps."""

    def __init__(self, decoder: StepDecoding, prefixes: Sequence[Sequence[int]], device) -> None:
        self.decoder = decoder
        longest = max((len(p) for p in prefixes), default=0)
        self.forced = torch.full((len(prefixes), longest), -1, dtype=torch.long, device=device)
        for sentence, prefix in enumerate(prefixes):
            self.forced[sentence, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
        self.sentence = torch.arange(len(prefixes), device=device)  # each row's input sentence
        self.step = 0

    @property
    def rows(self) -> RowSources | None:
        return self.decoder.rows

    def log_probs(self, prev_tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """As the wrapped decoder's, with the rows still in their prefix forced: [R, V]."""
        log_probs, weights = self.decoder.log_probs(prev_tokens)
        if self.step < self.forced.size(1):
            token = self.forced[self.sentence, self.step]
            rows = (token >= 0).nonzero().squeeze(1)
            if rows.numel():
                kept = log_probs[rows, token[rows]]
                log_probs[rows] = float("-inf")
                log_probs[rows, token[rows]] = kept
        self.step += 1
        return log_probs, weights

    def top_log_probs(self, prev_tokens: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor | None]:
        log_probs, weights = self.log_probs(prev_tokens)
        return (*top_k(log_probs, k), weights)

    def select(
        self, rows: Tensor, sentences: Tensor | None = None, row_sources: RowSources | None = None
    ) -> None:
        self.sentence = self.sentence[rows]
        self.decoder.select(rows, sentences, row_sources)
