"""Lexical constraints: beam search whose every output contains given target phrases.

Dynamic beam allocation (Post & Vilar 2018), batched like the other searches. Each step,
every live hypothesis is extended by its best tokens and also by the next piece of each
constraint it has not met (continuing one under way, or starting one). The candidates of a
sentence are grouped into banks by how many constraint pieces they have produced, and the
beam is filled from the banks in turn, best first within each, so hypotheses that have
met more constraints survive beside those that score best. eos is allowed only once every
constraint is met, and a candidate is dropped when its unmet pieces no longer fit in the
steps left before the length limit: every output contains every constraint.

Progress on each constraint is the longest prefix of it that ends the output (as in KMP
string matching), so constraints may overlap, share pieces, or repeat a piece. A sentence
without constraints is a plain fixed-width beam search; its result does not depend on the
other sentences of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from models.attention import RowSources
from models.search import (
    Decodable,
    DecoderWrapper,
    Hypothesis,
    length_penalty,
    max_output_lengths,
    start_decoding,
)
from models.seq2seq import Seq2Seq

Phrase = tuple[int, ...]


@cache
def advance(phrase: Phrase, matched: int, token: int) -> int:
    """How many pieces of `phrase` end the output once `token` follows an output whose last
    `matched` pieces are its first `matched` (the longest such prefix)."""
    if matched == len(phrase):
        return matched  # met: stays met
    text = (*phrase[:matched], token)
    for length in range(min(len(text), len(phrase)), 0, -1):
        if text[-length:] == phrase[:length]:
            return length
    return 0


@dataclass(frozen=True)
class Progress:
    """Where one hypothesis stands on its sentence's constraints."""

    phrases: tuple[Phrase, ...]
    matched: tuple[int, ...]  # per phrase: pieces matched at the output's end; len once met

    def after(self, token: int) -> Progress:
        return Progress(
            self.phrases,
            tuple(map(advance, self.phrases, self.matched, [token] * len(self.matched))),
        )

    @property
    def produced(self) -> int:
        """Constraint pieces produced: the hypothesis's bank."""
        return sum(self.matched)

    @property
    def done(self) -> bool:
        return all(m == len(p) for p, m in zip(self.phrases, self.matched, strict=True))

    @property
    def needed(self) -> int:
        """Pieces that surely complete every unmet constraint: the rest of the one furthest
        along, and all of the others. A next piece of that one lowers it by at least 1."""
        unmet = [(len(p), m) for p, m in zip(self.phrases, self.matched, strict=True) if m < len(p)]
        if not unmet:
            return 0
        return sum(length for length, _ in unmet) - max(m for _, m in unmet)

    def next_pieces(self) -> set[int]:
        """The pieces that continue or start an unmet constraint."""
        pieces = set()
        for phrase, matched in zip(self.phrases, self.matched, strict=True):
            if matched < len(phrase):
                pieces.update((phrase[matched], phrase[0]))
        return pieces


@dataclass
class _Candidate:
    sentence: int  # index among the running sentences
    parent: int  # decoder row extended
    token: int
    score: float  # log-probability with the token
    progress: Progress


@dataclass
class _Beams:
    """The live hypotheses, one decoder row each, grouped by running sentence."""

    sentence: list[int]
    scores: list[float]
    tokens: list[list[int]]
    progress: list[Progress]
    attention: Tensor  # [R, t, S] ([R, 0, S] when not kept)


def _allocate(candidates: list[_Candidate], beam_size: int) -> list[_Candidate]:
    """Dynamic beam allocation: the banks (constraint pieces produced) take turns, most
    pieces first, each giving its best candidate not yet taken, until the beam is full."""
    ranked = sorted(candidates, key=lambda c: -c.score)
    rank_in_bank: dict[int, int] = {}
    keyed = []
    for candidate in ranked:
        bank = candidate.progress.produced
        rank = rank_in_bank.get(bank, 0)
        rank_in_bank[bank] = rank + 1
        keyed.append(((rank, -bank, -candidate.score), candidate))
    keyed.sort(key=lambda pair: pair[0])
    return [candidate for _, candidate in keyed[:beam_size]]


@torch.inference_mode()
def constrained_beam_search(
    model: Seq2Seq | Decodable,
    src: Tensor,
    src_len: Tensor,
    constraints: Sequence[Sequence[Sequence[int]]],
    beam_size: int = 5,
    n_best: int = 1,
    alpha: float = 0.6,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    return_attention: bool = False,
    wrap_decoder: DecoderWrapper | None = None,
) -> list[list[Hypothesis]]:
    """src [B, S], src_len [B], constraints[i]: the target phrases (piece ids) sentence i must
    contain (may be none) -> for each sentence its n_best hypotheses, best first, scored as
    `beam_search` scores them (log-probability over the GNMT length penalty).

    Raises ValueError when a sentence's constraints cannot fit its length limit, or one is
    empty. `wrap_decoder` wraps the step decoder (a forced prefix)."""
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and beam_size ({beam_size}), not {n_best}")
    config, device = model.config, src.device
    batch_size = src.size(0)
    limits = max_output_lengths(src_len, max_len_a, max_len_b).tolist()
    phrases = [tuple(tuple(int(t) for t in p) for p in c) for c in constraints]
    for index, sentence_phrases in enumerate(phrases):
        if any(not p for p in sentence_phrases):
            raise ValueError(f"sentence {index} has an empty constraint")
        if sum(map(len, sentence_phrases)) > limits[index]:
            raise ValueError(f"the constraints of sentence {index} exceed its length limit")
    keep_attention = return_attention and config.attention != "none"
    src_lengths = src_len.tolist()
    decoder = start_decoding(model, src, src_len, wrap_decoder)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch_size)]
    active = list(range(batch_size))  # input index of each running sentence
    beams = _Beams(
        list(range(batch_size)),
        [0.0] * batch_size,
        [[] for _ in range(batch_size)],
        [Progress(p, (0,) * len(p)) for p in phrases],
        torch.empty((batch_size, 0, src.size(1)), device=device),
    )
    per_row = min(beam_size, config.tgt_vocab_size)
    eos = config.eos_id

    def hypothesis(row: int, tokens: list[int], score: float, sentence: int) -> Hypothesis:
        """Row `row`'s attention cut to `tokens` (this step's included when they hold it)."""
        if not keep_attention:
            return Hypothesis(tokens, score)
        attention = beams.attention[row]
        if len(tokens) > attention.size(0):
            attention = torch.cat([attention, step_attention[row]])
        return Hypothesis(tokens, score, attention[:, : src_lengths[sentence]].cpu())

    for t in range(max(limits)):
        prev = [tokens[-1] if tokens else config.bos_id for tokens in beams.tokens]
        log_probs, weights = decoder.log_probs(torch.tensor(prev, device=device))
        keep_attention = keep_attention and weights is not None
        step_attention = weights.float()[:, None] if keep_attention else None
        unmet = torch.tensor([not p.done for p in beams.progress], device=device)
        log_probs[unmet, eos] = float("-inf")  # no ending before every constraint is met
        options = _options(log_probs, beams.progress, per_row)

        by_sentence: list[list[_Candidate]] = [[] for _ in active]
        for row, tokens in enumerate(options):
            sentence, base, progress = beams.sentence[row], beams.scores[row], beams.progress[row]
            left = limits[active[sentence]] - (t + 1)
            for token, score in tokens.items():
                after = progress if token == eos else progress.after(token)
                if score > float("-inf") and after.needed <= left:  # still fits the limit
                    by_sentence[sentence].append(
                        _Candidate(sentence, row, token, base + score, after)
                    )

        penalty = length_penalty(t + 1, alpha)
        kept: list[_Candidate] = []
        done = [False] * len(active)
        for sentence, candidates in enumerate(by_sentence):
            original = active[sentence]
            live = []
            for candidate in _allocate(candidates, beam_size):
                if candidate.token == eos:  # eos is not part of the hypothesis
                    tokens, score = beams.tokens[candidate.parent], candidate.score / penalty
                    finished[original].append(hypothesis(candidate.parent, tokens, score, original))
                else:
                    live.append(candidate)
            at_limit = t + 1 >= limits[original]
            if at_limit:  # the live ones finish as extended; all their constraints are met
                for c in live:
                    tokens, score = [*beams.tokens[c.parent], c.token], c.score / penalty
                    finished[original].append(hypothesis(c.parent, tokens, score, original))
            best = max((h.score for h in finished[original]), default=float("-inf"))
            best_live = max((c.score for c in live), default=float("-inf")) / penalty
            enough = len(finished[original]) >= n_best and best >= best_live
            done[sentence] = at_limit or not live or enough
            if not done[sentence]:
                kept.extend(live)
        if all(done):
            break

        parents = torch.tensor([c.parent for c in kept], dtype=torch.long, device=device)
        attention = beams.attention[parents]
        if keep_attention:
            attention = torch.cat([attention, step_attention[parents]], dim=1)
        running = [s for s in range(len(active)) if not done[s]]
        renumber = {old: new for new, old in enumerate(running)}
        beams = _Beams(
            [renumber[c.sentence] for c in kept],
            [c.score for c in kept],
            [[*beams.tokens[c.parent], c.token] for c in kept],
            [c.progress for c in kept],
            attention,
        )
        sentences = None  # every sentence keeps its source row
        if len(running) < len(active):
            sentences = torch.tensor(running, dtype=torch.long, device=device)
        active = [active[s] for s in running]
        row_sentence = torch.tensor(beams.sentence, dtype=torch.long, device=device)
        decoder.select(parents, sentences, RowSources.of(row_sentence, len(active)))
    return [sorted(f, key=lambda h: h.score, reverse=True)[:n_best] for f in finished]


def _options(log_probs: Tensor, progress: Sequence[Progress], k: int) -> list[dict[int, float]]:
    """Per row, the tokens it may be extended by and their log-probabilities: its k best,
    and the next piece of each constraint it has not met (one gather for all rows)."""
    top_scores, top_tokens = log_probs.topk(k, dim=1)
    options = [
        dict(zip(tokens, scores, strict=True))
        for tokens, scores in zip(top_tokens.tolist(), top_scores.tolist(), strict=True)
    ]
    extra = [(row, piece) for row, p in enumerate(progress) for piece in sorted(p.next_pieces())]
    if extra:
        rows, pieces = zip(*extra, strict=True)
        for row, piece, score in zip(
            rows, pieces, log_probs[list(rows), list(pieces)].tolist(), strict=True
        ):
            options[row][piece] = score
    return options
