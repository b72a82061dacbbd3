"""The Translator: the one place that turns text into translations.

A model dir (or a training run dir holding `model/`) -> batched, length-sorted beam search
over strings, output restored to input order. The CLI, the Serve deployment and bulk
translation all use it.

A model spec may join several model dirs with `+` (`runs/a+runs/b`), or be a list of them:
an ensemble (`models.ensemble`), decoded with the mean of the models' log-probabilities.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.ensemble import Ensemble
from models.model_dir import CONFIG_FILE, load_model
from models.quantize import quantize_linear_int8
from models.search import Hypothesis, beam_search, greedy_search
from models.seq2seq import Seq2Seq
from pipeline.corpus.tokenizer import SRC_SPM, TGT_SPM, load_pair
from pipeline.errors import UserError
from pipeline.storage import Location, local_copy
from pipeline.translate.settings import DecodeSettings

META_FILE = "meta.json"
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
    ) -> list[Translation]:
        """Translate each text; `len(result) == len(texts)`, in input order.

        `settings` overrides the Translator's for this call (e.g. a request's beam size);
        its precision must be the Translator's, since the weights were cast at load."""
        settings = settings or self.settings
        if settings.precision != self.settings.precision:
            raise UserError(
                f"this Translator decodes in {self.settings.precision}, not {settings.precision}"
            )
        ids = self.src_tokenizer.encode([t.strip() for t in texts])
        results: list[Translation | None] = [None] * len(texts)
        order = sorted((i for i in range(len(texts)) if ids[i]), key=lambda i: len(ids[i]))
        for start in range(0, len(order), settings.batch_size):
            chunk = order[start : start + settings.batch_size]
            nbest_lists = self._search([ids[i] for i in chunk], settings, return_attention)
            for i, hypotheses in zip(chunk, nbest_lists, strict=True):
                results[i] = self._to_translation(ids[i], hypotheses, return_attention)
        return [r if r is not None else Translation("", 0.0, [("", 0.0)]) for r in results]

    def _search(
        self, ids: list[list[int]], settings: DecodeSettings, return_attention: bool
    ) -> list[list[Hypothesis]]:
        src_len = torch.tensor([len(s) for s in ids])
        src = torch.full((len(ids), int(src_len.max())), self.model.config.pad_id)
        for row, sentence in enumerate(ids):
            src[row, : len(sentence)] = torch.tensor(sentence)
        src, src_len = src.to(self.device), src_len.to(self.device)
        options = {
            "max_len_a": settings.max_len_a,
            "max_len_b": settings.max_len_b,
            "return_attention": return_attention,
        }
        # bf16: the Linear weights are bfloat16 already; autocast casts their inputs.
        bf16 = settings.precision == "bf16"
        with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
            if settings.beam_size == 1:  # greedy is beam search of size 1, minus bookkeeping
                return [[h] for h in greedy_search(self.model, src, src_len, **options)]
            return beam_search(
                self.model,
                src,
                src_len,
                settings.beam_size,
                settings.n_best,
                settings.alpha,
                prune=settings.prune,
                **options,
            )

    def _to_translation(
        self, src_ids: list[int], hypotheses: list[Hypothesis], return_attention: bool
    ) -> Translation:
        alternatives = [(self.tgt_tokenizer.decode(h.tokens), h.score) for h in hypotheses]
        best = hypotheses[0]
        translation = Translation(alternatives[0][0], alternatives[0][1], alternatives)
        if return_attention:
            translation.source_pieces = self.src_tokenizer.pieces(src_ids)
            translation.target_pieces = self.tgt_tokenizer.pieces(best.tokens)
            if best.attention is not None:
                translation.attention = best.attention.tolist()
        return translation


def _read_meta(model_dir: Path) -> dict:
    meta_file = model_dir / META_FILE
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}
