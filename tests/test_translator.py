"""The Translator: strings in, strings out, order kept, same as calling search directly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from models.search import beam_search
from pipeline.corpus.synthetic import parallel_corpus
from pipeline.errors import UserError
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator

SOURCES = [german for german, _ in parallel_corpus(12, seed=42)]


def test_translations_come_back_in_input_order_and_match_search(tiny_model_dir):
    translator = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=3, batch_size=5))
    texts = SOURCES + ["", "   "]
    results = translator.translate(texts)
    assert len(results) == len(texts)
    assert results[-1].text == "" and results[-2].text == ""
    for text, result in zip(SOURCES, results, strict=False):
        ids = translator.src_tokenizer.encode([text])[0]
        ((best,),) = beam_search(
            translator.model,
            torch.tensor([ids]),
            torch.tensor([len(ids)]),
            beam_size=3,
            alpha=translator.settings.alpha,
            prune=translator.settings.beam_prune,
        )
        assert result.text == translator.tgt_tokenizer.decode(best.tokens)
        assert result.score == pytest.approx(best.score, abs=1e-4)
    assert any(r.text for r in results[:-2]), "the tiny model translates into words"


def test_n_best_and_attention(tiny_model_dir):
    translator = Translator(tiny_model_dir)
    n_best = replace(translator.settings, beam_size=4, n_best=3)
    (result,) = translator.translate(SOURCES[:1], n_best, return_attention=True)
    assert len(result.alternatives) == 3 and result.alternatives[0][0] == result.text
    assert len(result.attention) == len(result.target_pieces)
    assert all(len(row) == len(result.source_pieces) for row in result.attention)
    with pytest.raises(UserError, match="--n-best must be between 1 and --beam-size \\(2\\)"):
        replace(translator.settings, beam_size=2, n_best=3)


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Translator(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a model dir"):
        Translator(tmp_path / "empty")


def test_bf16_precision_rounds_scores_but_keeps_translations(tiny_model_dir):
    texts = [german for german, _ in parallel_corpus(40, seed=7)]
    exact = Translator(tiny_model_dir).translate(texts)
    translator = Translator(tiny_model_dir, settings=DecodeSettings(precision="bf16"))
    fast = translator.translate(texts)
    same = [(a.score, b.score) for a, b in zip(exact, fast, strict=True) if a.text == b.text]
    assert len(same) >= 0.8 * len(texts)  # 38 of 40 when written
    assert any(a != b for a, b in same), "bf16 rounding should show in the scores"
    assert all(b == pytest.approx(a, abs=0.08) for a, b in same)  # at most 0.03 when written
    model = translator.model
    assert model.decoder.output.weight.dtype == torch.bfloat16  # cast once, not per batch
    assert model.decoder.embedding.weight.dtype == torch.float32
    with pytest.raises(UserError, match="precision must be one of fp32, bf16"):
        DecodeSettings(precision="fp16")
    with pytest.raises(UserError, match="decodes in bf16, not fp32"):
        translator.translate(texts, DecodeSettings())


def test_a_seeded_sample_is_the_same_in_any_batch_and_order(tiny_model_dir):
    """Each sentence is seeded from the request's seed and its own tokens, so batch size,
    order and neighbours never change its sample; n-best samples are distinct."""
    sampling = DecodeSettings(sample=True, seed=3, temperature=1.5, batch_size=4)
    translator = Translator(tiny_model_dir, settings=sampling)
    texts = SOURCES[:8]
    results = [r.text for r in translator.translate(texts)]
    one_by_one = replace(sampling, batch_size=1)
    assert [r.text for r in translator.translate(texts[::-1], one_by_one)] == results[::-1]
    greedy_settings = replace(sampling, beam_size=1, sample=False)
    greedy = [r.text for r in translator.translate(texts, greedy_settings)]
    reseeded = [r.text for r in translator.translate(texts, replace(sampling, seed=4))]
    assert results != greedy and results != reseeded
    (nbest,) = translator.translate(texts[:1], replace(sampling, n_best=6))
    assert len({text for text, _ in nbest.alternatives}) == len(nbest.alternatives) > 1
    with pytest.raises(UserError, match="--top-p must be above 0"):
        replace(sampling, top_p=0)
