"""The Translator: the one place that turns text into translations.

A model dir (or a training run dir holding `model/`) -> batched, length-sorted beam search
over strings, output restored to input order. The CLI, the Serve deployment and bulk
translation all use it.

A model spec may join several model dirs with `+` (`runs/a+runs/b`), or be a list of them:
an ensemble (`models.ensemble`), decoded with the mean of the models' log-probabilities.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.candidates import CANDIDATES_FILE, CandidateTable
from models.constraints import constrained_beam_search
from models.ensemble import Ensemble
from models.model_dir import CONFIG_FILE, load_model
from models.prefix import ForcedPrefix
from models.quantize import quantize_linear_int8
from models.sampling import Sampler, derive_seed, sample_search
from models.scoring import score_pairs
from models.search import (
    DecoderWrapper,
    Hypothesis,
    beam_search,
    greedy_search,
    length_penalty,
    max_output_lengths,
)
from models.seq2seq import Seq2Seq
from pipeline.corpus.tokenizer import SRC_SPM, TGT_SPM, load_pair
from pipeline.errors import UserError
from pipeline.storage import Location, local_copy
from pipeline.translate.quality import QualitySignals, quality_signals
from pipeline.translate.settings import DecodeSettings

META_FILE = "meta.json"
# The least beam a constrained search runs with (greedy included): the banks of dynamic
# beam allocation need slots beside the best-scoring hypotheses.
CONSTRAINED_MIN_BEAM = 4
MEMBER_SEPARATOR = "+"  # joins the model dirs of an ensemble in one model spec
ModelSpec = str | Path | Sequence[str | Path]  # a model, "A+B", or [A, B]


@dataclass
class Translation:
    text: str
    score: float
    alternatives: list[tuple[str, float]] = field(default_factory=list)  # n-best, best first
    source_pieces: list[str] | None = None
    target_pieces: list[str] | None = None
    attention: list[list[float]] | None = None  # [target piece][source piece]
    signals: QualitySignals | None = None  # of the best translation
    alternative_signals: list[QualitySignals] = field(default_factory=list)  # of each n-best


@dataclass(frozen=True)
class PairScore:
    """What the model gives a (source, target) pair: log P(target + eos | source)."""

    log_prob: float
    mean_log_prob: float  # per predicted piece, eos included
    predictions: int  # target pieces + 1 (eos)


@dataclass
class _Request:
    """One chunk's sentences as the search takes them: source ids, and per sentence its
    forced prefix and its constraints (target piece ids)."""

    ids: list[list[int]]
    prefixes: list[list[int]]
    constraints: list[list[list[int]]]


def find_model_dir(path: str | Path) -> Location:
    """A model dir, or a training run dir whose `model/` is the model dir; a path or URI."""
    location = Location.of(path)
    if (location / "model" / CONFIG_FILE).is_file():
        return location / "model"
    if (location / CONFIG_FILE).is_file():
        return location
    if not location.exists():
        raise UserError(f"model dir {location} does not exist")
    raise UserError(f"{location} is neither a model dir (config.json) nor a run dir (model/)")


def resolve_model_dir(path: str | Path) -> Path:
    """The local model dir of a model or run dir; a remote one is fetched into this node's
    cache first (once per node and model version, see `pipeline.storage.local_copy`)."""
    return local_copy(find_model_dir(path), "models")


def model_spec_paths(spec: ModelSpec) -> list[str | Path]:
    """The model or run dirs of a spec: one path or URI, several joined with `+`, or a list
    (whose items are taken whole). A path that exists as written is one model, `+` or not."""
    if not isinstance(spec, str | Path):
        paths = list(spec)
    elif MEMBER_SEPARATOR not in str(spec) or Location.of(spec).exists():
        paths = [spec]
    else:
        paths = str(spec).split(MEMBER_SEPARATOR)
    if not paths or any(not str(path).strip() for path in paths):
        raise UserError(f"model spec {spec!r} names an empty model: join model dirs as A+B")
    return paths


def model_spec_uri(spec: ModelSpec) -> str:
    """The spec with each model resolved to its model dir's absolute path or URI (for
    processes that do not share this one's working dir), joined with `+`."""
    return MEMBER_SEPARATOR.join(find_model_dir(path).uri for path in model_spec_paths(spec))


class Translator:
    """Loads a model dir (or the model dirs of an ensemble) once and translates lists of
    strings.

    Sentences are sorted by length before batching, so each batch holds similar lengths
    and little padding; results come back in input order. Empty (or blank) inputs give
    empty translations without touching the model.
    """

    def __init__(
        self,
        model_path: ModelSpec,
        device: str = "cpu",
        settings: DecodeSettings | None = None,
    ) -> None:
        # where the models live (paths or URIs); `source` and `model_dir` are the first's
        self.sources = [find_model_dir(path) for path in model_spec_paths(model_path)]
        self.source = self.sources[0]
        self.model_dirs = [local_copy(source, "models") for source in self.sources]
        self.model_dir = self.model_dirs[0]
        try:
            models = [load_model(directory, device) for directory in self.model_dirs]
            self.src_tokenizer, self.tgt_tokenizer = load_pair(self.model_dir)
        except (FileNotFoundError, ValueError) as error:
            raise UserError(str(error)) from None
        self.metas = [_read_meta(directory) for directory in self.model_dirs]
        self.meta = self.metas[0]
        self.model: Seq2Seq | Ensemble = models[0] if len(models) == 1 else self._ensemble(models)
        self.device = torch.device(device)
        self.settings = settings = settings or DecodeSettings()
        self.candidate_table: CandidateTable | None = None  # loaded when first asked for
        if settings.precision == "bf16":
            # Cast once here: autocast alone casts every weight again at every step (its
            # cache is off under the search's inference_mode).
            self.model.store_linear_weights_in(torch.bfloat16)
        elif settings.precision == "int8":
            if self.device.type != "cpu":
                raise UserError(f"--precision int8 decodes on CPU only, not on {device}")
            quantize_linear_int8(self.model)  # once here, like bf16's cast

    def _ensemble(self, models: list[Seq2Seq]) -> Ensemble:
        """The members as one Ensemble; a UserError names what a member does not share with
        the first (vocabulary sizes and ids, sentencepiece models, languages)."""
        first, first_dir = self.sources[0], self.model_dirs[0]
        try:
            ensemble = Ensemble(models)
        except ValueError as error:
            raise UserError(f"cannot ensemble {self.uri}: {error}") from None
        for source, directory, meta in zip(self.sources, self.model_dirs, self.metas, strict=True):
            for name in (SRC_SPM, TGT_SPM):
                if (directory / name).read_bytes() != (first_dir / name).read_bytes():
                    raise UserError(
                        f"cannot ensemble {first} and {source}: their sentencepiece models "
                        f"{name} differ (the models of an ensemble must share vocabularies)"
                    )
            for key in ("src_lang", "tgt_lang"):
                if None not in (meta.get(key), self.meta.get(key)) and meta[key] != self.meta[key]:
                    raise UserError(
                        f"cannot ensemble {first} and {source}: {key} {self.meta[key]} "
                        f"against {meta[key]}"
                    )
        return ensemble

    @property
    def name(self) -> str:
        """The model's name (meta.json's, else its dir's); an ensemble's joins its models'."""
        names = [
            meta.get("name") or source.parent.name
            for meta, source in zip(self.metas, self.sources, strict=True)
        ]
        return MEMBER_SEPARATOR.join(names)

    @property
    def uri(self) -> str:
        """Where the model dir is (path or URI); an ensemble's joined with `+`."""
        return MEMBER_SEPARATOR.join(source.uri for source in self.sources)

    def info(self) -> dict:
        """What the model is: languages, config, vocabulary sizes (and an ensemble's
        `members`)."""
        info = {
            "name": self.name,
            "src_lang": self.meta.get("src_lang"),
            "tgt_lang": self.meta.get("tgt_lang"),
            "config": self.model.config.to_dict(),
            "src_vocab_size": self.src_tokenizer.vocab_size,
            "tgt_vocab_size": self.tgt_tokenizer.vocab_size,
            "parameters": self.model.num_parameters(),
        }
        if len(self.sources) > 1:
            info["members"] = [source.uri for source in self.sources]
        return info

    def translate(
        self,
        texts: Sequence[str],
        settings: DecodeSettings | None = None,
        return_attention: bool = False,
        prefixes: Sequence[str | None] | None = None,
        constraints: Sequence[Sequence[str]] | None = None,
    ) -> list[Translation]:
        """Translate each text; `len(result) == len(texts)`, in input order.

        `settings` overrides the Translator's for this call (e.g. a request's beam size);
        its precision must be the Translator's, since the weights were cast at load.
        `prefixes[i]` (None or "": none) is where translation i must start; `constraints[i]`
        the target phrases it must contain (searched with `constrained_beam_search`, greedy
        included). Bad ones raise a one-line UserError (`check_requests`)."""
        settings = self._settings(settings)
        ids = self.src_tokenizer.encode([t.strip() for t in texts])
        request = self._request(ids, prefixes, constraints, settings)
        results: list[Translation | None] = [None] * len(texts)
        order = sorted((i for i in range(len(texts)) if ids[i]), key=lambda i: len(ids[i]))
        for start in range(0, len(order), settings.batch_size):
            chunk = order[start : start + settings.batch_size]
            part = _Request(
                [ids[i] for i in chunk],
                [request.prefixes[i] for i in chunk],
                [request.constraints[i] for i in chunk],
            )
            nbest_lists = self._search(part, settings, return_attention)
            for i, hypotheses in zip(chunk, nbest_lists, strict=True):
                # every search but greedy's divides scores by the length penalty
                normalized = settings.beam_size > 1 or bool(request.constraints[i])
                results[i] = self._to_translation(
                    texts[i], ids[i], hypotheses, return_attention, settings, normalized
                )
        return [r if r is not None else Translation("", 0.0, [("", 0.0)]) for r in results]

    def check_requests(
        self,
        texts: Sequence[str],
        settings: DecodeSettings | None = None,
        prefixes: Sequence[str | None] | None = None,
        constraints: Sequence[Sequence[str]] | None = None,
    ) -> None:
        """The UserError `translate` would raise for these prefixes and constraints (one
        line naming the text), without translating: a server checks a request before its
        texts join a batch with others'."""
        ids = self.src_tokenizer.encode([t.strip() for t in texts])
        self._request(ids, prefixes, constraints, self._settings(settings))

    def _settings(self, settings: DecodeSettings | None) -> DecodeSettings:
        settings = settings or self.settings
        if settings.precision != self.settings.precision:
            raise UserError(
                f"this Translator decodes in {self.settings.precision}, not {settings.precision}"
            )
        return settings

    def _request(
        self,
        ids: list[list[int]],
        prefixes: Sequence[str | None] | None,
        constraints: Sequence[Sequence[str]] | None,
        settings: DecodeSettings,
    ) -> _Request:
        """Prefixes and constraints as piece ids, checked against each text's length limit."""
        count = len(ids)
        for name, given in (("prefixes", prefixes), ("constraints", constraints)):
            if given is not None and len(given) != count:
                raise UserError(f"{len(given)} {name} for {count} texts: give one per text")
        if settings.uses_candidates and (any(prefixes or ()) or any(constraints or ())):
            raise UserError(
                "target prefixes and glossaries do not combine with a candidate list yet: "
                "decode them without --candidates-frequent/--candidates-per-source"
            )
        prefix_texts = [p.strip() if p else "" for p in (prefixes or [None] * count)]
        prefix_ids = [self.tgt_tokenizer.encode([p])[0] if p else [] for p in prefix_texts]
        constraint_ids: list[list[list[int]]] = []
        for index, phrases in enumerate(constraints or [()] * count):
            if any(not phrase.strip() for phrase in phrases):
                raise UserError(f"text {index} has an empty constraint; give target words")
            constraint_ids.append(
                self.tgt_tokenizer.encode([p.strip() for p in phrases]) if phrases else []
            )
        unk = self.model.config.unk_id
        for index, (prefix, phrases) in enumerate(zip(prefix_ids, constraint_ids, strict=True)):
            for kind, pieces in (("target prefix", prefix), *(("constraint", p) for p in phrases)):
                if unk in pieces:
                    raise UserError(
                        f"a {kind} of text {index} has characters the target vocabulary lacks "
                        f"(pieces {self.tgt_tokenizer.pieces(pieces)}): it cannot be output"
                    )
        lengths = torch.tensor([len(s) for s in ids])
        limits = max_output_lengths(lengths, settings.max_len_a, settings.max_len_b).tolist()
        for index, (limit, prefix, phrases) in enumerate(
            zip(limits, prefix_ids, constraint_ids, strict=True)
        ):
            if not ids[index]:
                continue  # an empty text is translated to "" whatever it asks for
            if len(prefix) > limit:
                raise UserError(
                    f"the target prefix of text {index} has {len(prefix)} pieces, more than "
                    f"its length limit of {limit} (max_len_a x source pieces + max_len_b)"
                )
            needed = len(prefix) + sum(len(phrase) for phrase in phrases)
            if phrases and needed > limit:
                raise UserError(
                    f"the constraints of text {index} need {needed} pieces (with its prefix), "
                    f"more than its length limit of {limit}; give fewer or a longer source"
                )
        return _Request(ids, prefix_ids, constraint_ids)

    @contextlib.contextmanager
    def _numerics(self, settings: DecodeSettings) -> Iterator[None]:
        # bf16: the Linear weights are bfloat16 already; autocast casts their inputs.
        bf16 = settings.precision == "bf16"
        with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
            yield

    def _batch(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids [B, S] and lengths [B] on the Translator's device."""
        lengths = torch.tensor([len(s) for s in ids])
        batch = torch.full((len(ids), max(1, int(lengths.max()))), self.model.config.pad_id)
        for row, sentence in enumerate(ids):
            batch[row, : len(sentence)] = torch.tensor(sentence, dtype=torch.long)
        return batch.to(self.device), lengths.to(self.device)

    def _search(
        self, request: _Request, settings: DecodeSettings, return_attention: bool
    ) -> list[list[Hypothesis]]:
        """n-best lists in request order: sentences with constraints in one constrained beam
        search, the others in the usual one."""
        results: list[list[Hypothesis]] = [[] for _ in request.ids]
        constrained = [i for i, phrases in enumerate(request.constraints) if phrases]
        plain = [i for i, phrases in enumerate(request.constraints) if not phrases]
        for rows, search in ((plain, self._plain_search), (constrained, self._constrained)):
            if rows:
                part = _Request(*([field[i] for i in rows] for field in vars(request).values()))
                found = search(part, settings, return_attention)
                for row, hypotheses in zip(rows, found, strict=True):
                    results[row] = hypotheses
        return results

    def _options(self, request: _Request, settings: DecodeSettings, return_attention: bool) -> dict:
        """The keywords every search takes: length limit, attention (asked for, or for the
        quality signals), the forced prefixes."""
        options = {
            "max_len_a": settings.max_len_a,
            "max_len_b": settings.max_len_b,
            "return_attention": settings.signals or return_attention,
        }
        if any(request.prefixes):
            device, prefixes = self.device, request.prefixes
            options["wrap_decoder"] = lambda decoder: ForcedPrefix(decoder, prefixes, device)
        return options

    def _plain_search(
        self, request: _Request, settings: DecodeSettings, return_attention: bool
    ) -> list[list[Hypothesis]]:
        src, src_len = self._batch(request.ids)
        options = self._options(request, settings, return_attention)
        if settings.uses_candidates:
            vocabulary = self._candidates(src, settings)
            options["wrap_decoder"] = lambda decoder: decoder.restricted_to(vocabulary)
        with self._numerics(settings):
            if settings.sample:
                return self._sample(request, src, src_len, settings, options)
            # greedy is beam search of size 1, minus bookkeeping (and minus n-gram bans)
            if settings.beam_size == 1 and not settings.no_repeat_ngram:
                return [[h] for h in greedy_search(self.model, src, src_len, **options)]
            return beam_search(
                self.model,
                src,
                src_len,
                settings.beam_size,
                settings.n_best,
                settings.alpha,
                prune=settings.prune,
                no_repeat_ngram=settings.no_repeat_ngram,
                **options,
            )

    def _sample(
        self,
        request: _Request,
        src: torch.Tensor,
        src_len: torch.Tensor,
        settings: DecodeSettings,
        options: dict,
    ) -> list[list[Hypothesis]]:
        """Samples, each sentence seeded from the settings' seed and its own token ids: its
        sample is the same in any batch, in any request, on any replica."""
        base = settings.seed if settings.seed is not None else secrets.randbits(62)
        sampler = Sampler(settings.temperature, settings.top_k, settings.top_p)
        seeds = [derive_seed(base, *sentence) for sentence in request.ids]
        options = {name: value for name, value in options.items() if name != "wrap_decoder"}
        if any(request.prefixes):  # the rows sampling draws for sentences, each its prefix

            def wrap_rows(sentences: list[int]) -> DecoderWrapper:
                prefixes = [request.prefixes[i] for i in sentences]
                return lambda decoder: ForcedPrefix(decoder, prefixes, self.device)

            options["wrap_rows"] = wrap_rows
        elif settings.uses_candidates:  # prefixes refused with candidates: one or the other
            vocabulary = self._candidates(src, settings)
            options["wrap_rows"] = lambda _: lambda decoder: decoder.restricted_to(vocabulary)
        return sample_search(
            self.model,
            src,
            src_len,
            seeds,
            sampler,
            settings.n_best,
            settings.no_repeat_ngram,
            **options,
        )

    def _candidates(self, src: torch.Tensor, settings: DecodeSettings) -> torch.Tensor:
        """The target ids [C] the batch src [B, S] decodes over (`models.candidates`)."""
        if self.candidate_table is None:
            path = self.model_dir / CANDIDATES_FILE
            if not path.is_file():
                raise UserError(
                    f"{self.source} has no candidate list ({CANDIDATES_FILE}): build one with "
                    "`nmt candidates --model MODEL --data PREPARED_DATA`"
                )
            self.candidate_table = CandidateTable.load(path)
        config = self.model.config
        specials = (config.unk_id, config.bos_id, config.eos_id)
        try:
            return self.candidate_table.candidates(
                src, settings.candidates_frequent, settings.candidates_per_source, specials
            )
        except ValueError as error:
            raise UserError(f"{self.source}: {error}") from None

    def _constrained(
        self, request: _Request, settings: DecodeSettings, return_attention: bool
    ) -> list[list[Hypothesis]]:
        src, src_len = self._batch(request.ids)
        with self._numerics(settings):
            return constrained_beam_search(
                self.model,
                src,
                src_len,
                request.constraints,
                # greedy falls back to a beam: one slot per constraint state at least
                max(settings.beam_size, CONSTRAINED_MIN_BEAM),
                settings.n_best,
                settings.alpha,
                **self._options(request, settings, return_attention),
            )

    def _to_translation(
        self,
        source: str,
        src_ids: list[int],
        hypotheses: list[Hypothesis],
        return_attention: bool,
        settings: DecodeSettings,
        normalized: bool,
    ) -> Translation:
        alternatives = [(self.tgt_tokenizer.decode(h.tokens), h.score) for h in hypotheses]
        best = hypotheses[0]
        translation = Translation(alternatives[0][0], alternatives[0][1], alternatives)
        (limit,) = max_output_lengths(
            torch.tensor([len(src_ids)]), settings.max_len_a, settings.max_len_b
        ).tolist()
        if settings.signals:
            translation.alternative_signals = [
                self._signals(source, src_ids, h, text, limit, settings.alpha if normalized else 0)
                for h, (text, _) in zip(hypotheses, alternatives, strict=True)
            ]
            translation.signals = translation.alternative_signals[0]
        if return_attention:
            translation.source_pieces = self.src_tokenizer.pieces(src_ids)
            translation.target_pieces = self.tgt_tokenizer.pieces(best.tokens)
            if best.attention is not None:
                translation.attention = best.attention.tolist()
        return translation

    def _signals(
        self,
        source: str,
        src_ids: list[int],
        hypothesis: Hypothesis,
        text: str,
        limit: int,
        alpha: float,
    ) -> QualitySignals:
        """The hypothesis's signals; its log-probability is its score times the length
        penalty the search divided it by (alpha 0 for greedy, which does not)."""
        # A hypothesis shorter than its limit ended by predicting eos, which was scored.
        predictions = len(hypothesis.tokens) + (len(hypothesis.tokens) < limit)
        penalty = length_penalty(predictions, alpha)
        attention = None if hypothesis.attention is None else hypothesis.attention.tolist()
        return quality_signals(
            source,
            text,
            hypothesis.score * penalty,
            predictions,
            len(src_ids),
            len(hypothesis.tokens),
            attention,
        )

    def score(
        self, sources: Sequence[str], targets: Sequence[str], settings: DecodeSettings | None = None
    ) -> list[PairScore]:
        """log P(target + eos | source) of each pair, in one teacher-forced pass per batch of
        `settings.batch_size` pairs (sorted by length); the same as the training loss gives
        the pair (`models.scoring.score_pairs`)."""
        settings = self._settings(settings)
        if len(sources) != len(targets):
            raise UserError(f"{len(sources)} sources but {len(targets)} targets: pair them up")
        src_ids = self.src_tokenizer.encode([s.strip() for s in sources])
        tgt_ids = self.tgt_tokenizer.encode([t.strip() for t in targets])
        for index, ids in enumerate(src_ids):
            if not ids:
                raise UserError(f"source {index} is empty: there is nothing to score against")
        scores: list[PairScore | None] = [None] * len(sources)
        order = sorted(range(len(sources)), key=lambda i: (len(src_ids[i]), len(tgt_ids[i])))
        for start in range(0, len(order), settings.batch_size):
            chunk = order[start : start + settings.batch_size]
            src, src_len = self._batch([src_ids[i] for i in chunk])
            tgt, tgt_len = self._batch([tgt_ids[i] for i in chunk])
            with self._numerics(settings):
                log_probs = score_pairs(self.model, src, src_len, tgt, tgt_len).tolist()
            for i, log_prob in zip(chunk, log_probs, strict=True):
                predictions = len(tgt_ids[i]) + 1
                scores[i] = PairScore(log_prob, log_prob / predictions, predictions)
        return scores


def _read_meta(model_dir: Path) -> dict:
    meta_file = model_dir / META_FILE
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}
