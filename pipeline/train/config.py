"""Training settings: a dataclass, loaded from YAML (configs/*.yaml), overridden by CLI flags,
and saved into the run dir as the effective configuration."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.errors import UserError
from pipeline.storage import Location
from pipeline.train.augment import NoiseSettings, SubwordSampling, settings_from


@dataclass
class TrainConfig:
    # Model sizes: any ModelConfig field except vocab sizes and token ids (taken from data).
    model: dict = field(default_factory=dict)
    # Optimiser and schedule.
    lr: float = 1e-3
    warmup_steps: int = 500
    schedule: str = "inverse_sqrt"  # "inverse_sqrt" (after warm-up) | "constant" | "plateau"
    plateau_factor: float = 0.5  # "plateau": lr *= factor after `plateau_patience` bad validations
    plateau_patience: int = 2
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    # Batching: per worker, by tokens (source + target, padded).
    max_tokens: int = 4000
    bucket_window: int = 50  # length-sorting window, in batches
    max_len: int = 100  # pairs longer than this (either side, in pieces) are skipped
    # A train split of at most this many MiB (its Parquet files) is read into Ray's object
    # store once; a larger one streams from storage, every epoch. 0: always stream.
    cache_train_mib: float = 1024
    # Length of the run; the first limit reached stops it.
    max_steps: int | None = None
    max_epochs: int | None = None
    time_budget_minutes: float | None = None
    # Validation, checkpoints, early stopping.
    valid_every: int = 500
    valid_beam_size: int = 1
    valid_max_sentences: int | None = None
    early_stopping_patience: int | None = None  # validations without BLEU improvement
    checkpoints_to_keep: int = 3
    # Checkpoint averaging at the end: the last N validated checkpoints averaged into one
    # model, exported instead of the best checkpoint when its validation BLEU is higher
    # (meta.json says which). Ray then keeps every checkpoint. 0: off.
    average_last: int = 0
    max_failures: int = 2
    log_every: int = 50
    # Resources.
    workers: int = 1
    gpu: bool = False
    cpus_per_worker: float | None = None  # default: leave one CPU for Ray Data
    threads_per_worker: int | None = None  # torch threads; default: the node's cores / workers
    # Extra Ray resources each worker needs, e.g. {"accelerator_type:A10G": 0.01} or a custom
    # resource that only some node types offer.
    worker_resources: dict = field(default_factory=dict)
    precision: str = "auto"  # "auto" (bf16 autocast on GPU, fp32 on CPU) | "fp32" | "bf16"
    # "full" softmax, or "sampled" over each batch's targets topped up to
    # `sampled_softmax_size` ids (models/sampled_softmax.py); decoding is the same for both.
    output: str = "full"
    sampled_softmax_size: int = 8192
    seed: int = 1
    # Training pairs rewritten on the fly (pipeline/train/augment.py); both off by default.
    noise: NoiseSettings = field(default_factory=NoiseSettings)  # how people type, on sources
    subword_sampling: SubwordSampling = field(default_factory=SubwordSampling)

    def __post_init__(self) -> None:
        # YAML gives the nested settings as mappings
        self.noise = settings_from(NoiseSettings, self.noise, "noise")
        self.subword_sampling = settings_from(
            SubwordSampling, self.subword_sampling, "subword_sampling"
        )
        if self.output not in ("full", "sampled"):
            raise UserError(f"output must be full or sampled, not {self.output!r}")
        if self.sampled_softmax_size < 1:
            raise UserError("sampled_softmax_size must be at least 1")
        if self.average_last < 0:
            raise UserError(f"average_last must be 0 (off) or more, not {self.average_last}")

    @classmethod
    def from_yaml(cls, path: str | Path | Location) -> TrainConfig:
        """From a YAML file: a local path or a URI (a remote run dir's saved config)."""
        location = Location.of(path)
        if not location.is_file():
            raise UserError(f"config file {location} not found")
        data = yaml.safe_load(location.read_text()) or {}
        return cls.from_dict(data, source=location.uri)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{source}: unknown settings {unknown}; known: {sorted(known)}")
        return cls(**data)

    def override(self, **values) -> TrainConfig:
        """A copy with the given settings replaced (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path | Location) -> None:
        Location.of(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
