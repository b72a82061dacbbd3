"""Attention over encoder annotations: additive (Bahdanau), bilinear (Luong "general"), none.

Every attention has the same two-phase shape so the decoder loop stays one piece of code:
`precompute_keys` runs once per source batch (the expensive key projection), and
`forward` runs once per decoder step with the projected query.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AdditiveAttention(nn.Module):
    """e_ij = v^T tanh(W s_{i-1} + U h_j)   (Bahdanau et al. 2014, appendix A.1.2)."""

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_size = attention_size  # columns the decoder's fused projection gives us
        self.key_proj = nn.Linear(key_size, attention_size, bias=False)
        self.energy = nn.Linear(attention_size, 1, bias=False)

    def precompute_keys(self, annotations: Tensor) -> Tensor:
        """annotations [B, S, K] -> keys [B, S, A]"""
        return self.key_proj(annotations)

    def forward(
        self, query: Tensor, keys: Tensor, annotations: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """query [B, A] (already projected), keys [B, S, A], annotations [B, S, K],
        mask [B, S] (True on real tokens) -> context [B, K], weights [B, S]"""
        scores = self.energy(torch.tanh(keys + query.unsqueeze(1))).squeeze(2)
        return _weighted_context(scores, annotations, mask)


class BilinearAttention(nn.Module):
    """e_ij = s_{i-1}^T W h_j   (Luong et al. 2015, "general" score)."""

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_size = 0  # the raw decoder state is the query
        self.key_proj = nn.Linear(key_size, query_size, bias=False)

    def precompute_keys(self, annotations: Tensor) -> Tensor:
        """annotations [B, S, K] -> keys [B, S, H_dec]"""
        return self.key_proj(annotations)

    def forward(
        self, query: Tensor, keys: Tensor, annotations: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """query [B, H_dec] (the decoder state) -> context [B, K], weights [B, S]"""
        scores = torch.bmm(keys, query.unsqueeze(2)).squeeze(2)
        return _weighted_context(scores, annotations, mask)


class FixedContext(nn.Module):
    """No attention (Cho et al. 2014): every step sees the same summary vector C.

    The summary is computed by the encoder (its final states) and handed over as the single
    "annotation"; the weights returned are None because nothing is attended.
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_size = 0

    def precompute_keys(self, annotations: Tensor) -> Tensor:
        return annotations

    def forward(
        self, query: Tensor, keys: Tensor, annotations: Tensor, mask: Tensor
    ) -> tuple[Tensor, None]:
        return annotations[:, 0], None


def _weighted_context(scores: Tensor, annotations: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    # -inf on padding gives exactly zero weight there after softmax; every row has at least
    # one real token, so no row is all -inf.
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
    context = torch.bmm(weights.unsqueeze(1), annotations).squeeze(1)
    return context, weights


ATTENTIONS = {"bahdanau": AdditiveAttention, "luong": BilinearAttention, "none": FixedContext}
