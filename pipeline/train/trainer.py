"""Training: data-parallel training on Ray Train (TorchTrainer + DDP), CPU or GPU.

The driver checks the prepared data, builds the model config from it, hands the worker loop
(`pipeline.train.worker.train_func`) to a TorchTrainer, and when the run ends exports the
best checkpoint (by validation BLEU) as `OUT/model/`, plus `metrics.csv` and a plot; with
`average_last` the average of the last checkpoints instead, when it validates better.
Re-running with the same `--out` resumes from the latest checkpoint.

`--data` and `--out` are local paths or URIs (s3://bucket/path, ...): Ray Data reads the
train split and Ray Train keeps its checkpoints through the same pyarrow filesystem layer.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.corpus.tokenizer import SRC_SPM, TGT_SPM, Tokenizer
from pipeline.errors import UserError
from pipeline.storage import Location
from pipeline.train.augment import Augmentation
from pipeline.train.checkpoints import RAY_RUN_NAME, RunCheckpoint, run_checkpoints
from pipeline.train.config import TrainConfig

if TYPE_CHECKING:  # heavy imports, deferred so that `nmt train --help` stays fast
    import ray
    from ray.train import CheckpointConfig, Result
    from ray.train.torch import TorchTrainer

    from models.config import ModelConfig
    from models.seq2seq import Seq2Seq
    from pipeline.train.worker import FaultInjection, WorkerJob

EFFECTIVE_CONFIG = "train_config.yaml"
EXPORTED = ("model", "metrics.csv", "training.png")  # what export_run writes into OUT
FAULT_ENV = "NMT_INJECT_FAILURE_AT_STEP"  # test-only, see pipeline.train.worker.FaultInjection


@dataclass
class TrainSummary:
    out_dir: Path | Location  # a Path for a local run dir, a Location for a remote one
    steps: int
    best_bleu: float
    model_dir: Path | Location
    resumes: int = 0
    target_tokens: int = 0
    train_seconds: float = 0.0  # excluding validation
    exported: str = "best checkpoint"  # or "average of the last N checkpoints (BLEU ...)"

    def describe(self) -> str:
        resumed = f" (resumed {self.resumes}x from checkpoints)" if self.resumes else ""
        return (
            f"trained {self.steps} steps{resumed}; best validation BLEU {self.best_bleu:.2f}\n"
            f"  model:   {self.model_dir} ({self.exported})\n"
            f"  metrics: {self.out_dir / 'metrics.csv'}\n"
            f"  plot:    {self.out_dir / 'training.png'}"
        )


def train_model(
    data_dir: str | Path, out_dir: str | Path, config: TrainConfig, resume: bool = False
) -> TrainSummary:
    """Train (or resume) a run; returns where the best model went. Usable from jobs/.
    `data_dir` and `out_dir` are local paths or URIs."""
    import ray

    data, out = Location.of(data_dir), Location.of(out_dir)
    stats = check_prepared_data(data)
    model_config = build_model_config(data, config)
    has_previous = (out / RAY_RUN_NAME).is_dir()
    if resume and not has_previous:
        raise UserError(f"--resume: no previous run in {out}")
    check_compatible_with_previous(out, config)
    out.mkdir()
    config.save(out / EFFECTIVE_CONFIG)
    if not ray.is_initialized():
        ray.init(logging_level="WARNING")
    trainer = build_trainer(data, out, config, model_config, stats)
    result = trainer.fit()
    return export_run(result, data, out, stats, config)


def check_prepared_data(data: Location) -> dict:
    if not data.is_dir():
        raise UserError(f"--data {data} does not exist; create it with `nmt prepare`")
    needed = ["stats.json", SRC_SPM, TGT_SPM, "train", "valid"]
    missing = [name for name in needed if not (data / name).exists()]
    if missing:
        raise UserError(
            f"--data {data} is not a prepared dataset (missing "
            f"{', '.join(missing)}); create it with `nmt prepare`"
        )
    return json.loads((data / "stats.json").read_text())


def build_model_config(data: Location, config: TrainConfig) -> ModelConfig:
    from models.config import ModelConfig

    # the tokenizers are small: read their bytes rather than copying files from remote data
    sizes = {
        "src_vocab_size": Tokenizer.from_serialized((data / SRC_SPM).read_bytes()).vocab_size,
        "tgt_vocab_size": Tokenizer.from_serialized((data / TGT_SPM).read_bytes()).vocab_size,
    }
    reserved = set(sizes) | {"pad_id", "unk_id", "bos_id", "eos_id"}
    if reserved & set(config.model):
        raise UserError(
            f"model settings {sorted(reserved & set(config.model))} come from the "
            "data; remove them from the config"
        )
    if config.output == "sampled" and config.sampled_softmax_size > sizes["tgt_vocab_size"]:
        raise UserError(
            f"sampled_softmax_size {config.sampled_softmax_size} is larger than the target "
            f"vocabulary ({sizes['tgt_vocab_size']}): use output: full"
        )
    try:
        return ModelConfig(**sizes, **config.model)
    except TypeError as error:
        raise UserError(f"bad model settings in the config: {error}") from None


def check_compatible_with_previous(out: Location, config: TrainConfig) -> None:
    saved = out / EFFECTIVE_CONFIG
    if not saved.is_file() or not (out / RAY_RUN_NAME).is_dir():
        return
    previous = TrainConfig.from_yaml(saved)
    if previous.model != config.model:
        raise UserError(
            f"{out} holds a run with other model settings ({previous.model}); "
            "use another --out or the same config"
        )


def build_trainer(
    data: Location, out: Location, config: TrainConfig, model_config: ModelConfig, stats: dict
) -> TorchTrainer:
    """The TorchTrainer of a run: `config.workers` workers running `train_func` on the train
    split, checkpoints (the best by validation BLEU kept) and restarts under `out`."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.train.worker import train_func

    cpus = config.cpus_per_worker or _default_cpus_per_worker(config)
    job = worker_job(data, out, config, model_config, stats, cpus)
    return TorchTrainer(
        train_loop_per_worker=train_func,
        train_loop_config=job.loop_config(),
        scaling_config=ScalingConfig(
            num_workers=config.workers,
            use_gpu=config.gpu,
            resources_per_worker={"CPU": cpus, **config.worker_resources},
        ),
        datasets={"train": train_dataset(data, config)},
        run_config=RunConfig(
            name=RAY_RUN_NAME,
            storage_path=out.uri,  # Ray Train opens a URI through pyarrow itself
            checkpoint_config=checkpoint_config(config),
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
    )


def checkpoint_config(config: TrainConfig) -> CheckpointConfig:
    """Ray keeps the best `checkpoints_to_keep` checkpoints by validation BLEU (and the
    latest, to resume from). `average_last` N needs the last N whatever their BLEU as well,
    and no single ranking keeps both the best and the latest N, so then it keeps them all."""
    from ray.train import CheckpointConfig

    return CheckpointConfig(
        num_to_keep=None if config.average_last else config.checkpoints_to_keep,
        checkpoint_score_attribute="valid_bleu",
        checkpoint_score_order="max",
    )


def worker_job(
    data: Location,
    out: Location,
    config: TrainConfig,
    model_config: ModelConfig,
    stats: dict,
    cpus_per_worker: float,
) -> WorkerJob:
    """What every worker receives: the config whole, the model, the validation set."""
    from pipeline.train.worker import ValidationSet, WorkerJob

    return WorkerJob(
        config=config,
        model_config=model_config,
        valid=ValidationSet.load(data, config.valid_max_sentences, stats["tgt_lang"]),
        threads=_threads_per_worker(config, cpus_per_worker),
        inject_failure=fault_injection(out),
        augment=augmentation(data, config),
    )


def augmentation(data: Location, config: TrainConfig) -> Augmentation | None:
    """What rewrites the training pairs on the fly (noise, subword sampling); None when
    neither is on, so that the pairs go to batching as read."""
    if not (config.noise.enabled or config.subword_sampling.enabled):
        return None
    return Augmentation(
        config.noise,
        config.subword_sampling,
        src_spm=(data / SRC_SPM).read_bytes(),
        tgt_spm=(data / TGT_SPM).read_bytes(),
    )


def fault_injection(out: Location) -> FaultInjection | None:
    """The failure FAULT_ENV asks for (test-only), with its marker in the run dir."""
    from pipeline.train.worker import FaultInjection

    step = os.environ.get(FAULT_ENV)
    return FaultInjection(step=int(step), marker_dir=out.uri) if step else None


def train_dataset(data: Location, config: TrainConfig) -> ray.data.Dataset:
    """The train split's token ids, read once into the object store when small enough."""
    import ray

    train = ray.data.read_parquet((data / "train").uri).select_columns(["src_ids", "tgt_ids"])
    if (data / "train").total_bytes() <= config.cache_train_mib * 2**20:
        # Every epoch re-runs a streaming dataset's reads, which costs the workers' loop
        # throughput; read once, the blocks stay in the object store, rebuilt from their read
        # tasks (lineage) if a node holding some is lost.
        train = train.materialize()
    return train


def _default_cpus_per_worker(config: TrainConfig) -> float:
    """One CPU per worker, but on a small machine leave one CPU free for Ray Data's reads
    (otherwise the workers hold every CPU and the data stream starves)."""
    import ray

    if config.gpu:
        return 1.0
    total = ray.cluster_resources().get("CPU", 1)
    return max(0.25, min(1.0, (total - 1) / config.workers))


def _threads_per_worker(config: TrainConfig, cpus_per_worker: float) -> int:
    """Torch threads: on one machine, share its cores among the workers (Ray Data's reads are
    light next to the model's matmuls); on a cluster, what each worker reserved."""
    import ray

    if config.threads_per_worker:
        return config.threads_per_worker
    if len(ray.nodes()) == 1:
        return max(1, (os.cpu_count() or 1) // config.workers)
    return max(1, int(cpus_per_worker))


def export_run(
    result: Result, data: Location, out: Location, stats: dict, config: TrainConfig
) -> TrainSummary:
    """Best checkpoint (or, with `average_last`, the better of it and the average) ->
    OUT/model (a model dir); history -> metrics.csv and training.png. For a remote OUT they
    are written into a local temp dir, then uploaded."""
    from pipeline.train.checkpoints import PROGRESS_FILE

    if result.error:
        raise result.error
    scored = [(c, m) for c, m in (result.best_checkpoints or []) if "valid_bleu" in m]
    if not scored or result.checkpoint is None:
        raise UserError("training produced no checkpoint (was the training set empty?)")
    best_checkpoint, best_metrics = max(scored, key=lambda cm: (cm[1]["valid_bleu"], cm[1]["step"]))
    with result.checkpoint.as_directory() as directory:
        progress = json.loads((Path(directory) / PROGRESS_FILE).read_text())
    best = RunCheckpoint(
        _location_of(best_checkpoint), best_metrics["step"], best_metrics["valid_bleu"]
    )
    model = best.model()
    meta = {
        "src_lang": stats.get("src_lang"),
        "tgt_lang": stats.get("tgt_lang"),
        "name": out.name,
        "step": best.step,
        "valid_bleu": best.valid_bleu,
        **({"dialogue": stats["dialogue"]} if "dialogue" in stats else {}),
    }
    exported = "best checkpoint"
    if config.average_last:
        model, meta, exported = better_of_average(model, meta, best, data, out, config, stats)
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(out.path) if out.is_local else Path(scratch) / "out"
        save_exported_model(model, data, local / "model", Path(scratch))
        (local / "model" / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        write_metrics(progress["history"], local / "metrics.csv")
        plot_training(progress["history"], local / "training.png")
        if not out.is_local:
            for name in EXPORTED:
                (out / name).upload(local / name)
    run_dir = Path(out.path) if out.is_local else out
    return TrainSummary(
        run_dir,
        progress["step"],
        progress["best_bleu"],
        run_dir / "model",
        progress["resumes"],
        progress["target_tokens"],
        progress["elapsed_seconds"],
        exported,
    )


def better_of_average(
    model: Seq2Seq,
    meta: dict,
    best: RunCheckpoint,
    data: Location,
    out: Location,
    config: TrainConfig,
    stats: dict,
) -> tuple[Seq2Seq, dict, str]:
    """The average of the run's last `average_last` checkpoints against the best one
    (`model`, `meta`): the average is validated as training validates, and exported only
    when its BLEU is higher. Returns the model to export, its meta.json (saying which, with
    both BLEUs) and a line for the summary."""
    from pipeline.train.average import average_checkpoints, average_meta
    from pipeline.train.checkpoints import select_checkpoints
    from pipeline.train.worker import ValidationSet, validation_scores

    available = run_checkpoints(out)
    last = select_checkpoints(available, last=min(config.average_last, len(available)))
    averaged = average_checkpoints(last)
    valid = ValidationSet.load(data, config.valid_max_sentences, stats["tgt_lang"])
    bleu, _ = validation_scores(averaged, valid, config.valid_beam_size)
    summary = average_meta(last, f"last {config.average_last}") | {"valid_bleu": bleu}
    wins = bleu > best.valid_bleu
    meta = meta | {
        "exported": "average" if wins else "best checkpoint",
        "average": summary,
        "best_checkpoint": best.describe(),
    }
    what = f"average of the last {len(last)} checkpoints: BLEU {bleu:.2f}"
    if not wins:
        return model, meta, f"best checkpoint: BLEU {best.valid_bleu:.2f}, {what}"
    meta |= {"step": last[-1].step, "valid_bleu": bleu}
    return averaged, meta, f"{what}, best checkpoint: {best.valid_bleu:.2f}"


def save_exported_model(model: Seq2Seq, data: Location, model_dir: Path, scratch: Path) -> None:
    """`model` as a model dir, with the dataset's tokenizers beside it."""
    from models.model_dir import save_model

    tokenizers = {name: _local_file(data / name, scratch / "spm") for name in (SRC_SPM, TGT_SPM)}
    save_model(model, model_dir, tokenizers)


def _location_of(checkpoint: ray.train.Checkpoint) -> Location:
    """A Ray checkpoint's directory as a Location (its filesystem, as Ray opened it)."""
    return Location(checkpoint.filesystem, checkpoint.path)


def _local_file(file: Location, scratch: Path) -> Path:
    """`file` itself when local, else a copy downloaded into `scratch`."""
    return Path(file.path) if file.is_local else file.download(scratch / file.name)


def write_metrics(history: list[dict], path: Path) -> None:
    columns = [
        "step",
        "epoch",
        "elapsed_seconds",
        "target_tokens",
        "train_loss",
        "valid_loss",
        "valid_bleu",
        "lr",
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def plot_training(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in history]
    figure, (losses, bleu, lr) = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label in (("train_loss", "train (smoothed, mean)"), ("valid_loss", "valid")):
        points = [
            (s, row[key]) for s, row in zip(steps, history, strict=True) if row.get(key) is not None
        ]
        if points:
            losses.plot(*zip(*points, strict=True), marker=".", label=label)
    losses.set(title="loss per target token", xlabel="step")
    losses.legend()
    bleu.plot(steps, [row["valid_bleu"] for row in history], marker=".", color="C2")
    bleu.set(title="validation BLEU", xlabel="step")
    lr.plot(steps, [row["lr"] for row in history], marker=".", color="C3")
    lr.set(title="learning rate", xlabel="step", yscale="log")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
