"""Checkpoint averaging of a training run: `nmt average`, and `average_last` at the end of
`nmt train` (`pipeline.train.trainer`).

The weights of the chosen checkpoints (`pipeline.train.checkpoints`) are averaged tensor by
tensor (`models.averaging`) into one model, written as a model dir like an exported one,
whose meta.json names the checkpoints it averages.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.corpus.tokenizer import SRC_SPM, TGT_SPM
from pipeline.errors import UserError
from pipeline.storage import Location
from pipeline.train.checkpoints import (
    RAY_RUN_NAME,
    RunCheckpoint,
    run_checkpoints,
    select_checkpoints,
)

if TYPE_CHECKING:  # torch stays out of `nmt average --help`
    from models.seq2seq import Seq2Seq

META_FILE = "meta.json"


def average_checkpoints(checkpoints: list[RunCheckpoint]) -> Seq2Seq:
    """One model whose weights are the mean of the checkpoints' (integer and bool buffers
    from the last), in eval mode; a `UserError` if their model configs differ."""
    from models.averaging import average_state_dicts
    from models.seq2seq import Seq2Seq

    configs = [checkpoint.model_config() for checkpoint in checkpoints]
    if any(config != configs[0] for config in configs):
        raise UserError("the checkpoints to average are of different model configs")
    model = Seq2Seq(configs[0])
    model.load_state_dict(average_state_dicts(c.model_state() for c in checkpoints))
    return model.eval()


def average_meta(checkpoints: list[RunCheckpoint], selection: str) -> dict:
    """What meta.json says of an average: how its checkpoints were chosen, and which."""
    return {"selection": selection, "checkpoints": [c.describe() for c in checkpoints]}


@dataclass
class AveragedRun:
    out: Location
    checkpoints: list[RunCheckpoint]

    def describe(self) -> str:
        steps = ", ".join(str(c.step) for c in self.checkpoints)
        return f"averaged {len(self.checkpoints)} checkpoints (steps {steps})\n  model: {self.out}"


def average_run(
    run: str | Path,
    out: str | Path,
    last: int | None = None,
    best: int | None = None,
    data: str | Path | None = None,
) -> AveragedRun:
    """`nmt average`: the `last` or the `best` N checkpoints of the run dir `run` averaged
    into the model dir `out` (paths or URIs). Its tokenizers come from the run's exported
    model, or from the prepared dataset `data` (a run still training has no export)."""
    run_dir, target = Location.of(run), Location.of(out)
    if not (run_dir / RAY_RUN_NAME).is_dir():
        raise UserError(f"--run {run_dir} is not a training run dir (it has no {RAY_RUN_NAME}/)")
    if target.exists():
        raise UserError(f"--out {target} exists; choose a new directory")
    tokenizers = Location.of(data) if data else run_dir / "model"
    if not (tokenizers / SRC_SPM).is_file():
        raise UserError(
            f"{tokenizers} has no {SRC_SPM}: pass --data with the run's prepared dataset"
        )
    chosen = select_checkpoints(run_checkpoints(run_dir), last, best)
    meta = _languages(run_dir) | {
        "name": f"{run_dir.name}-average",
        "step": chosen[-1].step,
        "average": average_meta(chosen, f"last {last}" if last else f"best {best}"),
    }
    write_model_dir(average_checkpoints(chosen), target, tokenizers, meta)
    return AveragedRun(target, chosen)


def _languages(run_dir: Location) -> dict:
    """The languages the run's exported model names (none when there is no export yet)."""
    meta = run_dir / "model" / META_FILE
    known = json.loads(meta.read_text()) if meta.is_file() else {}
    return {key: known[key] for key in ("src_lang", "tgt_lang") if key in known}


def write_model_dir(model: Seq2Seq, out: Location, tokenizers: Location, meta: dict) -> None:
    """A model dir at `out` (path or URI) with the sentencepiece models of the directory
    `tokenizers`, built aside and renamed into place (uploaded, for a URI) when complete."""
    from models.model_dir import save_model

    with tempfile.TemporaryDirectory() as scratch:
        names = (SRC_SPM, TGT_SPM)
        spm = {name: (tokenizers / name).download(Path(scratch) / name) for name in names}
        staging = Path(scratch) / "model"
        if out.is_local:  # beside `out`, so that the rename stays on one filesystem
            staging = Path(out.path).parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            save_model(model, staging, spm)
            (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            if out.is_local:
                staging.rename(out.path)
            else:
                out.upload(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
