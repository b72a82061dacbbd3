"""Batched greedy and beam search as plain functions over a Seq2Seq model.

Both shrink the batch as sentences finish, so a finished hypothesis stops costing compute.
Source lengths bound the output: a sentence stops after `max_len_a * src_len + max_len_b`
target tokens if it has not produced eos by then.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from models.decoder import EncodedSource
from models.seq2seq import Seq2Seq


@dataclass
class Hypothesis:
    tokens: list[int]  # without bos/eos
    score: float  # log-probability, divided by the length penalty for beam search
    attention: Tensor | None = None  # [len(tokens), src_len] when asked for


def length_penalty(length: Tensor | int, alpha: float) -> Tensor | float:
    """GNMT length penalty ((5 + |Y|) / 6) ** alpha (Wu et al. 2016)."""
    return ((5.0 + length) / 6.0) ** alpha


def max_output_lengths(src_len: Tensor, max_len_a: float, max_len_b: int) -> Tensor:
    return (src_len.float() * max_len_a + max_len_b).long().clamp(min=1)


class _StepDecoder:
    """Holds the encoded batch and the decoder state; advances one token at a time.

    Rows can be reordered or dropped with `select`, which is how beams are re-ranked and
    finished sentences leave the batch. The encoded source holds one row per sentence, shared
    by the sentence's consecutive decoder rows (its beams); it is only gathered again when
    sentences leave.
    """

    def __init__(self, model: Seq2Seq, source: EncodedSource, hidden: Tensor) -> None:
        self.decoder = model.decoder
        self.source, self.hidden = source, hidden

    def top_log_probs(self, prev_tokens: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """prev_tokens [R] -> the k best log-probabilities [R, k] and their token ids [R, k],
        attention weights [R, S] or None.

        The k best log-probabilities are the k best logits minus the row's logsumexp, so the
        full [R, V] log-softmax is never written out: at beam 5 and a batch of 64 that is
        320 x 8000 floats a step, read and written twice more for nothing."""
        embedded = self.decoder.embedding(prev_tokens)
        self.hidden, context, weights = self.decoder.step(
            self.hidden, self.decoder.emb_gates(embedded), self.source
        )
        logits = self.decoder.logits(self.hidden, embedded, context).float()
        top_logits, top_ids = logits.topk(k, dim=-1)
        return top_logits - torch.logsumexp(logits, dim=-1, keepdim=True), top_ids, weights

    def select(self, rows: Tensor, sentences: Tensor | None = None) -> None:
        """Keep decoder rows `rows` (in that order) and, when given, source rows `sentences`."""
        self.hidden = self.hidden[rows]
        if sentences is not None:
            self.source = self.source.select(sentences)


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq,
    src: Tensor,
    src_len: Tensor,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    return_attention: bool = False,
) -> list[Hypothesis]:
    """src [B, S], src_len [B] -> one hypothesis per sentence, in input order."""
    config = model.config
    batch_size = src.size(0)
    limits = max_output_lengths(src_len, max_len_a, max_len_b)
    steps = int(limits.max())
    tokens = src.new_full((batch_size, steps), config.pad_id)
    attention = src.new_zeros((batch_size, steps, src.size(1)), dtype=torch.float)
    lengths = limits.clone()
    scores = torch.zeros(batch_size)
    decoder = _StepDecoder(model, *model.encode(src, src_len))
    active = torch.arange(batch_size, device=src.device)
    prev = src.new_full((batch_size,), config.bos_id)
    for t in range(steps):
        best_scores, best, weights = decoder.top_log_probs(prev, 1)
        best_scores, best = best_scores.squeeze(1), best.squeeze(1)
        tokens[active, t] = best
        scores[active.cpu()] += best_scores.cpu()
        if return_attention and weights is not None:
            attention[active, t] = weights.float()
        ended = best == config.eos_id
        lengths[active[ended]] = t  # eos is not part of the output
        keep = ~(ended | (t + 1 >= limits[active]))
        if not keep.any():
            break
        active, prev = active[keep], best[keep]
        rows = keep.nonzero().squeeze(1)
        decoder.select(rows, sentences=rows)
    keep_attention = return_attention and config.attention != "none"
    return [
        Hypothesis(
            tokens[i, : lengths[i]].tolist(),
            float(scores[i]),
            attention[i, : lengths[i], : src_len[i]].cpu() if keep_attention else None,
        )
        for i in range(batch_size)
    ]


class _Finished:
    """Finished hypotheses per sentence, plus the tensors the stopping rule needs."""

    def __init__(self, batch_size: int, device: torch.device) -> None:
        self.hypotheses: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
        self.count = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.best = torch.full((batch_size,), float("-inf"), device=device)

    def add(self, sentence: int, tokens: Tensor, score: float, attention: Tensor | None):
        self.hypotheses[sentence].append(Hypothesis(tokens.tolist(), score, attention))
        self.count[sentence] += 1
        self.best[sentence] = max(float(self.best[sentence]), score)

    def n_best(self, sentence: int, n: int) -> list[Hypothesis]:
        return sorted(self.hypotheses[sentence], key=lambda h: h.score, reverse=True)[:n]


@torch.inference_mode()
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_len: Tensor,
    beam_size: int = 5,
    n_best: int = 1,
    alpha: float = 0.6,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    return_attention: bool = False,
) -> list[list[Hypothesis]]:
    """src [B, S], src_len [B] -> for each sentence its n_best hypotheses, best first.

    Each step keeps the best `beam_size` unfinished continuations per sentence and finishes
    those of the top `beam_size` candidates that end in eos. A sentence stops when it has
    `beam_size` finished hypotheses, or `n_best` of them and the best finished one scores
    at least as well (length-normalised) as the best unfinished one, or at its length limit.
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and beam_size ({beam_size}), not {n_best}")
    config, device = model.config, src.device
    batch_size, beams = src.size(0), beam_size
    keep_attention = return_attention and config.attention != "none"
    limits = max_output_lengths(src_len, max_len_a, max_len_b)
    # Every sentence starts from one hypothesis (bos), so the first step runs on the batch
    # itself and its best continuations become the beams: no identical rows are decoded.
    decoder = _StepDecoder(model, *model.encode(src, src_len))
    finished = _Finished(batch_size, device)
    active = torch.arange(batch_size, device=device)  # input index of each running sentence
    alive_scores = torch.zeros((batch_size, 1), device=device)  # [running, width]
    alive_tokens = src.new_empty((batch_size, 0))
    alive_attention = torch.empty((batch_size, 0, src.size(1)), device=device)
    prev = src.new_full((batch_size,), config.bos_id)
    per_row = min(2 * beams, config.tgt_vocab_size)

    def finish(row: int, sentence: int, tokens: Tensor, score: float) -> None:
        attention = alive_attention[row, :, : src_len[sentence]].cpu() if keep_attention else None
        finished.add(sentence, tokens, score, attention)

    for t in range(int(limits.max())):
        # A sentence's 2 * beams best continuations are among its rows' 2 * beams best each.
        row_scores, row_tokens, weights = decoder.top_log_probs(prev, per_row)
        running, width = alive_scores.shape
        penalty = length_penalty(t + 1, alpha)
        candidates = (alive_scores.view(-1, 1) + row_scores).view(running, width * per_row)
        top_scores, top_index = candidates.topk(min(2 * beams, width * per_row), dim=1)
        token = row_tokens.view(running, width * per_row).gather(1, top_index)
        origin = top_index // per_row + (torch.arange(running, device=device) * width)[:, None]
        ends = (token[:, :beams] == config.eos_id) & (top_scores[:, :beams] > float("-inf"))
        for i, j in ends.nonzero().tolist():
            row = int(origin[i, j])
            finish(row, int(active[i]), alive_tokens[row], float(top_scores[i, j]) / penalty)

        alive_scores, pick = top_scores.masked_fill(token == config.eos_id, float("-inf")).topk(
            min(beams, top_scores.size(1)), dim=1
        )
        width = alive_scores.size(1)
        rows = origin.gather(1, pick).view(-1)
        prev = token.gather(1, pick).view(-1)
        alive_tokens = torch.cat([alive_tokens[rows], prev[:, None]], dim=1)
        if keep_attention:
            alive_attention = torch.cat([alive_attention[rows], weights[rows, None]], dim=1)

        at_limit = t + 1 >= limits[active]
        for i in at_limit.nonzero().squeeze(1).tolist():
            for k in range(width):
                if alive_scores[i, k] > float("-inf"):
                    row = i * width + k
                    finish(
                        row, int(active[i]), alive_tokens[row], float(alive_scores[i, k]) / penalty
                    )

        count, best = finished.count[active], finished.best[active]
        done = (
            at_limit
            | (count >= beams)
            | ((count >= n_best) & (best >= alive_scores[:, 0] / penalty))
        )
        if done.all():
            break
        if not done.any():
            decoder.select(rows)  # beams re-ranked; every sentence keeps its source row
            continue
        keep = (~done).nonzero().squeeze(1)
        keep_rows = (keep[:, None] * width + torch.arange(width, device=device)).view(-1)
        active, alive_scores = active[keep], alive_scores[keep]
        alive_tokens, prev = alive_tokens[keep_rows], prev[keep_rows]
        if keep_attention:
            alive_attention = alive_attention[keep_rows]
        decoder.select(rows[keep_rows], sentences=keep)
    return [finished.n_best(i, n_best) for i in range(batch_size)]
