"""Sampling search: ancestral sampling with temperature, top-k and top-p (nucleus), batched.

Each sample row draws all its uniforms up front from a generator seeded for that row alone,
and picks each token as the inverse CDF of its filtered distribution at that step's uniform.
So a sentence's sample depends on its seed and its source only: never on the batch it
shares, its padding, or the device. Scores are the model's own log-probabilities of the
tokens drawn (temperature and filters change what is drawn, not how it is scored).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from models.ngrams import repeated_ngram_mask
from models.search import (
    Decodable,
    DecoderWrapper,
    Hypothesis,
    max_output_lengths,
    row_hypotheses,
    start_decoding,
)
from models.seq2seq import Seq2Seq

MAX_ROUNDS = 4  # draws of n rows per sentence before n-best settles for fewer distinct


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (a request's seed, a draw number, token ids): stable across
    processes and Python versions, unlike `hash`."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass(frozen=True)
class Sampler:
    """What to sample from: the model's distribution at `temperature`, restricted to the
    `top_k` most probable tokens (0: all) and to the nucleus of mass `top_p` (Holtzman et
    al. 2020: the fewest most probable tokens whose probabilities sum to at least top_p).
    Temperature 0 is the most probable token: greedy search."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0, top_k >= 0, 0 < top_p <= 1: {self}")

    def distribution(self, log_probs: Tensor, allowed: Tensor | None = None) -> Tensor:
        """log_probs [R, V] sorted best first, allowed [R, V] bool (None: all) -> the
        probabilities to draw from [R, V], each row summing to 1 (zeros outside)."""
        if allowed is None:
            allowed = torch.ones_like(log_probs, dtype=torch.bool)
        rank = allowed.long().cumsum(1) - 1  # among the allowed tokens, best first
        if self.temperature == 0:
            allowed = allowed & (rank == 0)
        elif self.top_k:
            allowed = allowed & (rank < self.top_k)
        scaled = log_probs / (self.temperature or 1.0)
        probs = torch.softmax(scaled.masked_fill(~allowed, float("-inf")), dim=-1)
        if self.top_p < 1:
            # keep a token while the mass before it is short of top_p: the smallest prefix
            # reaching top_p, always at least the first
            before = probs.cumsum(-1) - probs
            probs = probs * (before < self.top_p)
            probs = probs / probs.sum(-1, keepdim=True)
        return probs

    @staticmethod
    def pick(probs: Tensor, uniforms: Tensor) -> Tensor:
        """probs [R, V], uniforms [R] in [0, 1) -> the position drawn in each row [R]: the
        first whose cumulative probability exceeds the uniform (never a zero-probability
        one)."""
        cdf = probs.cumsum(-1)
        target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(1)
        return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=probs.size(1) - 1)


@torch.inference_mode()
def sample_search(
    model: Seq2Seq | Decodable,
    src: Tensor,
    src_len: Tensor,
    seeds: Sequence[int],
    sampler: Sampler | None = None,
    n: int = 1,
    no_repeat_ngram: int = 0,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    return_attention: bool = False,
    wrap_rows: Callable[[list[int]], DecoderWrapper] | None = None,
) -> list[list[Hypothesis]]:
    """src [B, S], src_len [B], seeds [B] (one per sentence) -> for each sentence up to `n`
    distinct samples, the most probable (by log-probability) first. `wrap_rows(sentences)`
    wraps the step decoder of rows reading those sentences (a forced prefix per sentence).

    Draws n samples per sentence at a time, draw d of sentence i seeded with
    `derive_seed(seeds[i], d)`, and draws again (at most MAX_ROUNDS times) for sentences
    with fewer than n distinct ones; a distribution too peaked for n distinct samples (a
    temperature near 0) leaves fewer. `no_repeat_ngram` > 0 never draws a token that
    repeats an n-gram of that size."""
    if len(seeds) != src.size(0) or n < 1:
        raise ValueError(f"need one seed per sentence ({src.size(0)}) and n >= 1, not {n}")
    sampler = sampler or Sampler()
    found: list[dict[tuple[int, ...], Hypothesis]] = [{} for _ in seeds]
    drawn = [0] * len(seeds)
    for _ in range(MAX_ROUNDS):
        pending = [i for i, samples in enumerate(found) if len(samples) < n]
        if not pending:
            break
        sentences = [i for i in pending for _ in range(n)]
        row_seeds = [derive_seed(seeds[i], drawn[i] + d) for i in pending for d in range(n)]
        for i in pending:
            drawn[i] += n
        index = torch.tensor(sentences, device=src.device)
        limits = (max_len_a, max_len_b)
        wrap = wrap_rows(sentences) if wrap_rows else None
        rows = _sample_rows(
            model,
            src[index],
            src_len[index],
            row_seeds,
            sampler,
            no_repeat_ngram,
            limits,
            return_attention,
            wrap,
        )
        for sentence, hypothesis in zip(sentences, rows, strict=True):
            found[sentence].setdefault(tuple(hypothesis.tokens), hypothesis)
    return [sorted(s.values(), key=lambda h: h.score, reverse=True)[:n] for s in found]


def _sample_rows(
    model: Seq2Seq | Decodable,
    src: Tensor,
    src_len: Tensor,
    seeds: Sequence[int],
    sampler: Sampler,
    no_repeat_ngram: int,
    length_limit: tuple[float, int],
    return_attention: bool,
    wrap: DecoderWrapper | None = None,
) -> list[Hypothesis]:
    """One sample per row of src [R, S], row r drawn with `seeds[r]`; finished rows leave
    the batch, as in greedy search."""
    config, device = model.config, src.device
    rows = src.size(0)
    limits = max_output_lengths(src_len, *length_limit)
    steps = int(limits.max())
    # On the CPU, whatever the device: the same seed gives the same uniforms everywhere.
    uniforms = torch.stack(
        [torch.rand(steps, generator=torch.Generator().manual_seed(s)) for s in seeds]
    ).to(device)
    tokens = src.new_full((rows, steps), config.pad_id)
    attention = src.new_zeros((rows, steps, src.size(1)), dtype=torch.float)
    lengths = limits.clone()
    scores = torch.zeros(rows, device=device)
    decoder = start_decoding(model, src, src_len, wrap)
    active = torch.arange(rows, device=device)
    prev = src.new_full((rows,), config.bos_id)
    for t in range(steps):
        # the whole distribution, best first: what top-k, top-p and the inverse CDF read
        log_probs, ids, weights = decoder.top_log_probs(prev, config.tgt_vocab_size)
        allowed = None
        if no_repeat_ngram:
            allowed = ~repeated_ngram_mask(tokens[active, :t], ids, no_repeat_ngram)
        position = sampler.pick(sampler.distribution(log_probs, allowed), uniforms[active, t])
        best = ids.gather(1, position[:, None]).squeeze(1)
        tokens[active, t] = best
        scores[active] += log_probs.gather(1, position[:, None]).squeeze(1)
        if return_attention and weights is not None:
            attention[active, t] = weights.float()
        ended = best == config.eos_id
        lengths[active[ended]] = t  # eos is not part of the output
        keep = ~(ended | (t + 1 >= limits[active]))
        if keep.all():
            prev = best
            continue
        if not keep.any():
            break
        active, prev = active[keep], best[keep]
        kept = keep.nonzero().squeeze(1)
        decoder.select(kept, sentences=kept)
    keep_attention = return_attention and config.attention != "none"
    return row_hypotheses(tokens, scores, lengths, attention if keep_attention else None, src_len)
