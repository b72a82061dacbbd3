"""Candidate lists for decoding (Jean et al. 2014, section 3.2; Marian's lexical shortlist).

Per batch, the target ids a search may choose from are the K most frequent target ids of the
training data, the K' most likely translations of every source id in the batch, and the
special ids. The word-translation table is IBM Model 1's t(target | source), estimated by
EM over the training pairs' token ids (plain numpy over the co-occurring pairs; a few
iterations suffice for a shortlist, which only needs each source id's top entries).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

CANDIDATES_FILE = "candidates.npz"
NO_CANDIDATE = -1  # pads a source id's row when it has fewer than K' translations


@dataclass(frozen=True)
class CandidateTable:
    """frequent [F]: target ids, most frequent first; translations [V_src, T]: each source
    id's most likely target ids, best first (NO_CANDIDATE past what it has)."""

    frequent: np.ndarray
    translations: np.ndarray

    def candidates(
        self,
        src: Tensor,
        frequent: int,
        per_source: int,
        always: Sequence[int] = (),
    ) -> Tensor:
        """The sorted, distinct target ids [C] a batch src [B, S] (padding included: pad's
        row adds nothing new once `always` holds the specials) may decode to: the `frequent`
        most frequent, the `per_source` best translations of each of its source ids, and
        `always`."""
        if frequent > len(self.frequent) or per_source > self.translations.shape[1]:
            raise ValueError(
                f"the candidate table holds {len(self.frequent)} frequent ids and "
                f"{self.translations.shape[1]} translations per source id; asked for "
                f"{frequent} and {per_source}"
            )
        if frequent < 1 and per_source < 1:
            raise ValueError("a candidate list needs frequent ids or translations per source id")
        sources = np.unique(src.cpu().numpy())
        translations = self.translations[sources, :per_source].ravel()
        ids = np.concatenate(
            [self.frequent[:frequent], translations[translations != NO_CANDIDATE], always]
        )
        return torch.from_numpy(np.unique(ids.astype(np.int64))).to(src.device)

    def save(self, path: str | Path | BinaryIO) -> None:
        np.savez_compressed(path, frequent=self.frequent, translations=self.translations)

    @classmethod
    def load(cls, path: str | Path) -> CandidateTable:
        with np.load(path, allow_pickle=False) as arrays:
            return cls(arrays["frequent"], arrays["translations"])


def build_candidate_table(
    pairs: Iterable[tuple[Sequence[int], Sequence[int]]],
    src_vocab_size: int,
    tgt_vocab_size: int,
    frequent: int = 1000,
    per_source: int = 20,
    iterations: int = 5,
    exclude: Sequence[int] = (),
) -> CandidateTable:
    """The table from (source ids, target ids) pairs: target frequencies and IBM Model 1's
    t(target | source) by `iterations` of EM. Ids in `exclude` (pad, bos, eos, unk) are never
    candidates: decoding adds the specials itself."""
    sentence_tgt = []
    events_s, events_t, events_position = [], [], []
    position = 0
    for src, tgt in pairs:
        src, tgt = np.asarray(src, np.int64), np.asarray(tgt, np.int64)
        if not len(src) or not len(tgt):
            continue
        # every (source id, target position) co-occurrence; a target position is one
        # target token of one sentence, over which its alignment probabilities sum to 1
        events_s.append(np.tile(src, len(tgt)))
        events_t.append(np.repeat(tgt, len(src)))
        events_position.append(np.repeat(np.arange(position, position + len(tgt)), len(src)))
        position += len(tgt)
        sentence_tgt.append(tgt)
    if not events_s:
        raise ValueError("no training pairs to build a candidate table from")
    s, t = np.concatenate(events_s), np.concatenate(events_t)
    positions = np.concatenate(events_position)
    keys, pair_of_event = np.unique(s * tgt_vocab_size + t, return_inverse=True)
    pair_s = keys // tgt_vocab_size
    prob = np.ones(len(keys))  # t(t|s), uniform over what co-occurs to start with
    for _ in range(iterations):
        weight = prob[pair_of_event]
        weight /= np.bincount(positions, weights=weight)[positions]
        counts = np.bincount(pair_of_event, weights=weight, minlength=len(keys))
        prob = counts / np.bincount(pair_s, weights=counts, minlength=src_vocab_size)[pair_s]
    target_counts = np.bincount(np.concatenate(sentence_tgt), minlength=tgt_vocab_size)
    excluded = np.zeros(tgt_vocab_size, dtype=bool)
    excluded[list(exclude)] = True
    target_counts[excluded] = -1
    by_frequency = np.argsort(-target_counts, kind="stable")
    frequent_ids = by_frequency[: min(frequent, int((target_counts > 0).sum()))]
    keep = ~excluded[keys % tgt_vocab_size]
    table = _top_per_source(
        pair_s[keep], (keys % tgt_vocab_size)[keep], prob[keep], src_vocab_size, per_source
    )
    return CandidateTable(frequent_ids.astype(np.int32), table)


def _top_per_source(
    sources: np.ndarray, targets: np.ndarray, prob: np.ndarray, src_vocab_size: int, k: int
) -> np.ndarray:
    """[V_src, k]: each source id's k most probable targets, best first, NO_CANDIDATE after."""
    order = np.lexsort((-prob, sources))  # by source, then most probable first
    sources, targets = sources[order], targets[order]
    starts = np.searchsorted(sources, sources, side="left")
    rank = np.arange(len(sources)) - starts
    within = rank < k
    table = np.full((src_vocab_size, k), NO_CANDIDATE, dtype=np.int32)
    table[sources[within], rank[within]] = targets[within]
    return table
