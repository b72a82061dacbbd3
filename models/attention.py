"""Attention over encoder annotations: additive (Bahdanau), bilinear (Luong "general"), none.

Every attention has the same two-phase shape so the decoder loop stays one piece of code:
`precompute_keys` runs once per source batch (the expensive key projection), and
`forward` runs once per decoder step with the projected query.

A source may be shared by several consecutive query rows (the beams of one sentence, as many
as the sentence has live hypotheses): `RowSources` says which source each row reads. The
beams then read one copy of their source instead of each carrying its own, re-gathered at
every step. Without it, row i reads source i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class RowSources:
    """Which source each of R query rows reads; the rows of a source are consecutive."""

    source: Tensor  # [R] the row's source, non-decreasing
    slot: Tensor  # [R] the row's position among its source's rows
    width: int  # the most rows any source has
    sources: int  # B

    @staticmethod
    def of(row_source: Tensor, sources: int) -> RowSources:
        """row_source [R] (non-decreasing source indices), B sources (some may have no rows)."""
        counts = torch.bincount(row_source, minlength=sources)
        first = counts.cumsum(0) - counts
        slot = torch.arange(row_source.numel(), device=row_source.device) - first[row_source]
        return RowSources(row_source, slot, int(counts.max()), sources)

    @property
    def uniform(self) -> bool:
        """Every source has `width` rows (then grouping is a view)."""
        return self.source.numel() == self.sources * self.width

    def group(self, rows: Tensor, fill: float = 0.0) -> Tensor:
        """[R, *] -> [B, width, *], each source's rows together, the rest `fill`."""
        if self.uniform:
            return rows.view(self.sources, self.width, *rows.shape[1:])
        grouped = rows.new_full((self.sources, self.width, *rows.shape[1:]), fill)
        grouped[self.source, self.slot] = rows
        return grouped

    def ungroup(self, grouped: Tensor) -> Tensor:
        """[B, width, *] -> [R, *]"""
        return grouped.flatten(0, 1) if self.uniform else grouped[self.source, self.slot]


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
        self,
        query: Tensor,
        keys: Tensor,
        annotations: Tensor,
        mask: Tensor,
        rows: RowSources | None = None,
    ) -> tuple[Tensor, Tensor]:
        """query [R, A] (already projected), keys [B, S, A], annotations [B, S, K],
        mask [B, S] (True on real tokens) -> context [R, K], weights [R, S]"""
        if rows is None or rows.uniform:  # the rows of each source side by side
            grouped = _group(query, rows).unsqueeze(2)  # [B, W, 1, A]
            summed = (keys.unsqueeze(1) + grouped).flatten(0, 1)  # [R, S, A]
        else:
            # Each row's keys are gathered (not the B x width grid of `rows.group`) so that
            # the costliest part runs on live rows only, however uneven the beams.
            summed = keys[rows.source].add_(query.unsqueeze(1))
        # v^T tanh(x) = 2 v^T sigmoid(2x) - sum(v), and softmax ignores the constant sum(v),
        # so the weights are those of tanh (to ~1e-7). torch's CPU tanh is several times
        # slower than its sigmoid, and this [R, S, A] pass is the attention's main cost.
        scores = self.energy(torch.sigmoid(summed.mul_(2))).squeeze(2).mul_(2)  # [R, S]
        return _weighted_context(scores, annotations, mask, rows)


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
        self,
        query: Tensor,
        keys: Tensor,
        annotations: Tensor,
        mask: Tensor,
        rows: RowSources | None = None,
    ) -> tuple[Tensor, Tensor]:
        """query [R, H_dec] (the decoder state) -> context [R, K], weights [R, S]"""
        scores = _ungroup(torch.bmm(_group(query, rows), keys.transpose(1, 2)), rows)  # [R, S]
        return _weighted_context(scores, annotations, mask, rows)


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
        self,
        query: Tensor,
        keys: Tensor,
        annotations: Tensor,
        mask: Tensor,
        rows: RowSources | None = None,
    ) -> tuple[Tensor, None]:
        """query [R, *] -> the summary of each row's source [R, K], None"""
        summary = annotations[:, 0]
        return (summary if rows is None else summary[rows.source]), None


def _group(rows: Tensor, sources: RowSources | None) -> Tensor:
    """[R, *] -> [B, width, *]: the rows of each source together (width 1 without sources)."""
    return rows.unsqueeze(1) if sources is None else sources.group(rows)


def _ungroup(grouped: Tensor, sources: RowSources | None) -> Tensor:
    """[B, width, *] -> [R, *]"""
    return grouped.squeeze(1) if sources is None else sources.ungroup(grouped)


def _weighted_context(
    scores: Tensor, annotations: Tensor, mask: Tensor, rows: RowSources | None
) -> tuple[Tensor, Tensor]:
    """scores [R, S], annotations [B, S, K], mask [B, S] -> context [R, K], weights [R, S]"""
    row_mask = mask if rows is None else mask[rows.source]
    # -inf on padding gives exactly zero weight there after softmax; every row has at least
    # one real token, so no row is all -inf. float32 under autocast too (as CUDA's autocast
    # runs softmax; CPU's would keep bfloat16, 3 significant digits).
    weights = torch.softmax(scores.float().masked_fill(~row_mask, float("-inf")), dim=1)
    # Each source is read once for all its rows: the weights are laid out [B, width, S].
    context = _ungroup(torch.bmm(_group(weights, rows), annotations), rows)
    return context, weights


ATTENTIONS = {"bahdanau": AdditiveAttention, "luong": BilinearAttention, "none": FixedContext}
