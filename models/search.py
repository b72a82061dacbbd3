"""Batched greedy and beam search as plain functions over a Seq2Seq model.

Both shrink the batch as sentences finish, so a finished hypothesis stops costing compute.
Source lengths bound the output: a sentence stops after `max_len_a * src_len + max_len_b`
target tokens if it has not produced eos by then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from models.attention import RowSources
from models.config import ModelConfig
from models.decoder import EncodedSource
from models.ngrams import without_repeated_ngrams
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


class StepDecoder:
    """Holds the encoded batch and the decoder state; advances one token at a time.

    Rows can be reordered or dropped with `select`, which is how beams are re-ranked and
    finished sentences leave the batch. The encoded source holds one row per sentence, shared
    by the sentence's consecutive decoder rows (its beams, as many as it has live
    hypotheses, told by `rows`); it is only gathered again when sentences leave.
    """

    def __init__(self, model: Seq2Seq, source: EncodedSource, hidden: Tensor) -> None:
        self.decoder = model.decoder
        self.source, self.hidden = source, hidden
        self.rows: RowSources | None = None  # None: row i reads sentence i
        # A candidate list (`restricted_to`): the target ids [C] the output layer scores,
        # and its rows of them; None: the whole vocabulary.
        self.vocabulary: Tensor | None = None
        self.output_rows: tuple[Tensor, Tensor | None] | None = None

    def restricted_to(self, vocabulary: Tensor) -> StepDecoder:
        """Score only the target ids `vocabulary` [C] (sorted, distinct) from now on: the
        output layer multiplies just their rows and the softmax normalises over them
        (`models.candidates`). Returns self."""
        output = self.decoder.output
        if not isinstance(output, torch.nn.Linear):
            raise ValueError("a candidate list needs a float output layer (not int8)")
        bias = None if output.bias is None else output.bias[vocabulary]
        self.vocabulary, self.output_rows = vocabulary, (output.weight[vocabulary], bias)
        return self

    def top_log_probs(self, prev_tokens: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """prev_tokens [R] -> the k best log-probabilities [R, k] and their token ids [R, k],
        attention weights [R, S] or None."""
        log_probs, weights = self.log_probs(prev_tokens)
        scores, ids = top_k(log_probs, min(k, log_probs.size(-1)))
        return scores, self.token_ids(ids), weights

    def token_ids(self, columns: Tensor) -> Tensor:
        """Columns of `log_probs` -> target token ids (the same without a candidate list)."""
        return columns if self.vocabulary is None else self.vocabulary[columns]

    def log_probs(self, prev_tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """One step: prev_tokens [R] -> log-probabilities [R, V] (float32; [R, C] over a
        candidate list's ids, see `token_ids`), attention weights [R, S] or None.

        A full log-softmax: torch's is one fused pass over [R, V], while the k best logits
        minus a `logsumexp` (which never writes [R, V] log-probabilities) is slower on CPU,
        as logsumexp runs as five separate ops."""
        embedded = self.decoder.embedding(prev_tokens)
        self.hidden, context, weights = self.decoder.step(
            self.hidden, self.decoder.emb_gates(embedded), self.source, self.rows
        )
        if self.output_rows is None:
            logits = self.decoder.logits(self.hidden, embedded, context)
        else:
            features = self.decoder.output_features(self.hidden, embedded, context)
            logits = torch.nn.functional.linear(features, *self.output_rows)
        return torch.log_softmax(logits.float(), dim=-1), weights

    def select(
        self, rows: Tensor, sentences: Tensor | None = None, row_sources: RowSources | None = None
    ) -> None:
        """Keep decoder rows `rows` (in that order) reading `row_sources`, and, when given,
        only source rows `sentences`."""
        self.hidden = self.hidden[rows]
        self.rows = row_sources
        if sentences is not None:
            self.source = self.source.select(sentences)


def top_k(log_probs: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """log_probs [R, V] -> the k best [R, k] and their token ids [R, k] (`max` for greedy's
    k = 1, cheaper than `topk`)."""
    return log_probs.max(-1, keepdim=True) if k == 1 else log_probs.topk(k, dim=-1)


class StepDecoding(Protocol):
    """What the searches ask of a step decoder: `StepDecoder`, or an ensemble's
    (`models.ensemble`)."""

    rows: RowSources | None

    def top_log_probs(
        self, prev_tokens: Tensor, k: int
    ) -> tuple[Tensor, Tensor, Tensor | None]: ...

    def log_probs(self, prev_tokens: Tensor) -> tuple[Tensor, Tensor | None]: ...

    def select(
        self, rows: Tensor, sentences: Tensor | None = None, row_sources: RowSources | None = None
    ) -> None: ...


class Decodable(Protocol):
    """A model the searches decode with other than a Seq2Seq (an ensemble): a config for the
    special ids, vocabulary and attention kind, and a step decoder of its own."""

    config: ModelConfig

    def step_decoder(self, src: Tensor, src_len: Tensor) -> StepDecoding: ...


# Wraps a search's step decoder, e.g. to force a prefix (`models.prefix.ForcedPrefix`).
DecoderWrapper = Callable[[StepDecoding], StepDecoding]


def start_decoding(
    model: Seq2Seq | Decodable, src: Tensor, src_len: Tensor, wrap: DecoderWrapper | None = None
) -> StepDecoding:
    """The step decoder of `model` over the encoded batch src [B, S], src_len [B]; wrapped
    by `wrap` when given."""
    if isinstance(model, Seq2Seq):
        decoder = StepDecoder(model, *model.encode(src, src_len))
    else:
        decoder = model.step_decoder(src, src_len)
    return wrap(decoder) if wrap else decoder


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq | Decodable,
    src: Tensor,
    src_len: Tensor,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    return_attention: bool = False,
    wrap_decoder: DecoderWrapper | None = None,
) -> list[Hypothesis]:
    """src [B, S], src_len [B] -> one hypothesis per sentence, in input order.
    `wrap_decoder` wraps the step decoder (a forced prefix)."""
    config = model.config
    batch_size = src.size(0)
    limits = max_output_lengths(src_len, max_len_a, max_len_b)
    steps = int(limits.max())
    tokens = src.new_full((batch_size, steps), config.pad_id)
    attention = src.new_zeros((batch_size, steps, src.size(1)), dtype=torch.float)
    lengths = limits.clone()
    scores = torch.zeros(batch_size)
    decoder = start_decoding(model, src, src_len, wrap_decoder)
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
        if keep.all():  # nobody finished: the decoder's rows stay as they are
            prev = best
            continue
        if not keep.any():
            break
        active, prev = active[keep], best[keep]
        rows = keep.nonzero().squeeze(1)
        decoder.select(rows, sentences=rows)
    keep_attention = return_attention and config.attention != "none"
    return row_hypotheses(tokens, scores, lengths, attention if keep_attention else None, src_len)


def row_hypotheses(
    tokens: Tensor, scores: Tensor, lengths: Tensor, attention: Tensor | None, src_len: Tensor
) -> list[Hypothesis]:
    """One hypothesis per row of a search that decodes one output per row: tokens [R, T],
    scores [R], lengths [R] (without eos), attention [R, T, S] or None, src_len [R]."""
    return [
        Hypothesis(
            tokens[i, : lengths[i]].tolist(),
            float(scores[i]),
            None if attention is None else attention[i, : lengths[i], : src_len[i]].cpu(),
        )
        for i in range(tokens.size(0))
    ]


class _Finished:
    """Finished hypotheses per sentence, plus the tensors the stopping rule needs."""

    def __init__(self, batch_size: int, device: torch.device) -> None:
        self.hypotheses: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
        self.count = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.best = torch.full((batch_size,), float("-inf"), device=device)

    def add(self, sentence: int, hypothesis: Hypothesis) -> None:
        self.hypotheses[sentence].append(hypothesis)
        self.count[sentence] += 1
        self.best[sentence] = max(float(self.best[sentence]), hypothesis.score)

    def n_best(self, sentence: int, n: int) -> list[Hypothesis]:
        return sorted(self.hypotheses[sentence], key=lambda h: h.score, reverse=True)[:n]


@dataclass
class _LiveBeams:
    """The live hypotheses of the running sentences, one decoder row each, grouped by
    sentence and best first within it."""

    sentence: Tensor  # [R] index of the row's running sentence, non-decreasing
    scores: Tensor  # [R] log-probability so far
    tokens: Tensor  # [R, t] tokens so far
    attention: Tensor  # [R, t, S] their attention weights ([R, 0, S] when not asked for)
    parent: Tensor  # [R] the row of the previous step each was extended from

    def hypothesis(self, row: int, score: float, src_len: int | None) -> Hypothesis:
        """Row `row` as a finished hypothesis with `score`; its attention over the source's
        first `src_len` tokens, or None when `src_len` is None (attention not kept)."""
        attention = None if src_len is None else self.attention[row, :, :src_len].cpu()
        return Hypothesis(self.tokens[row].tolist(), score, attention)

    def extend(self, picked: _Extensions, live: Tensor, weights: Tensor | None) -> _LiveBeams:
        """The `live` extensions [running, n] as the next step's rows; `weights` [R, S] the
        step's attention, kept when given."""
        parent = picked.parents[live]
        attention = self.attention[parent]
        if weights is not None:
            attention = torch.cat([attention, weights[parent, None]], dim=1)
        sentence = torch.arange(live.size(0), device=live.device).repeat_interleave(live.sum(1))
        tokens = torch.cat([self.tokens[parent], picked.tokens[live, None]], dim=1)
        return _LiveBeams(sentence, picked.scores[live], tokens, attention, parent)

    def without(self, done: Tensor) -> _LiveBeams:
        """Drop the rows of the sentences `done` [running]; the others are renumbered."""
        rows = ~done[self.sentence]
        renumber = (~done).long().cumsum(0) - 1
        return _LiveBeams(
            renumber[self.sentence[rows]],
            self.scores[rows],
            self.tokens[rows],
            self.attention[rows],
            self.parent[rows],
        )


@dataclass
class _Extensions:
    """Each running sentence's best extensions of its live hypotheses, [running, n], best
    first; `valid` marks those it keeps (within its free slots, not pruned)."""

    scores: Tensor  # log-probability with the new token
    tokens: Tensor  # the new token
    parents: Tensor  # the row extended
    valid: Tensor

    @staticmethod
    def best(
        beams: _LiveBeams,
        layout: RowSources,
        row_scores: Tensor,
        row_tokens: Tensor,
        slots: Tensor,
        prune: float,
    ) -> _Extensions:
        """layout: which running sentence each of the R rows of `beams` belongs to;
        row_scores, row_tokens [R, k]: each row's k best next tokens; slots [running]: how
        many extensions each sentence may keep."""
        candidates = layout.group(beams.scores[:, None] + row_scores, float("-inf")).flatten(1)
        parents = torch.arange(row_tokens.size(0), device=row_tokens.device)
        parents = layout.group(parents[:, None].expand_as(row_tokens)).flatten(1)
        scores, index = candidates.topk(min(int(slots.max()), candidates.size(1)), dim=1)
        rank = torch.arange(scores.size(1), device=scores.device)
        valid = (rank < slots[:, None]) & (scores > float("-inf"))
        if prune > 0:
            valid &= scores >= scores[:, :1] - prune
        tokens = layout.group(row_tokens).flatten(1).gather(1, index)
        return _Extensions(scores, tokens, parents.gather(1, index), valid)


@torch.inference_mode()
def beam_search(
    model: Seq2Seq | Decodable,
    src: Tensor,
    src_len: Tensor,
    beam_size: int = 5,
    n_best: int = 1,
    alpha: float = 0.6,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    return_attention: bool = False,
    prune: float = 0.0,
    no_repeat_ngram: int = 0,
    wrap_decoder: DecoderWrapper | None = None,
) -> list[list[Hypothesis]]:
    """src [B, S], src_len [B] -> for each sentence its n_best hypotheses, best first.

    A sentence holds at most `beam_size` hypotheses, finished or live. Each step extends
    every live one and keeps the sentence's `beam_size - finished` best extensions; those
    ending in eos are finished, so every finished hypothesis narrows its sentence's beam by
    one (the search of Bahdanau et al.'s RNNsearch). A sentence stops when no live hypothesis
    is left, when it has `n_best` finished and the best of them scores at least as well
    (length-normalised) as the best live one, or at its length limit.

    `prune` > 0 also drops every extension whose log-probability trails the sentence's best
    extension of the step by more than `prune` (absolute threshold pruning, Freitag &
    Al-Onaizan 2017): where the model is sure, the beam narrows to the few candidates that
    could still win, and each dropped row is a decoder step saved. It can leave fewer than
    `n_best` hypotheses, so it needs `n_best` 1. A tiny `prune` is greedy search.

    `no_repeat_ngram` > 0 drops every extension that would repeat an n-gram of that size
    already in its hypothesis (`models.ngrams`).
    `wrap_decoder` wraps the step decoder (a forced prefix).
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and beam_size ({beam_size}), not {n_best}")
    if prune < 0 or (prune > 0 and n_best > 1):
        raise ValueError(f"prune must be 0, or positive with n_best 1, not {prune} ({n_best=})")
    config, device = model.config, src.device
    batch_size = src.size(0)
    keep_attention = return_attention and config.attention != "none"
    limits = max_output_lengths(src_len, max_len_a, max_len_b)
    # Each sentence's source length, to cut its attention to; None: no attention kept.
    attention_lengths = src_len.tolist() if keep_attention else [None] * batch_size
    # Every sentence starts from one hypothesis (bos), so the first step runs on the batch
    # itself: no identical rows are decoded.
    decoder = start_decoding(model, src, src_len, wrap_decoder)
    finished = _Finished(batch_size, device)
    active = torch.arange(batch_size, device=device)  # input index of each running sentence
    rows = torch.arange(batch_size, device=device)
    beams = _LiveBeams(
        rows,
        torch.zeros(batch_size, device=device),
        src.new_empty((batch_size, 0)),
        torch.empty((batch_size, 0, src.size(1)), device=device),
        rows,
    )
    # A sentence keeps at most beam_size extensions, so each row's beam_size best suffice.
    per_row = min(beam_size, config.tgt_vocab_size)

    for t in range(int(limits.max())):
        prev = beams.tokens[:, -1] if t else src.new_full((batch_size,), config.bos_id)
        # a row bans at most t tokens (one per n-gram so far): that many more suffice
        wanted = min(per_row + t, config.tgt_vocab_size) if no_repeat_ngram else per_row
        row_scores, row_tokens, weights = decoder.top_log_probs(prev, wanted)
        if no_repeat_ngram:
            row_scores, row_tokens = without_repeated_ngrams(
                row_scores, row_tokens, beams.tokens, no_repeat_ngram, per_row
            )
        slots = beam_size - finished.count[active]
        # The decoder's rows are the beams' rows: one layout serves both (none at step 0).
        layout = decoder.rows or RowSources.of(beams.sentence, active.numel())
        picked = _Extensions.best(beams, layout, row_scores, row_tokens, slots, prune)
        penalty = length_penalty(t + 1, alpha)
        ends = picked.valid & (picked.tokens == config.eos_id)
        # An eos finishes its parent row as it was before this step's extension: the eos is
        # not part of the hypothesis.
        for i, j in ends.nonzero().tolist():
            sentence = int(active[i])
            score = float(picked.scores[i, j]) / penalty
            hypothesis = beams.hypothesis(
                int(picked.parents[i, j]), score, attention_lengths[sentence]
            )
            finished.add(sentence, hypothesis)
        live = picked.valid & ~ends
        beams = beams.extend(picked, live, weights if keep_attention else None)

        # A sentence at its limit finishes its live rows as extended, this step's token included.
        at_limit = t + 1 >= limits[active]
        for row in at_limit[beams.sentence].nonzero().squeeze(1).tolist():
            sentence = int(active[beams.sentence[row]])
            score = float(beams.scores[row]) / penalty
            finished.add(sentence, beams.hypothesis(row, score, attention_lengths[sentence]))

        best_live = picked.scores.masked_fill(~live, float("-inf")).amax(dim=1)
        count, best = finished.count[active], finished.best[active]
        done = at_limit | ~live.any(dim=1) | ((count >= n_best) & (best >= best_live / penalty))
        if done.all():
            break
        sentences = None  # every sentence keeps its source row
        if done.any():
            beams, active = beams.without(done), active[~done]
            sentences = (~done).nonzero().squeeze(1)
        decoder.select(beams.parent, sentences, RowSources.of(beams.sentence, active.numel()))
    return [finished.n_best(i, n_best) for i in range(batch_size)]
