"""No-repeat-n-gram: the candidate tokens that would repeat an n-gram a hypothesis already
holds (Paulus et al. 2017), as one batched mask that beam search and sampling both apply."""

from __future__ import annotations

import torch
from torch import Tensor


def repeated_ngram_mask(history: Tensor, candidates: Tensor, n: int) -> Tensor:
    """history [R, t] tokens so far (no bos), candidates [R, k] token ids -> [R, k] bool:
    True where the candidate would complete an n-gram that its row's history holds already.

    n 0 bans nothing; n 1 bans every token already emitted."""
    rows, length = history.shape
    if n < 1 or length < n:  # no complete n-gram yet, so nothing can repeat one
        return torch.zeros_like(candidates, dtype=torch.bool)
    windows = history.unfold(1, n, 1)  # [R, W, n]: every n-gram so far
    prefix = history[:, length - n + 1 :]  # [R, n - 1]: what the next token would extend
    matches = (windows[:, :, :-1] == prefix[:, None, :]).all(-1)  # [R, W]
    ends = windows[:, :, -1]  # [R, W]: the token that completed each n-gram
    # A dense [R, V] ban table, then read at the candidates: memory R * V, not R * k * W.
    size = int(torch.maximum(candidates.max(), ends.max())) + 1
    banned = torch.zeros(rows, size, dtype=torch.uint8, device=history.device)
    banned.scatter_reduce_(1, ends, matches.to(torch.uint8), reduce="amax")
    return banned.gather(1, candidates).bool()


def without_repeated_ngrams(
    scores: Tensor, tokens: Tensor, history: Tensor, n: int, keep: int
) -> tuple[Tensor, Tensor]:
    """scores, tokens [R, k] (best first), history [R, t] -> the `keep` best candidates that
    repeat no n-gram, [R, keep] each; a row with fewer gets -inf scores in the rest."""
    scores = scores.masked_fill(repeated_ngram_mask(history, tokens, n), float("-inf"))
    best, index = scores.topk(min(keep, scores.size(1)), dim=1)
    return best, tokens.gather(1, index)
