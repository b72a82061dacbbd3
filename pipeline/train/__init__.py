"""Training: data-parallel training of the attention model on Ray Train (TorchTrainer + DDP),
with checkpoints, resume, fault tolerance and the export of the best model.

- `trainer`: the library entry, `train_model(data, out, TrainConfig)`, and the export.
- `worker`: the loop each Ray Train worker runs (`train_func`, handed a `WorkerJob`).
- `config`: `TrainConfig`, the training settings (YAML, flags).
- `cli`: `nmt train`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports

if TYPE_CHECKING:
    from pipeline.train.config import TrainConfig
    from pipeline.train.trainer import train_model

__all__ = ["TrainConfig", "train_model"]

__getattr__ = lazy_exports(
    __name__, {"train_model": "pipeline.train.trainer", "TrainConfig": "pipeline.train.config"}
)
