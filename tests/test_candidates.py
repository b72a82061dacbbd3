"""Candidate lists (Jean et al. 2014, 3.2): the IBM-1 table and the ids a batch may decode to."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from models.candidates import NO_CANDIDATE, CandidateTable, build_candidate_table

SPECIALS = (0, 1, 2, 3)  # pad, unk, bos, eos


def word_for_word_pairs(count: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Sentences over source ids 4..53 translated word for word to target id 100 + 2 * s, in
    a shuffled order, with one target filler word (id 4, the most frequent) in half."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        src = rng.sample(range(4, 54), rng.randint(2, 8))
        tgt = [100 + 2 * s for s in src]
        rng.shuffle(tgt)
        if rng.random() < 0.5:
            tgt.insert(rng.randrange(len(tgt) + 1), 4)
        pairs.append((src, tgt))
    return pairs


@pytest.fixture(scope="module")
def table() -> CandidateTable:
    pairs = word_for_word_pairs(600)
    return build_candidate_table(pairs, 60, 220, frequent=5, per_source=3, exclude=SPECIALS)


def test_each_source_ids_best_translation_is_its_word(table):
    assert [int(table.translations[s, 0]) for s in range(4, 54)] == [
        100 + 2 * s for s in range(4, 54)
    ]
    assert (table.translations[54:] == NO_CANDIDATE).all(), "unseen source ids have none"
    assert int(table.frequent[0]) == 4, "the filler is the most frequent target word"
    assert not set(table.frequent.tolist()) & set(SPECIALS)


def test_a_batchs_candidates_hold_every_reference_word(table):
    pairs = word_for_word_pairs(20, seed=1)
    width = max(len(src) for src, _ in pairs)
    src = torch.tensor([src + [0] * (width - len(src)) for src, _ in pairs])
    candidates = table.candidates(src, frequent=1, per_source=1, always=SPECIALS)
    assert candidates.tolist() == sorted(set(candidates.tolist()))
    for _, tgt in pairs:
        assert set(tgt) <= set(candidates.tolist())
    # one source id's candidates: its word, the frequent ones and the specials, no more
    alone = table.candidates(torch.tensor([[10]]), frequent=2, per_source=1, always=SPECIALS)
    assert set(alone.tolist()) == {*SPECIALS, 120, *table.frequent[:2].tolist()}


def test_the_table_round_trips_through_its_file(table, tmp_path):
    table.save(tmp_path / "candidates.npz")
    loaded = CandidateTable.load(tmp_path / "candidates.npz")
    assert np.array_equal(loaded.frequent, table.frequent)
    assert np.array_equal(loaded.translations, table.translations)


def test_bad_candidate_settings_are_clear_errors(table):
    src = torch.tensor([[5, 6]])
    with pytest.raises(ValueError, match="needs frequent ids or translations"):
        table.candidates(src, frequent=0, per_source=0)
    with pytest.raises(ValueError, match="holds 5 frequent ids and 3 translations"):
        table.candidates(src, frequent=6, per_source=1)
    with pytest.raises(ValueError, match="no training pairs"):
        build_candidate_table([([], [])], 10, 10)
