"""A run's checkpoints: their layout, which ones a run dir still has, and choosing some.

They are Ray Train's (`RUN/ray_train/checkpoint_*/`), written by the worker: the model and
optimiser state, the model config and the progress, whose last validation is the
checkpoint's step and BLEU. Which of them a run still has depends on its `CheckpointConfig`
(`pipeline.train.trainer.checkpoint_config`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import UserError
from pipeline.storage import Location

if TYPE_CHECKING:  # torch stays out of `--help`
    from torch import Tensor

    from models.config import ModelConfig
    from models.seq2seq import Seq2Seq

RAY_RUN_NAME = "ray_train"  # Ray Train's storage inside a run dir
STATE_FILE = "state.pt"  # model, optimiser and schedule state
PROGRESS_FILE = "progress.json"  # `pipeline.train.worker.Progress`
CONFIG_FILE = "config.json"  # the model config


@dataclass(frozen=True)
class RunCheckpoint:
    """One checkpoint of a run: where it is (path or URI), its step and validation BLEU."""

    location: Location
    step: int
    valid_bleu: float | None  # None: its step has no validation recorded

    @classmethod
    def read(cls, location: Location) -> RunCheckpoint:
        progress = json.loads((location / PROGRESS_FILE).read_text())
        last = progress["history"][-1] if progress.get("history") else {}
        bleu = last.get("valid_bleu") if last.get("step") == progress["step"] else None
        return cls(location, progress["step"], bleu)

    def model_config(self) -> ModelConfig:
        from models.config import ModelConfig

        return ModelConfig.from_dict(json.loads((self.location / CONFIG_FILE).read_text()))

    def model_state(self) -> dict[str, Tensor]:
        """The model's weights (read whole, from remote storage too; tensors only)."""
        import torch

        data = io.BytesIO((self.location / STATE_FILE).read_bytes())
        return torch.load(data, map_location="cpu", weights_only=True)["model"]

    def model(self) -> Seq2Seq:
        """The checkpoint's model, in eval mode."""
        from models.seq2seq import Seq2Seq

        model = Seq2Seq(self.model_config())
        model.load_state_dict(self.model_state())
        return model.eval()

    def describe(self) -> dict:
        return {"step": self.step, "valid_bleu": self.valid_bleu}


def run_checkpoints(run: str | Path | Location) -> list[RunCheckpoint]:
    """The checkpoints the run dir `run` still has, by step (of two of one step, the later
    written: a step trained again after a restart)."""
    by_step: dict[int, RunCheckpoint] = {}
    for child in (Location.of(run) / RAY_RUN_NAME).children():  # by name: checkpoint_<time>
        if child.name.startswith("checkpoint_") and (child / PROGRESS_FILE).is_file():
            checkpoint = RunCheckpoint.read(child)
            by_step[checkpoint.step] = checkpoint
    return [by_step[step] for step in sorted(by_step)]


def select_checkpoints(
    checkpoints: list[RunCheckpoint], last: int | None = None, best: int | None = None
) -> list[RunCheckpoint]:
    """The `last` N checkpoints by step, or the `best` N by validation BLEU (of equal BLEU
    the later), in step order. A `UserError` lists what the run has when it has fewer."""
    if (last is None) == (best is None) or (last or best) < 1:
        raise UserError("choose the checkpoints with one of --last N or --best N (N >= 1)")
    wanted = last or best
    pool = checkpoints if last else [c for c in checkpoints if c.valid_bleu is not None]
    if len(pool) < wanted:
        have = ", ".join(f"step {c.step} (BLEU {c.valid_bleu})" for c in checkpoints) or "none"
        raise UserError(
            f"{'--last' if last else '--best'} {wanted}: the run has {len(pool)} such "
            f"checkpoints ({have}); Ray keeps the best `checkpoints_to_keep` by BLEU, "
            "or all with `average_last` in the training config"
        )
    if last:
        return pool[-wanted:]
    ranked = sorted(pool, key=lambda c: (c.valid_bleu, c.step), reverse=True)[:wanted]
    return sorted(ranked, key=lambda c: c.step)
