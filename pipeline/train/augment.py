"""Training pairs rewritten on the fly, anew each epoch: input noise on the sources (how people
type: no final punctuation, lower case, a space lost or added) and subword regularization
(each side re-segmented by sampling from its sentencepiece model, Kudo 2018). Both are off by
default.

The prepared train split holds token ids, not text, so a pair that is rewritten is decoded
back to text with its sentencepiece model (exact: sentencepiece segmentations are reversible
up to its normalisation, which the text had already been through), rewritten, and encoded
again. Noise decodes and encodes only the pairs its rates pick; subword sampling re-encodes
every pair of the sides it samples. Pairs holding an unknown piece are left as they are: their
text cannot be recovered.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from pipeline.corpus.rewrite import lowercase, perturb_spaces, strip_final_punct
from pipeline.corpus.tokenizer import Tokenizer
from pipeline.errors import UserError

Columns = tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]]  # source ids, target ids


@dataclass(frozen=True)
class NoiseSettings:
    """Source noise: each rate is the probability that a training pair's source gets that
    slip, drawn independently per pair and per epoch from a generator seeded by the run's
    seed, the epoch and the worker. Targets are never changed: the model learns to answer
    careless input with a careful translation. All 0 (the default): off."""

    drop_final_punct: float = 0.0  # trailing punctuation removed
    lowercase_source: float = 0.0  # the whole source lower-cased
    space_noise: float = 0.0  # two words joined or a word split (one space)

    def __post_init__(self) -> None:
        for name, rate in dataclasses.asdict(self).items():
            if not 0.0 <= rate <= 1.0:
                raise UserError(f"noise.{name} must be a probability (0 to 1), not {rate}")

    @property
    def enabled(self) -> bool:
        return any(dataclasses.astuple(self))

    def draw(self, rng: random.Random) -> list[Callable[[str, random.Random], str]]:
        """The slips of one pair, in a fixed order; one draw per rate whatever the outcome,
        so each rate's picks do not depend on the others'."""
        slips = (
            (self.drop_final_punct, lambda text, _: strip_final_punct(text)),
            (self.lowercase_source, lambda text, _: lowercase(text)),
            (self.space_noise, perturb_spaces),
        )
        return [slip for rate, slip in slips if rng.random() < rate]


@dataclass(frozen=True)
class SubwordSampling:
    """Subword regularization: each epoch the chosen sides are segmented by sampling from
    their sentencepiece model instead of taking its best segmentation. `alpha` 0 (the
    default): off."""

    # Unigram models (what `nmt prepare` trains): the smoothing of the sampling distribution,
    # 0 < alpha <= 1, smaller is more varied (Kudo 2018 uses 0.1 to 0.5); BPE: the dropout.
    alpha: float = 0.0
    # Unigram: sample among the `nbest` best segmentations; -1 among all of them.
    nbest: int = -1
    source: bool = True
    target: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"subword_sampling.alpha must be between 0 and 1, not {self.alpha}")
        if self.nbest in (0, 1) or self.nbest < -1:
            raise UserError(
                f"subword_sampling.nbest must be -1 (all) or at least 2, not {self.nbest}"
            )
        if self.enabled and not (self.source or self.target):
            raise UserError("subword_sampling: alpha is set but neither source nor target is")

    @property
    def enabled(self) -> bool:
        return self.alpha > 0


def settings_from(cls: type, value: object, name: str) -> object:
    """A settings dataclass from itself or from a dict (as YAML gives it); unknown keys and
    other values are a `UserError` naming `name`."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise UserError(f"{name} must be a mapping of settings, not {value!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise UserError(f"{name}: unknown settings {unknown}; known: {sorted(known)}")
    return cls(**value)


@dataclass(frozen=True)
class Augmentation:
    """What a worker needs to rewrite its training pairs: the settings and the sentencepiece
    models' bytes (plain data, so it travels in the `WorkerJob`)."""

    noise: NoiseSettings
    sampling: SubwordSampling
    src_spm: bytes
    tgt_spm: bytes
    unk_id: int = 1

    def __post_init__(self) -> None:
        """Refused where the run is set up, before any worker starts."""
        if self.sampling.enabled:
            kinds = [Tokenizer.from_serialized(m).kind for m in (self.src_spm, self.tgt_spm)]
            if "word" in kinds:
                raise UserError(
                    "subword_sampling re-segments subwords: this data has a word vocabulary "
                    f"(source {kinds[0]}, target {kinds[1]}); turn subword_sampling off"
                )

    def apply(self, chunks: Iterable[Columns], seed: int) -> Iterator[Columns]:
        """Each chunk of (source ids, target ids) rewritten, in order; `seed` fixes every
        choice (the noise's picks and slips, sentencepiece's samples). Texts are encoded as
        `nmt prepare` encoded them, so a word vocabulary's noised word is one id (or unknown),
        never subword fragments."""
        src, tgt = Tokenizer.from_serialized(self.src_spm), Tokenizer.from_serialized(self.tgt_spm)
        rng = random.Random(f"augment:{seed}")  # a stream of its own, not the batching's
        for sources, targets in chunks:
            yield self._rewrite(src, tgt, list(sources), list(targets), rng)

    def _rewrite(self, src, tgt, sources: list, targets: list, rng: random.Random) -> Columns:
        """One chunk: `sources` and `targets` (lists, changed in place) with the rewritten
        pairs' ids replaced."""
        slips = [self.noise.draw(rng) if self.noise.enabled else [] for _ in sources]
        sampling, every = self.sampling, range(len(sources))
        sample_source = sampling.enabled and sampling.source
        picked = [
            i for i in every if (slips[i] or sample_source) and self._known(sources[i], targets[i])
        ]
        texts = [
            _slipped(t, slips[i], rng)
            for i, t in zip(picked, _texts(src, sources, picked), strict=True)
        ]
        for i, ids in zip(picked, self._encode(src, texts, sample_source, rng), strict=True):
            sources[i] = ids
        if sampling.enabled and sampling.target:
            picked = [i for i in every if self._known(sources[i], targets[i])]
            texts = _texts(tgt, targets, picked)
            for i, ids in zip(picked, self._encode(tgt, texts, True, rng), strict=True):
                targets[i] = ids
        return sources, targets

    def _known(self, source: Sequence[int], target: Sequence[int]) -> bool:
        """Whether the pair has no unknown piece (else its text cannot be recovered)."""
        return self.unk_id not in source and self.unk_id not in target

    def _encode(
        self, tokenizer: Tokenizer, texts: list[str], sample: bool, rng: random.Random
    ) -> list:
        if not sample:
            return tokenizer.encode(texts)
        import sentencepiece as spm

        # A batch encode samples in a thread of its own whose generator starts from the global
        # seed: a new seed per call, from `rng`, keeps the samples of calls apart. 31 bits:
        # sentencepiece reads 2**32 - 1 as "seed at random".
        spm.set_random_generator_seed(rng.getrandbits(31))
        sampling = self.sampling
        return tokenizer.processor.encode(
            texts,
            enable_sampling=True,
            alpha=sampling.alpha,
            nbest_size=sampling.nbest,
            num_threads=1,
        )


def _texts(tokenizer: Tokenizer, ids: list, picked: list[int]) -> list[str]:
    """The text of the id sequences `ids[i]` for i in `picked` (sentencepiece decodes an
    empty batch as one empty text, hence the guard)."""
    if not picked:
        return []
    return tokenizer.processor.decode([[int(i) for i in ids[row]] for row in picked])


def _slipped(text: str, slips: list, rng: random.Random) -> str:
    for slip in slips:
        text = slip(text, rng)
    return text
