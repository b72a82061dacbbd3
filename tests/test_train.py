"""Ray Train: a real TorchTrainer run on 2 CPU workers, resume, an injected worker failure."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import sacrebleu
import torch
from prepared_data import write_prepared_dataset

from models.model_dir import load_model
from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.storage import Location
from pipeline.train.augment import NoiseSettings, SubwordSampling
from pipeline.train.checkpoints import run_checkpoints
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import (
    FAULT_ENV,
    build_model_config,
    check_prepared_data,
    train_model,
    worker_job,
)
from pipeline.train.worker import FaultInjection, ValidationSet, validation_scores
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator

TINY = TrainConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_prepared_dataset(tmp_path_factory.mktemp("data") / "de-en")


def metric_rows(out):
    with (out / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def validation_bleu_of(model_dir: Path, data_dir: Path, config: TrainConfig) -> float:
    """BLEU of the Translator on the sentences training validates on, decoded as validation
    decodes them (the same search, sentences sorted by length in batches of 64)."""
    valid = pq.read_table(data_dir / "valid").sort_by("index").slice(0, config.valid_max_sentences)
    sources, references = valid["src_text"].to_pylist(), valid["tgt_text"].to_pylist()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two workers decoded
    try:
        translator = Translator(
            model_dir, device="cpu", settings=DecodeSettings(beam_size=config.valid_beam_size)
        )
        hypotheses = [t.text for t in translator.translate(sources)]
    finally:
        torch.set_num_threads(threads)
    return round(sacrebleu.corpus_bleu(hypotheses, [references], tokenize="13a").score, 2)


def test_two_workers_train_a_model_that_translates(data_dir, tmp_path):
    out = tmp_path / "run"
    summary = train_model(data_dir, out, TINY.override(workers=2, max_steps=150, valid_every=50))
    assert summary.steps == 150
    rows = metric_rows(out)
    assert [int(r["step"]) for r in rows] == [50, 100, 150]
    assert float(rows[-1]["valid_loss"]) < float(rows[0]["valid_loss"])
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary.best_bleu == max(float(r["valid_bleu"]) for r in rows)
    # The exported model is the best checkpoint: translating the validation sentences with it
    # gives the BLEU that validation recorded for that step.
    meta = json.loads((out / "model" / "meta.json").read_text())
    best = max(rows, key=lambda r: (float(r["valid_bleu"]), int(r["step"])))
    assert (meta["step"], meta["valid_bleu"]) == (int(best["step"]), summary.best_bleu)
    assert validation_bleu_of(out, data_dir, TINY) == summary.best_bleu


def test_rerunning_the_same_command_resumes(data_dir, tmp_path):
    out = tmp_path / "run"
    first = train_model(data_dir, out, TINY.override(max_steps=40, valid_every=20))
    assert first.steps == 40
    second = train_model(data_dir, out, TINY.override(max_steps=80, valid_every=20))
    assert second.steps == 80 and second.resumes == 1
    assert [int(r["step"]) for r in metric_rows(out)] == [20, 40, 60, 80]
    assert (out / "model" / "weights.pt").is_file()


def test_average_last_keeps_its_checkpoints_and_exports_the_better_model(data_dir, tmp_path):
    """With `average_last` Ray keeps every checkpoint (here more than `checkpoints_to_keep`),
    the export is the better by validation BLEU of the best checkpoint and the average of
    the last two, and `nmt average` gives that same average. The run also trains on noised
    and re-sampled pairs, so the worker's rewriting runs too."""
    out = tmp_path / "run"
    config = TINY.override(
        max_steps=30,
        valid_every=10,
        checkpoints_to_keep=1,
        average_last=2,
        noise=NoiseSettings(drop_final_punct=0.2, lowercase_source=0.2, space_noise=0.1),
        subword_sampling=SubwordSampling(alpha=0.2),
    )
    summary = train_model(data_dir, out, config)
    assert summary.steps == 30
    assert [c.step for c in run_checkpoints(out)] == [10, 20, 30]
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert [c["step"] for c in meta["average"]["checkpoints"]] == [20, 30]
    assert meta["best_checkpoint"]["valid_bleu"] == summary.best_bleu
    average = tmp_path / "average"
    assert main(["average", "--run", str(out), "--last", "2", "--out", str(average)]) == 0
    # validated here as the driver validated it at the end of training: in this process
    valid = ValidationSet.load(data_dir, config.valid_max_sentences, "en")
    bleu, _ = validation_scores(load_model(average), valid, config.valid_beam_size)
    assert meta["average"]["valid_bleu"] == bleu
    wins = bleu > summary.best_bleu
    assert meta["exported"] == ("average" if wins else "best checkpoint")
    assert meta["valid_bleu"] == max(bleu, summary.best_bleu)
    if wins:
        reference = load_model(average)
    else:
        step = meta["best_checkpoint"]["step"]
        reference = next(c for c in run_checkpoints(out) if c.step == step).model()
    exported = load_model(out / "model").state_dict()
    assert all(torch.equal(exported[k], v) for k, v in reference.state_dict().items())


def test_a_worker_failure_restarts_from_the_last_checkpoint(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv(FAULT_ENV, "30")
    summary = train_model(data_dir, out, TINY.override(workers=2, max_steps=50, valid_every=20))
    assert (out / "injected_fault_done").read_text() == "30"  # it did fail, at step 30
    assert summary.steps == 50 and summary.resumes == 1
    # Restarted from the step-20 checkpoint, so steps 21..30 ran twice but were counted once.
    assert [int(r["step"]) for r in metric_rows(out)] == [20, 40, 50]


def test_the_fault_variable_reaches_the_workers_only_when_set(data_dir, tmp_path, monkeypatch):
    data, out = Location.of(data_dir), Location.of(tmp_path / "run")
    model_config = build_model_config(data, TINY)

    def job():
        return worker_job(data, out, TINY, model_config, check_prepared_data(data), 1.0)

    monkeypatch.delenv(FAULT_ENV, raising=False)
    plain = job()
    assert plain.inject_failure is None  # an ordinary run never fails on purpose
    assert plain.config is TINY and plain.model_config is model_config
    assert len(plain.valid.src_ids) == TINY.valid_max_sentences
    monkeypatch.setenv(FAULT_ENV, "30")
    assert job().inject_failure == FaultInjection(step=30, marker_dir=out.uri)


def test_an_epoch_limit_stops_at_the_end_of_the_data_and_a_rerun_adds_nothing(data_dir, tmp_path):
    out = tmp_path / "run"
    config = TINY.override(max_epochs=1, valid_every=10**6)
    first = train_model(data_dir, out, config)
    (row,) = metric_rows(out)  # no validation on the way: only the final checkpoint's
    assert (int(row["step"]), int(row["epoch"])) == (first.steps, 1)
    # The run is finished: the re-run resumes from its last checkpoint, trains no step and
    # reports nothing, so the summary and the metrics are the first run's.
    second = train_model(data_dir, out, config)
    assert (second.steps, second.best_bleu) == (first.steps, first.best_bleu)
    assert metric_rows(out) == [row]


def test_bad_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        train_model(tmp_path / "missing", tmp_path / "out", TINY)
    (tmp_path / "not-prepared").mkdir()
    with pytest.raises(UserError, match="not a prepared dataset"):
        train_model(tmp_path / "not-prepared", tmp_path / "out", TINY)


def test_sampled_softmax_trains_and_the_model_decodes_with_its_full_layer(data_dir, tmp_path):
    vocab_size = build_model_config(Location.of(data_dir), TINY).tgt_vocab_size
    too_large = TINY.override(output="sampled", sampled_softmax_size=vocab_size + 1)
    with pytest.raises(UserError, match="larger than the target vocabulary"):
        train_model(data_dir, tmp_path / "refused", too_large)
    config = TINY.override(
        output="sampled", sampled_softmax_size=vocab_size // 2, max_steps=40, valid_every=20
    )
    summary = train_model(data_dir, tmp_path / "run", config)
    losses = [float(row["train_loss"]) for row in metric_rows(tmp_path / "run")]
    assert summary.steps == 40 and losses[1] < losses[0]
    model = load_model(tmp_path / "run" / "model")
    assert model.decoder.output.out_features == vocab_size
    (translation,) = Translator(tmp_path / "run").translate(["ein hund"])
    assert translation.text.strip()
