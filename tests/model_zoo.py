"""Several small models with their own ids and languages, made from the tests' tiny trained
de->en model: its weights perturbed with a seeded noise (so each model translates differently
and a mix-up between them shows) and a `meta.json` naming other languages. Tests of serving
and bulk translation route requests and rows among them; the benchmarks reuse them when no
trained models exist."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from models.model_dir import load_model, save_model

# id -> (source, target, noise seed); seed None keeps the trained weights.
ZOO = {"de-en": ("de", "en", None), "en-de": ("en", "de", 1), "zh-en": ("zh", "en", 2)}
NOISE = 0.15  # relative to each tensor's spread: translations change, stay words


def model_variant(base: Path, directory: Path, source: str, target: str, seed: int | None) -> Path:
    """A copy of the model dir `base` with meta.json saying source->target and, with a seed,
    every weight moved by seeded noise."""
    shutil.copytree(base, directory, dirs_exist_ok=True)
    if seed is not None:
        model = load_model(base)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter in model.parameters():
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(NOISE * parameter.std().nan_to_num(0.0) * noise)
        save_model(model, directory)
    meta = {"src_lang": source, "tgt_lang": target, "name": f"tiny-{source}-{target}"}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def build_zoo(base: Path, directory: Path, ids: tuple[str, ...] = tuple(ZOO)) -> dict[str, Path]:
    """The models of `ZOO` named in `ids` under `directory`, one subdirectory each."""
    return {model_id: model_variant(base, directory / model_id, *ZOO[model_id]) for model_id in ids}
