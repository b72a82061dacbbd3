"""What each Ray Train worker runs: the foundation's `train_step` over its data shard, with
validation, checkpoints and resume around it.

The driver hands every worker one `WorkerJob`: the `TrainConfig` whole, the model config,
the validation set and the thread count (`pipeline.train.trainer.worker_job`).

`train_func` is deliberately thin; the pieces it calls are plain functions and small classes
so they can be read (and tested) one at a time.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import ray.train
import ray.train.torch
import sacrebleu
import torch
import torch.distributed as dist
from ray.data import DataIterator

from models.config import ModelConfig
from models.sampled_softmax import sample_vocabulary
from models.search import beam_search, greedy_search
from models.seq2seq import Seq2Seq
from models.training import Batch, collate, token_batches, train_step
from pipeline.corpus.tokenizer import TGT_SPM, Tokenizer
from pipeline.storage import Location
from pipeline.train.augment import Augmentation
from pipeline.train.checkpoints import PROGRESS_FILE, STATE_FILE
from pipeline.train.config import TrainConfig

FAULT_MARKER = "injected_fault_done"
JOB_KEY = "job"  # Ray Train's train_loop_config is a dict: {JOB_KEY: WorkerJob}
VALID_BATCH = 64  # validation sentences decoded together


@dataclass(frozen=True)
class ValidationSet:
    """The valid split as plain lists: small, so it travels to every worker in the job."""

    src_ids: list[list[int]]
    tgt_ids: list[list[int]]
    tgt_text: list[str]  # the references
    tgt_spm: bytes  # the target sentencepiece model, to turn hypotheses back into text
    bleu_tokenize: str  # sacrebleu's tokenizer: "zh" for a Chinese target, else "13a"

    @classmethod
    def load(
        cls, data_dir: str | Path | Location, max_sentences: int | None, tgt_lang: str
    ) -> ValidationSet:
        """The first `max_sentences` (all when None) of a prepared dataset's valid split, in
        input order. `data_dir` may be remote: the split is read through its filesystem."""
        data = Location.of(data_dir)
        valid = data / "valid"
        wanted = ["index", "src_ids", "tgt_ids", "tgt_text"]
        table = pq.read_table(valid.path, filesystem=valid.filesystem, columns=wanted)
        table = table.sort_by("index")
        if max_sentences:
            table = table.slice(0, max_sentences)
        columns = table.to_pydict()
        return cls(
            src_ids=columns["src_ids"],
            tgt_ids=columns["tgt_ids"],
            tgt_text=columns["tgt_text"],
            tgt_spm=(data / TGT_SPM).read_bytes(),
            bleu_tokenize="zh" if tgt_lang == "zh" else "13a",
        )


@dataclass(frozen=True)
class FaultInjection:
    """Test-only (NMT_INJECT_FAILURE_AT_STEP on the driver): the last worker raises once at
    `step`, to exercise FailureConfig; a marker file in the run dir makes it happen once."""

    step: int
    marker_dir: str  # the run dir's URI: maybe remote


@dataclass(frozen=True)
class WorkerJob:
    """Everything the driver hands each Ray Train worker."""

    config: TrainConfig
    model_config: ModelConfig  # the model to build: sizes from the config, vocabularies from data
    valid: ValidationSet
    threads: int  # torch threads of each worker
    inject_failure: FaultInjection | None = None
    augment: Augmentation | None = None  # training pairs rewritten on the fly; None: as read

    def loop_config(self) -> dict:
        """As `TorchTrainer(train_loop_config=...)` takes it."""
        return {JOB_KEY: self}


@dataclass
class Progress:
    """Everything about where training stands, saved in each checkpoint as JSON."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # to skip roughly what this epoch already trained on, on resume
    elapsed_seconds: float = 0.0  # training time across restarts (for --time-budget)
    target_tokens: int = 0  # trained on, all workers together, up to the last checkpoint
    resumes: int = 0  # restarts from a checkpoint: re-runs of the command and worker failures
    best_bleu: float = -1.0
    validations_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)  # one row per validation


def train_func(loop_config: dict) -> None:
    """The Ray Train worker entry point (`TorchTrainer(train_loop_per_worker=train_func)`):
    `loop_config` is `WorkerJob.loop_config()`."""
    job: WorkerJob = loop_config[JOB_KEY]
    torch.manual_seed(job.config.seed)
    torch.set_num_threads(max(1, job.threads))
    run = WorkerRun(job)
    run.restore(ray.train.get_checkpoint())
    run.train(ray.train.get_dataset_shard("train"))


class WorkerRun:
    def __init__(self, job: WorkerJob) -> None:
        self.job = job
        self.config = config = job.config
        self.model_config = job.model_config
        self.rank = ray.train.get_context().get_world_rank()
        self.world_size = ray.train.get_context().get_world_size()
        self.device = ray.train.torch.get_device()
        self.bare_model = Seq2Seq(self.model_config).to(self.device)
        self.model = ray.train.torch.prepare_model(self.bare_model)
        # fused: one kernel per step for all parameters instead of a dozen ops per tensor.
        self.optimizer = torch.optim.Adam(self.bare_model.parameters(), lr=config.lr, fused=True)
        self.schedule = LearningRate(self.optimizer, config)
        self.progress = Progress()
        self.autocast = _autocast_dtype(config.precision, self.device)
        self.vocabulary_generator = torch.Generator().manual_seed(config.seed + self.rank)
        self.started = time.perf_counter()
        self.tokens_since_report = 0
        # Token-weighted mean training loss since the last validation (one batch is noisy).
        self.loss_sum, self.loss_tokens = 0.0, 0

    # -- checkpoints ------------------------------------------------------------------------
    def restore(self, checkpoint: ray.train.Checkpoint | None) -> None:
        if checkpoint is None:
            return
        with checkpoint.as_directory() as directory:
            state = torch.load(
                Path(directory) / STATE_FILE, map_location=self.device, weights_only=True
            )
            progress = json.loads((Path(directory) / PROGRESS_FILE).read_text())
        self.bare_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.progress = Progress(**progress)
        self.progress.resumes += 1
        self.log(f"resumed from step {self.progress.step} (epoch {self.progress.epoch})")

    def report(self, metrics: dict) -> None:
        """Every worker calls this (it is a barrier); rank 0 attaches the checkpoint."""
        if self.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            state = {
                "model": self.bare_model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
            }
            torch.save(state, Path(directory) / STATE_FILE)
            (Path(directory) / PROGRESS_FILE).write_text(json.dumps(asdict(self.progress)))
            self.model_config.save(Path(directory) / "config.json")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    # -- the loop -----------------------------------------------------------------------------
    def train(self, shard: DataIterator) -> None:
        """Train until `finished()`, validating every `valid_every` steps; the run ends with a
        validated checkpoint of its last step."""
        self.started = time.perf_counter()  # the clock runs from the first batch asked for
        meter = ThroughputMeter()
        last_validated = self.progress.step if self.progress.history else -1
        for batch in self.batches(shard):
            self.train_on(batch, meter)
            if self.progress.step % self.config.valid_every == 0:
                self.validate_and_report()
                last_validated = self.progress.step
        if last_validated != self.progress.step:
            self.validate_and_report()  # the final checkpoint

    def batches(self, shard: DataIterator) -> Iterator[Batch]:
        """The batches to train on, epoch after epoch (an epoch ends with the data), until
        `finished()`: asked before the first batch, after each step and after each epoch."""
        while not self.finished():
            skip = self.progress.batches_in_epoch  # what a resumed epoch already trained on
            for batch in self.synchronized(self.epoch_batches(shard), skip):
                yield batch
                if self.finished():
                    return
            self.progress.epoch += 1
            self.progress.batches_in_epoch = 0

    def train_on(self, batch: Batch, meter: ThroughputMeter) -> None:
        """One optimiser step, and the counters, logs and test-only fault that follow it."""
        config, progress = self.config, self.progress
        result = train_step(
            self.model,
            batch,
            self.optimizer,
            config.label_smoothing,
            config.clip_norm,
            self.autocast,
            self.sampled_vocabulary(batch),
        )
        progress.step += 1
        progress.batches_in_epoch += 1
        self.schedule.after_step(progress.step)
        meter.add(result.num_tokens, batch.padding_fraction)
        self.tokens_since_report += result.num_tokens
        self.loss_sum += result.loss * result.num_tokens
        self.loss_tokens += result.num_tokens
        self.maybe_inject_fault()
        if progress.step % config.log_every == 0:
            self.log_progress(result.loss, meter)

    def sampled_vocabulary(self, batch: Batch) -> torch.Tensor | None:
        return sampled_vocabulary(batch, self.model_config, self.config, self.vocabulary_generator)

    def epoch_batches(self, shard: DataIterator) -> Iterator[Batch]:
        """This epoch's token batches of this worker's shard (rewritten by `job.augment`
        when set, then pairs over `max_len` skipped), bucketed by length with a seed of the
        epoch and rank."""
        model, max_len = self.model_config, self.config.max_len
        seed = self.config.seed * 1000 + self.progress.epoch * 10 + self.rank
        chunks = (
            (rows["src_ids"], rows["tgt_ids"])
            for rows in shard.iter_batches(batch_size=2048, batch_format="numpy")
        )
        if self.job.augment is not None:
            chunks = self.job.augment.apply(chunks, seed)
        pairs = (
            (src, tgt)
            for sources, targets in chunks
            for src, tgt in zip(sources, targets, strict=True)
            if 0 < len(src) <= max_len and 0 < len(tgt) <= max_len
        )
        for chunk in token_batches(
            pairs, self.config.max_tokens, self.config.bucket_window, seed=seed
        ):
            yield collate(chunk, model.pad_id, model.bos_id, model.eos_id).to(self.device)

    def synchronized(self, batches: Iterator[Batch], skip: int) -> Iterator[Batch]:
        """Yield batches while *every* worker still has one, skipping the first `skip`.

        Shards hold different numbers of token batches; a worker that ran out while the
        others step would leave DDP's all-reduce hanging, so all stop at the shortest.
        """
        for index, batch in enumerate(_with_end_marker(batches)):
            if not self.all_workers_agree(batch is not None):
                return
            if index >= skip:
                yield batch

    def all_workers_agree(self, flag: bool) -> bool:
        if self.world_size == 1:
            return flag
        value = torch.tensor([1 if flag else 0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def sum_over_workers(self, value: int) -> int:
        if self.world_size == 1:
            return value
        total = torch.tensor([value], dtype=torch.long, device=self.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return int(total.item())

    def finished(self) -> bool:
        """Whether the run is over, the same answer on every worker: the step or epoch limit,
        any worker's clock past the time budget, or rank 0's early stop."""
        return not self.all_workers_agree(not self.limit_reached())

    def limit_reached(self) -> bool:
        """This worker's view of `finished()` (only rank 0 counts validations)."""
        config, progress = self.config, self.progress
        budget, patience = config.time_budget_minutes, config.early_stopping_patience
        return (
            progress.step >= (config.max_steps or math.inf)
            or progress.epoch >= (config.max_epochs or math.inf)
            or (budget is not None and self.elapsed() >= budget * 60)
            or (patience is not None and progress.validations_without_improvement >= patience)
        )

    def elapsed(self) -> float:
        """Seconds of training, across restarts."""
        return self.progress.elapsed_seconds + time.perf_counter() - self.started

    # -- validation ---------------------------------------------------------------------------
    def validate_and_report(self) -> None:
        train_loss = self.loss_sum / self.loss_tokens if self.loss_tokens else None
        self.loss_sum, self.loss_tokens = 0.0, 0
        self.progress.elapsed_seconds += time.perf_counter() - self.started
        self.started = time.perf_counter()
        self.progress.target_tokens += self.sum_over_workers(self.tokens_since_report)
        self.tokens_since_report = 0
        metrics = {
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "target_tokens": self.progress.target_tokens,
        }
        if self.rank == 0:
            bleu, valid_loss = self.validate()
            improved = bleu > self.progress.best_bleu
            self.progress.best_bleu = max(bleu, self.progress.best_bleu)
            self.progress.validations_without_improvement = (
                0 if improved else self.progress.validations_without_improvement + 1
            )
            self.schedule.after_validation(bleu)
            metrics |= {
                "valid_bleu": bleu,
                "valid_loss": valid_loss,
                "train_loss": train_loss,
                "lr": self.schedule.current(),
                "elapsed_seconds": round(self.progress.elapsed_seconds, 1),
            }
            self.progress.history.append(metrics)
            self.log(
                f"validation at step {self.progress.step}: BLEU {bleu:.2f}, "
                f"loss {valid_loss:.3f}{' (best)' if improved else ''}"
            )
        # Rank 0's early-stopping counter decides for everyone (see finished).
        self.report(metrics)

    def validate(self) -> tuple[float, float]:
        return validation_scores(
            self.bare_model, self.job.valid, self.config.valid_beam_size, self.device
        )

    # -- logging and the test-only fault ------------------------------------------------------
    def log(self, message: str) -> None:
        # Not print(): Ray Train patches it to log *and* echo, so every line came out twice.
        if self.rank == 0:
            sys.stdout.write(f"[train] {message}\n")
            sys.stdout.flush()

    def log_progress(self, loss: float, meter: ThroughputMeter) -> None:
        step = self.progress.step
        eta = _eta(step, self.elapsed(), self.config.max_steps, self.config.time_budget_minutes)
        self.log(
            f"step {step}  loss {loss:.3f}  lr {self.schedule.current():.2e}  "
            f"{meter.steps_per_second():.2f} steps/s  "
            f"{meter.tokens_per_second() * self.world_size:.0f} tgt tokens/s (all workers)  "
            f"padding {meter.padding():.1%}  ETA {eta}"
        )
        meter.reset()

    def maybe_inject_fault(self) -> None:
        """Test-only: raise once at the step of `job.inject_failure` (see FaultInjection)."""
        fault = self.job.inject_failure
        if not fault or self.progress.step != fault.step or self.rank != self.world_size - 1:
            return
        marker = Location.of(fault.marker_dir) / FAULT_MARKER
        if not marker.exists():
            marker.write_text(str(self.progress.step))
            raise RuntimeError(f"injected failure at step {self.progress.step}")


def sampled_vocabulary(
    batch: Batch, model_config: ModelConfig, config: TrainConfig, generator: torch.Generator
) -> torch.Tensor | None:
    """The batch's V' under `output: sampled`; None for the full softmax."""
    if config.output != "sampled":
        return None
    return sample_vocabulary(
        batch.tgt_out[batch.tgt_out != model_config.pad_id],
        model_config.tgt_vocab_size,
        config.sampled_softmax_size,
        (model_config.unk_id, model_config.eos_id),
        generator,
    )


def validation_scores(
    model: Seq2Seq, valid: ValidationSet, beam_size: int, device: torch.device | str = "cpu"
) -> tuple[float, float]:
    """sacreBLEU (rounded to 2 places) of `model` on the validation set, decoded with beam
    `beam_size` (1: greedy) in length-sorted batches, and its loss per target token."""
    model = model.eval()
    config = model.config
    sources, references = valid.src_ids, valid.tgt_text
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    hypotheses: list[str] = [""] * len(sources)
    loss_sum, tokens = 0.0, 0
    tokenizer = Tokenizer.from_serialized(valid.tgt_spm)
    for start in range(0, len(order), VALID_BATCH):
        chunk = order[start : start + VALID_BATCH]
        batch = collate(
            [(sources[i], valid.tgt_ids[i]) for i in chunk],
            config.pad_id,
            config.bos_id,
            config.eos_id,
        ).to(device)
        with torch.no_grad():
            loss_sum += float(
                model(batch.src, batch.src_len, batch.tgt_in, batch.tgt_out, batch.tgt_len)
            )
        tokens += batch.num_target_tokens
        for i, tokens_out in zip(chunk, _decode(model, batch, beam_size), strict=True):
            hypotheses[i] = tokenizer.decode(tokens_out)
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=valid.bleu_tokenize)
    return round(bleu.score, 2), loss_sum / max(tokens, 1)


def _decode(model: Seq2Seq, batch: Batch, beam_size: int) -> list[list[int]]:
    if beam_size == 1:
        return [h.tokens for h in greedy_search(model, batch.src, batch.src_len)]
    return [n[0].tokens for n in beam_search(model, batch.src, batch.src_len, beam_size)]


class LearningRate:
    """Linear warm-up, then inverse square-root decay, constant, or halving on plateau."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.optimizer, self.config = optimizer, config
        self.peak = config.lr
        self.plateau_scale, self.bad_validations, self.best = 1.0, 0, -math.inf
        self.after_step(0)

    def current(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def after_step(self, step: int) -> None:
        warmup = max(self.config.warmup_steps, 1)
        if step < warmup:
            factor = (step + 1) / warmup
        elif self.config.schedule == "inverse_sqrt":
            factor = math.sqrt(warmup / (step + 1))
        else:
            factor = 1.0
        lr = max(self.peak * factor * self.plateau_scale, self.config.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def after_validation(self, bleu: float) -> None:
        if self.config.schedule != "plateau":
            return
        if bleu > self.best:
            self.best, self.bad_validations = bleu, 0
            return
        self.bad_validations += 1
        if self.bad_validations >= self.config.plateau_patience:
            self.plateau_scale *= self.config.plateau_factor
            self.bad_validations = 0

    def state_dict(self) -> dict:
        return {
            "plateau_scale": self.plateau_scale,
            "bad_validations": self.bad_validations,
            "best": self.best,
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale = state["plateau_scale"]
        self.bad_validations, self.best = state["bad_validations"], state["best"]


class ThroughputMeter:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.start, self.steps, self.tokens, self.padding_sum = time.perf_counter(), 0, 0, 0.0

    def add(self, tokens: int, padding_fraction: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.padding_sum += padding_fraction

    def _seconds(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    def steps_per_second(self) -> float:
        return self.steps / self._seconds()

    def tokens_per_second(self) -> float:
        return self.tokens / self._seconds()

    def padding(self) -> float:
        return self.padding_sum / max(self.steps, 1)


def _with_end_marker(items: Iterator) -> Iterator:
    yield from items
    yield None


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16}[precision]


def _eta(step: int, elapsed: float, max_steps: int | None, budget_minutes: float | None) -> str:
    remaining = []
    if max_steps:
        remaining.append((max_steps - step) * elapsed / max(step, 1))
    if budget_minutes:
        remaining.append(budget_minutes * 60 - elapsed)
    if not remaining:
        return "n/a"
    seconds = max(0, int(min(remaining)))
    return f"{seconds // 60}m{seconds % 60:02d}s"
