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


# -- decoding over a candidate list ----------------------------------------------------------
def restricted(vocabulary: torch.Tensor):
    return lambda decoder: decoder.restricted_to(vocabulary)


def reversal_batch(config):
    from models.toy import encode_symbols
    from models.training import collate

    texts = ["abcdefghij", "xyz", "hello", "qwertyuiop"]
    pairs = [(encode_symbols(t), encode_symbols(t[::-1])) for t in texts]
    return collate(pairs, config.pad_id, config.bos_id, config.eos_id)


def test_a_candidate_list_of_the_whole_vocabulary_is_the_full_search(toy_model):
    from models.ensemble import Ensemble
    from models.search import beam_search, greedy_search

    batch = reversal_batch(toy_model.config)
    everything = restricted(torch.arange(toy_model.config.tgt_vocab_size))
    for model in (toy_model, Ensemble([toy_model, toy_model])):
        full = greedy_search(model, batch.src, batch.src_len)
        listed = greedy_search(model, batch.src, batch.src_len, wrap_decoder=everything)
        assert [h.tokens for h in listed] == [h.tokens for h in full]
        assert [h.score for h in listed] == pytest.approx([h.score for h in full], abs=1e-5)
        full = beam_search(model, batch.src, batch.src_len, beam_size=4, n_best=3)
        listed = beam_search(
            model, batch.src, batch.src_len, beam_size=4, n_best=3, wrap_decoder=everything
        )
        assert [[h.tokens for h in n] for n in listed] == [[h.tokens for h in n] for n in full]


def test_the_searches_output_only_candidates(toy_model):
    from models.search import beam_search, greedy_search

    config = toy_model.config
    batch = reversal_batch(config)
    allowed = torch.tensor([config.eos_id, *range(10, 20)])
    found = greedy_search(toy_model, batch.src, batch.src_len, wrap_decoder=restricted(allowed))
    found += [
        h
        for n_best in beam_search(
            toy_model, batch.src, batch.src_len, 3, 3, wrap_decoder=restricted(allowed)
        )
        for h in n_best
    ]
    assert all(set(h.tokens) <= set(allowed.tolist()) for h in found)
    # normalised over the candidates: scores are higher than the full layer gives the same
    # tokens, as the probability mass of the others is gone
    assert all(h.score <= 0 for h in found)


@pytest.fixture(scope="module")
def listed_model(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model with a candidate list built by `nmt candidates` from data
    prepared with its tokenizers."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.cli import main
    from pipeline.corpus.synthetic import parallel_corpus
    from pipeline.corpus.tokenizer import SRC_SPM, TGT_SPM, Tokenizer

    work = tmp_path_factory.mktemp("listed")
    model = work / "model"
    shutil.copytree(tiny_model_dir, model)
    data = work / "data"
    (data / "train").mkdir(parents=True)
    for name in (SRC_SPM, TGT_SPM):
        shutil.copy(model / name, data / name)
    tokenizer = Tokenizer(model / SRC_SPM)
    corpus = parallel_corpus(3000, seed=0)
    table = pa.table(
        {
            "src_ids": tokenizer.encode([de for de, _ in corpus]),
            "tgt_ids": tokenizer.encode([en for _, en in corpus]),
        }
    )
    pq.write_table(table, data / "train" / "part-0.parquet")
    assert main(["candidates", "--model", str(model), "--data", str(data)]) == 0
    return model


def test_the_translator_decodes_over_the_models_candidate_list(listed_model):
    from pipeline.corpus.synthetic import parallel_corpus
    from pipeline.translate.settings import DecodeSettings
    from pipeline.translate.translator import Translator

    sources = [de for de, _ in parallel_corpus(24, seed=7)]
    translator = Translator(listed_model, settings=DecodeSettings(beam_size=1))
    src, _ = translator._batch(translator.src_tokenizer.encode(sources))

    def allowed(settings: DecodeSettings) -> set[int]:
        return set(translator._candidates(src, settings).tolist())

    def translate(settings: DecodeSettings | None = None):
        return translator.translate(sources, settings, return_attention=True)

    def pieces(translations) -> list[list[int]]:
        to_id = translator.tgt_tokenizer.processor.piece_to_id
        return [[to_id(piece) for piece in t.target_pieces] for t in translations]

    full = translate()
    wide = DecodeSettings(beam_size=1, candidates_frequent=40, candidates_per_source=10)
    # the list covers what the model says, so greedy search (an argmax, whatever the
    # normalisation) finds the same translations
    assert all(set(ids) <= allowed(wide) for ids in pieces(full))
    assert [t.text for t in translate(wide)] == [t.text for t in full]
    short = DecodeSettings(beam_size=3, candidates_frequent=5, candidates_per_source=3)
    assert len(allowed(short)) < translator.model.config.tgt_vocab_size
    assert all(set(ids) <= allowed(short) for ids in pieces(translate(short)))


def test_candidate_lists_refuse_what_they_cannot_do(listed_model, tiny_model_dir):
    from pipeline.errors import UserError
    from pipeline.translate.settings import DecodeSettings
    from pipeline.translate.translator import Translator

    settings = DecodeSettings(candidates_frequent=5)
    with pytest.raises(UserError, match="has no candidate list"):
        Translator(tiny_model_dir).translate(["Ein Hund."], settings)
    with pytest.raises(UserError, match="holds"):
        Translator(listed_model).translate(["Ein Hund."], DecodeSettings(candidates_frequent=10**6))
    with pytest.raises(UserError, match="do not combine with a candidate list"):
        Translator(listed_model).translate(["Ein Hund."], settings, prefixes=["A"])
    with pytest.raises(UserError, match="need --precision fp32 or bf16"):
        DecodeSettings(candidates_frequent=5, precision="int8")
