"""The model directory: config.json + weights (+ tokenizer files added by `nmt prepare`).

Weights are loaded with `torch.load(weights_only=True)`, which refuses anything but tensors
and plain containers, so a model dir from an untrusted source cannot run code on load.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from models.config import ModelConfig
from models.seq2seq import Seq2Seq

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"


def save_model(
    model: Seq2Seq, directory: str | Path, extra_files: dict[str, Path] | None = None
) -> None:
    """Write config, weights and extra files (e.g. {"spm.src.model": path}) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory / CONFIG_FILE)
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)
    for name, source in (extra_files or {}).items():
        if Path(source).resolve() != (directory / name).resolve():
            shutil.copyfile(source, directory / name)


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> Seq2Seq:
    """Rebuild the model from a model dir, in eval mode. Raises FileNotFoundError or
    ValueError with a message a user can act on."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a model dir (no {CONFIG_FILE})")
    config = ModelConfig.load(directory / CONFIG_FILE)
    model = Seq2Seq(config)
    try:
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} has no {WEIGHTS_FILE}") from None
    except Exception as error:  # weights_only refuses pickled objects with UnpicklingError
        raise ValueError(f"refusing to load {directory / WEIGHTS_FILE}: {error}") from error
    model.load_state_dict(state)
    return model.to(device).eval()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DDP / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
