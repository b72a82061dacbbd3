"""Ensembles: one model, or copies of one, decode as that model; the ensemble scores by the
members' mean log-probability in the same batched searches; padding never changes a sentence;
models that do not share vocabularies are refused."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from models.config import ModelConfig
from models.ensemble import Ensemble
from models.model_dir import load_model, save_model
from models.search import StepDecoder, beam_search, greedy_search, start_decoding
from models.seq2seq import Seq2Seq
from models.training import collate
from pipeline.corpus.synthetic import parallel_corpus
from pipeline.corpus.tokenizer import SRC_SPM, TGT_SPM, Tokenizer, train_sentencepiece
from pipeline.errors import UserError
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator

GERMAN = [german for german, _ in parallel_corpus(16, seed=21)]


def perturbed(model: Seq2Seq, seed: int, scale: float = 0.15) -> Seq2Seq:
    """A copy of `model` with every weight moved by seeded noise: another model, same vocabulary."""
    other = Seq2Seq(model.config)
    other.load_state_dict(model.state_dict())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in other.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(scale * parameter.std().nan_to_num(0.0) * noise)
    return other.eval()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> Seq2Seq:
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def batch(tiny_model_dir, tiny):
    tokenizer = Tokenizer(tiny_model_dir / SRC_SPM)
    config = tiny.config
    return collate(
        [(ids, [config.eos_id]) for ids in tokenizer.encode(GERMAN)],
        config.pad_id,
        config.bos_id,
        config.eos_id,
    )


def decode(model, batch, search: str):
    """(tokens, score) of each sentence's best hypothesis."""
    if search == "greedy":
        hypotheses = greedy_search(model, batch.src, batch.src_len)
    else:
        hypotheses = [n[0] for n in beam_search(model, batch.src, batch.src_len, beam_size=4)]
    return [(h.tokens, h.score) for h in hypotheses]


def assert_same_outputs(expected, got) -> None:
    assert [tokens for tokens, _ in got] == [tokens for tokens, _ in expected]
    assert [score for _, score in got] == pytest.approx([s for _, s in expected], abs=1e-5)


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_an_ensemble_of_one_model_or_of_copies_of_it_is_that_model(tiny, batch, search):
    alone = decode(tiny, batch, search)
    assert any(tokens for tokens, _ in alone), "the tiny model translates"
    assert_same_outputs(alone, decode(Ensemble([tiny]), batch, search))
    assert_same_outputs(alone, decode(Ensemble([tiny, tiny]), batch, search))


def test_the_ensemble_scores_by_the_members_mean_log_probability(tiny, batch):
    members = [tiny, perturbed(tiny, seed=1)]
    ensemble = Ensemble(members)
    steps = [StepDecoder(m, *m.encode(batch.src, batch.src_len)) for m in members]
    together = start_decoding(ensemble, batch.src, batch.src_len)
    vocab = tiny.config.tgt_vocab_size
    prev = torch.full((len(GERMAN),), tiny.config.bos_id)
    for _ in range(3):
        top, ids, weights = together.top_log_probs(prev, vocab)
        apart = [step.log_probs(prev) for step in steps]
        mean = torch.stack([log_probs for log_probs, _ in apart]).mean(0)
        torch.testing.assert_close(torch.empty_like(top).scatter_(1, ids, top), mean)
        torch.testing.assert_close(weights, (apart[0][1] + apart[1][1]) / 2)
        assert not torch.allclose(apart[0][0], apart[1][0]), "the members differ"
        prev = ids[:, 0]
    assert decode(ensemble, batch, "beam") != decode(tiny, batch, "beam")


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_padding_never_changes_a_sentence_of_an_ensemble(tiny, batch, search):
    ensemble = Ensemble([tiny, perturbed(tiny, seed=2)])
    together = decode(ensemble, batch, search)
    for row, expected in enumerate(together):
        length = int(batch.src_len[row])
        alone = dataclasses.replace(
            batch, src=batch.src[row : row + 1, :length], src_len=batch.src_len[row : row + 1]
        )
        assert_same_outputs([expected], decode(ensemble, alone, search))


def test_attention_comes_from_the_members_that_attend(tiny, batch):
    baseline_config = dataclasses.replace(tiny.config, attention="none")
    baseline = Seq2Seq(baseline_config).eval()
    ensemble = Ensemble([baseline, tiny])
    assert ensemble.config.attention == tiny.config.attention
    assert Ensemble([baseline]).config.attention == "none"
    (mixed,) = greedy_search(ensemble, batch.src[:1], batch.src_len[:1], return_attention=True)
    assert mixed.attention.shape == (len(mixed.tokens), int(batch.src_len[0]))
    torch.testing.assert_close(mixed.attention.sum(1), torch.ones(len(mixed.tokens)))


def test_models_of_other_vocabularies_are_refused(tiny, tiny_model_dir, tmp_path):
    bigger = Seq2Seq(
        dataclasses.replace(tiny.config, tgt_vocab_size=tiny.config.tgt_vocab_size + 1)
    )
    with pytest.raises(ValueError, match="model 2 has tgt_vocab_size"):
        Ensemble([tiny, bigger])
    # A model dir of the same sizes whose sentencepiece model is another one
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    corpus = parallel_corpus(500, seed=99)
    spm = train_sentencepiece([s for pair in corpus for s in pair], vocab_size=100)
    (other / TGT_SPM).write_bytes(spm)
    with pytest.raises(UserError, match=f"sentencepiece models {TGT_SPM} differ"):
        Translator(f"{tiny_model_dir}+{other}")
    smaller = tmp_path / "smaller"
    shutil.copytree(tiny_model_dir, smaller)
    config = ModelConfig.load(smaller / "config.json")
    save_model(Seq2Seq(dataclasses.replace(config, src_vocab_size=100)), smaller)
    with pytest.raises(UserError, match="model 2 has src_vocab_size 100 but model 1 has"):
        Translator([tiny_model_dir, smaller])
    with pytest.raises(UserError, match="empty model"):
        Translator(f"{tiny_model_dir}+")


def test_the_translator_takes_a_joined_spec_or_a_list(tiny_model_dir, tmp_path):
    second = tmp_path / "second"
    shutil.copytree(tiny_model_dir, second)
    save_model(perturbed(load_model(tiny_model_dir), seed=3), second)
    settings = DecodeSettings(beam_size=3, batch_size=5)
    joined = Translator(f"{tiny_model_dir}+{second}", settings=settings)
    listed = Translator([Path(tiny_model_dir), second], settings=settings)
    assert joined.name == "tiny-de-en+tiny-de-en" and joined.uri == listed.uri
    assert joined.info()["members"] == [str(tiny_model_dir), str(second)]
    assert joined.info()["parameters"] == 2 * Translator(tiny_model_dir).info()["parameters"]
    texts = [t.text for t in joined.translate(GERMAN)]
    assert texts == [t.text for t in listed.translate(GERMAN)]
    # The same search as the ensemble decoded directly, one sentence at a time
    ensemble = Ensemble([load_model(tiny_model_dir), load_model(second)])
    for text, translation in zip(GERMAN[:4], texts, strict=False):
        ids = joined.src_tokenizer.encode([text])[0]
        ((best,),) = beam_search(
            ensemble,
            torch.tensor([ids]),
            torch.tensor([len(ids)]),
            beam_size=3,
            alpha=settings.alpha,
            prune=settings.beam_prune,
        )
        assert translation == joined.tgt_tokenizer.decode(best.tokens)
    bf16 = Translator(f"{tiny_model_dir}+{second}", settings=DecodeSettings(precision="bf16"))
    assert len(bf16.translate(GERMAN[:2])) == 2
