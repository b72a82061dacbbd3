"""Attention over encoder annotations: additive (Bahdanau), bilinear (Luong "general"), none.

Every attention has the same two-phase shape so the decoder loop stays one piece of code:
`precompute_keys` runs once per source batch (the expensive key projection), and
`forward` runs once per decoder step with the projected query.

A source may be shared by several consecutive query rows (the beams of one sentence): with
B sources and B * W queries, rows b * W ... b * W + W - 1 attend to source b. The beams then
read one copy of their source instead of each carrying its own, re-gathered at every step.
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
        """query [B * W, A] (already projected), keys [B, S, A], annotations [B, S, K],
        mask [B, S] (True on real tokens) -> context [B * W, K], weights [B * W, S]"""
        grouped = _group(query, keys.size(0))  # [B, W, A]
        energies = torch.tanh(keys.unsqueeze(1) + grouped.unsqueeze(2))  # [B, W, S, A]
        return _weighted_context(self.energy(energies).squeeze(3), annotations, mask)


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
        """query [B * W, H_dec] (the decoder state) -> context [B * W, K], weights [B * W, S]"""
        scores = torch.bmm(_group(query, keys.size(0)), keys.transpose(1, 2))  # [B, W, S]
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
        """query [B * W, *] -> the summary of each row's source [B * W, K], None"""
        rows_per_source = query.size(0) // annotations.size(0)
        return annotations[:, 0].repeat_interleave(rows_per_source, dim=0), None


def _group(query: Tensor, sources: int) -> Tensor:
    """[B * W, A] -> [B, W, A]: the query rows of each source together."""
    return query.view(sources, query.size(0) // sources, query.size(1))


def _weighted_context(scores: Tensor, annotations: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """scores [B, W, S], annotations [B, S, K], mask [B, S] ->
    context [B * W, K], weights [B * W, S]"""
    # -inf on padding gives exactly zero weight there after softmax; every row has at least
    # one real token, so no row is all -inf.
    weights = torch.softmax(scores.masked_fill(~mask.unsqueeze(1), float("-inf")), dim=2)
    context = torch.bmm(weights, annotations)  # each source read once for all its W rows
    return context.flatten(0, 1), weights.flatten(0, 1)


ATTENTIONS = {"bahdanau": AdditiveAttention, "luong": BilinearAttention, "none": FixedContext}
