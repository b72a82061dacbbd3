"""Ray Train: a real TorchTrainer run on 2 CPU workers, resume, an injected worker failure."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import ray
from prepared_data import write_prepared_dataset

from pipeline.errors import UserError
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import FAULT_ENV, train_model
from pipeline.translate.translator import Translator

TINY = TrainConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_prepared_dataset(tmp_path_factory.mktemp("data") / "de-en")


def metric_rows(out):
    with (out / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_two_workers_train_a_model_that_translates(data_dir, tmp_path):
    out = tmp_path / "run"
    summary = train_model(data_dir, out, TINY.override(workers=2, max_steps=150, valid_every=50))
    assert summary.steps == 150
    rows = metric_rows(out)
    assert [int(r["step"]) for r in rows] == [50, 100, 150]
    assert float(rows[-1]["valid_loss"]) < float(rows[0]["valid_loss"])
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary.best_bleu == max(float(r["valid_bleu"]) for r in rows)
    (translation,) = Translator(out, beam_size=2).translate(["Ein Mann läuft im Park."])
    assert translation.text  # the exported model dir loads and translates


def test_rerunning_the_same_command_resumes(data_dir, tmp_path):
    out = tmp_path / "run"
    first = train_model(data_dir, out, TINY.override(max_steps=40, valid_every=20))
    assert first.steps == 40
    second = train_model(data_dir, out, TINY.override(max_steps=80, valid_every=20))
    assert second.steps == 80 and second.resumes == 1
    assert [int(r["step"]) for r in metric_rows(out)] == [20, 40, 60, 80]
    assert (out / "model" / "weights.pt").is_file()


def test_a_worker_failure_restarts_from_the_last_checkpoint(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv(FAULT_ENV, "30")
    summary = train_model(data_dir, out, TINY.override(workers=2, max_steps=50, valid_every=20))
    assert (out / "injected_fault_done").read_text() == "30"  # it did fail, at step 30
    assert summary.steps == 50 and summary.resumes == 1
    # Restarted from the step-20 checkpoint, so steps 21..30 ran twice but were counted once.
    assert [int(r["step"]) for r in metric_rows(out)] == [20, 40, 50]


def test_bad_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        train_model(tmp_path / "missing", tmp_path / "out", TINY)
    (tmp_path / "not-prepared").mkdir()
    with pytest.raises(UserError, match="not a prepared dataset"):
        train_model(tmp_path / "not-prepared", tmp_path / "out", TINY)
    assert FAULT_ENV not in os.environ
