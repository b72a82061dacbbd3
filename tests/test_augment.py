"""Training pairs rewritten on the fly: input noise at the rates asked (seeded), nothing
changed when it is off, subword sampling that keeps the text; the rewrites themselves."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pipeline.corpus.rewrite import SOURCE_REWRITES, perturb_spaces, strip_final_punct
from pipeline.corpus.synthetic import parallel_corpus
from pipeline.corpus.tokenizer import Tokenizer, train_sentencepiece, train_words
from pipeline.errors import UserError
from pipeline.storage import Location
from pipeline.train.augment import Augmentation, NoiseSettings, SubwordSampling
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import augmentation

CORPUS = parallel_corpus(2000, seed=5)
CHUNK = 512  # pairs per chunk, as the worker hands them over (it reads 2048 rows at a time)
OFF, NO_SAMPLING = NoiseSettings(), SubwordSampling()


@pytest.fixture(scope="module")
def spm_model() -> bytes:
    return train_sentencepiece([s for pair in CORPUS for s in pair], vocab_size=120)


@pytest.fixture(scope="module")
def ids(spm_model) -> tuple[list[list[int]], list[list[int]]]:
    tokenizer = Tokenizer.from_serialized(spm_model)
    return tokenizer.encode([de for de, _ in CORPUS]), tokenizer.encode([en for _, en in CORPUS])


def rewritten(spm_model, ids, seed=0, noise=OFF, sampling=NO_SAMPLING):
    """All pairs through `Augmentation.apply` in chunks: (sources, targets) as id lists."""
    augment = Augmentation(noise, sampling, spm_model, spm_model)
    sources, targets = ids
    chunks = [
        (sources[i : i + CHUNK], targets[i : i + CHUNK]) for i in range(0, len(sources), CHUNK)
    ]
    out_sources, out_targets = [], []
    for chunk_sources, chunk_targets in augment.apply(chunks, seed):
        out_sources += [list(s) for s in chunk_sources]
        out_targets += [list(t) for t in chunk_targets]
    return out_sources, out_targets


def test_noise_of_zero_leaves_every_pair_as_it_was(spm_model, ids, tmp_path):
    assert rewritten(spm_model, ids) == ids
    # ... and a run with the default settings hands its pairs to batching as read
    (tmp_path / "spm.src.model").write_bytes(spm_model)
    (tmp_path / "spm.tgt.model").write_bytes(spm_model)
    assert augmentation(Location.of(tmp_path), TrainConfig()) is None
    noisy = TrainConfig(noise=NoiseSettings(space_noise=0.1))
    assert augmentation(Location.of(tmp_path), noisy).noise == noisy.noise


def test_noise_rates_are_the_ones_asked_and_seeded(spm_model, ids):
    noise = NoiseSettings(drop_final_punct=0.3, lowercase_source=0.2, space_noise=0.1)
    sources, targets = rewritten(spm_model, ids, seed=1, noise=noise)
    assert targets == ids[1], "noise never touches the targets"
    tokenizer = Tokenizer.from_serialized(spm_model)
    before = [tokenizer.decode(s) for s in ids[0]]
    after = [tokenizer.decode(s) for s in sources]
    # Every synthetic source starts with a capital, ends with "." and has spaces.
    dropped = [not a.endswith(".") for a in after]
    lowered = [a[0].islower() for a in after]
    spaced = [a.count(" ") != b.count(" ") for a, b in zip(after, before, strict=True)]
    for picks, rate in ((dropped, 0.3), (lowered, 0.2), (spaced, 0.1)):
        # 2,000 pairs: a standard deviation of 0.01 at most
        assert sum(picks) / len(picks) == pytest.approx(rate, abs=0.035)
    both = sum(d and lo for d, lo in zip(dropped, lowered, strict=True)) / len(after)
    assert both == pytest.approx(0.3 * 0.2, abs=0.02), "each rate is drawn on its own"
    for a, b, d, lo in zip(after, before, dropped, lowered, strict=True):
        expected = strip_final_punct(b) if d else b
        expected = expected.lower() if lo else expected
        assert a.replace(" ", "") == expected.replace(" ", "")  # and nothing else changed
    assert rewritten(spm_model, ids, seed=1, noise=noise)[0] == sources
    assert rewritten(spm_model, ids, seed=2, noise=noise)[0] != sources


def test_subword_sampling_varies_the_pieces_but_keeps_the_text(spm_model, ids):
    tokenizer = Tokenizer.from_serialized(spm_model)
    sampling = SubwordSampling(alpha=0.1, target=False)
    sources, targets = rewritten(spm_model, ids, seed=3, sampling=sampling)
    assert targets == ids[1]
    changed = sum(s != o for s, o in zip(sources, ids[0], strict=True)) / len(sources)
    assert changed > 0.5, "alpha 0.1 re-segments most sentences"
    assert [tokenizer.decode(s) for s in sources] == [tokenizer.decode(s) for s in ids[0]]
    assert rewritten(spm_model, ids, seed=3, sampling=sampling)[0] == sources
    assert rewritten(spm_model, ids, seed=4, sampling=sampling)[0] != sources
    both = replace(sampling, target=True)
    _, sampled_targets = rewritten(spm_model, ids, seed=3, sampling=both)
    assert sampled_targets != ids[1]
    assert [tokenizer.decode(t) for t in sampled_targets] == [tokenizer.decode(t) for t in ids[1]]


def test_noise_on_a_word_vocabulary_gives_one_id_a_word():
    """A noised word is encoded as `nmt prepare` encodes words: one id, the unknown one when
    the vocabulary lacks it (a lower-cased German noun), never subword fragments."""
    word_model = train_words([s for pair in CORPUS for s in pair], vocab_size=5000)
    tokenizer = Tokenizer.from_serialized(word_model)
    sources = tokenizer.encode([de for de, _ in CORPUS])
    noise = NoiseSettings(drop_final_punct=1.0, lowercase_source=1.0)
    augment = Augmentation(noise, NO_SAMPLING, word_model, word_model)
    [(noised, _)] = augment.apply([(sources, sources)], seed=0)
    typed = [strip_final_punct(de).lower() for de, _ in CORPUS]
    assert [list(ids) for ids in noised] == tokenizer.encode(typed)
    assert [len(ids) for ids in noised] == [len(ids) - 1 for ids in sources]  # "." gone
    unknown = sum(ids.count(1) for ids in noised) - sum(ids.count(1) for ids in sources)
    assert unknown > 0, "lower-cased German nouns are words the vocabulary lacks"
    sampling = SubwordSampling(alpha=0.1)
    with pytest.raises(UserError, match="subword_sampling re-segments subwords"):
        Augmentation(OFF, sampling, word_model, word_model)


def test_settings_are_checked_and_come_from_yaml_mappings():
    config = TrainConfig.from_dict(
        {"noise": {"lowercase_source": 0.5}, "subword_sampling": {"alpha": 0.2, "nbest": 64}}
    )
    assert config.noise == NoiseSettings(lowercase_source=0.5) and config.noise.enabled
    assert config.subword_sampling.enabled and config.subword_sampling.nbest == 64
    assert TrainConfig.from_dict(config.to_dict()) == config  # as saved in the run dir
    assert not TrainConfig().noise.enabled and not TrainConfig().subword_sampling.enabled
    with pytest.raises(UserError, match="noise: unknown settings \\['lowercase'\\]"):
        TrainConfig.from_dict({"noise": {"lowercase": 0.5}})
    with pytest.raises(UserError, match="noise.space_noise must be a probability"):
        NoiseSettings(space_noise=1.5)
    with pytest.raises(UserError, match="nbest must be -1"):
        SubwordSampling(alpha=0.1, nbest=1)
    with pytest.raises(UserError, match="average_last"):
        TrainConfig(average_last=-1)


def test_the_rewrites_of_typed_input():
    assert strip_final_punct("Ein Hund läuft.") == "Ein Hund läuft"
    assert strip_final_punct('Er sagt: "Hallo!" ') == 'Er sagt: "Hallo'
    assert strip_final_punct("我爱中国。") == "我爱中国" and strip_final_punct("...") == ""
    assert SOURCE_REWRITES["both"]("Ein Hund läuft.") == "ein hund läuft"
    assert SOURCE_REWRITES["none"]("Ein Hund.") == "Ein Hund."
    rng = random.Random(0)
    for _ in range(50):
        slipped = perturb_spaces("Ein Hund läuft schnell", rng)
        assert abs(slipped.count(" ") - 3) == 1
        assert slipped.replace(" ", "") == "EinHundläuftschnell"
    assert perturb_spaces("a", rng) == "a"
