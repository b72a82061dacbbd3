"""Checkpoint averaging: the mean of the tensors (counters copied), N copies of one model give
that model, and `nmt average` end to end on a run dir laid out as Ray Train leaves it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_ensemble import GERMAN, perturbed

from models.averaging import average_state_dicts
from models.model_dir import load_model
from models.seq2seq import Seq2Seq
from pipeline.cli import main
from pipeline.train.checkpoints import RAY_RUN_NAME, run_checkpoints
from pipeline.translate.translator import Translator


def test_averaging_is_the_mean_of_the_tensors_and_copies_counters_from_the_last():
    generator = torch.Generator().manual_seed(0)
    states = [
        {
            "weight": torch.randn(4, 3, generator=generator),
            "half": torch.randn(5, generator=generator).half(),
            "steps": torch.tensor(10 * (i + 1)),
            "mask": torch.tensor([i % 2 == 0, True]),
        }
        for i in range(3)
    ]
    averaged = average_state_dicts(iter(states))  # one state at a time is enough
    torch.testing.assert_close(averaged["weight"], sum(s["weight"] for s in states) / 3)
    expected_half = (sum(s["half"].double() for s in states) / 3).half()
    assert averaged["half"].dtype == torch.float16 and torch.equal(averaged["half"], expected_half)
    assert averaged["steps"] == 30 and averaged["mask"].tolist() == [True, True]
    assert states[0]["weight"] is not averaged["weight"]
    with pytest.raises(ValueError, match="not of the same network"):
        average_state_dicts([states[0], {"weight": states[0]["weight"]}])
    with pytest.raises(ValueError, match="no state"):
        average_state_dicts([])


def test_averaging_copies_of_one_model_gives_that_model(tiny_model_dir):
    model = load_model(tiny_model_dir)
    state = model.state_dict()
    for copies in (1, 3, 7):
        averaged = average_state_dicts([state] * copies)
        assert all(torch.equal(averaged[name], state[name]) for name in state)


def write_run(run: Path, model_dir: Path, models: list[Seq2Seq], bleus: list[float]) -> Path:
    """A run dir as a finished `nmt train` leaves it: model/ and one Ray Train checkpoint per
    validation (every 10 steps), with the worker's state, progress and model config."""
    shutil.copytree(model_dir, run / "model")
    history = []
    for number, (model, bleu) in enumerate(zip(models, bleus, strict=True), start=1):
        history.append({"step": 10 * number, "valid_bleu": bleu})
        checkpoint = run / RAY_RUN_NAME / f"checkpoint_2026-01-01_00-00-{number:02d}.000000"
        checkpoint.mkdir(parents=True)
        torch.save({"model": model.state_dict(), "optimizer": {}}, checkpoint / "state.pt")
        progress = {"step": 10 * number, "epoch": 0, "history": list(history)}
        (checkpoint / "progress.json").write_text(json.dumps(progress))
        model.config.save(checkpoint / "config.json")
    return run


def nmt(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_nmt_average_writes_a_model_dir_of_the_chosen_checkpoints(tiny_model_dir, tmp_path, capsys):
    tiny = load_model(tiny_model_dir)
    models = [perturbed(tiny, seed, scale=0.05) for seed in range(4)]
    run = write_run(tmp_path / "run", tiny_model_dir, models, [3.0, 5.0, 4.0, 2.0])
    assert [c.step for c in run_checkpoints(run)] == [10, 20, 30, 40]

    code, out, _ = nmt(
        capsys, "average", "--run", str(run), "--last", "2", "--out", str(tmp_path / "last2")
    )
    assert code == 0 and "steps 30, 40" in out
    averaged = load_model(tmp_path / "last2").state_dict()
    for name, tensor in averaged.items():
        expected = (models[2].state_dict()[name] + models[3].state_dict()[name]) / 2
        torch.testing.assert_close(tensor, expected)
    meta = json.loads((tmp_path / "last2" / "meta.json").read_text())
    assert meta["average"]["selection"] == "last 2" and meta["step"] == 40
    assert [c["step"] for c in meta["average"]["checkpoints"]] == [30, 40]
    assert (meta["src_lang"], meta["tgt_lang"]) == ("de", "en")
    translations = Translator(tmp_path / "last2").translate(GERMAN[:3])
    assert any(t.text for t in translations), "the average is a model dir every command takes"

    code, out, _ = nmt(
        capsys, "average", "--run", str(run), "--best", "2", "--out", str(tmp_path / "best2")
    )
    assert code == 0 and "steps 20, 30" in out  # BLEU 5.0 and 4.0
    meta = json.loads((tmp_path / "best2" / "meta.json").read_text())
    assert [c["valid_bleu"] for c in meta["average"]["checkpoints"]] == [5.0, 4.0]

    # Copies of one checkpoint average to it: the same translations as the model itself.
    same = write_run(tmp_path / "same", tiny_model_dir, [tiny] * 3, [1.0, 1.0, 1.0])
    code, _, _ = nmt(
        capsys, "average", "--run", str(same), "--last", "3", "--out", str(tmp_path / "same3")
    )
    expected = [t.text for t in Translator(tiny_model_dir).translate(GERMAN)]
    assert (
        code == 0 and [t.text for t in Translator(tmp_path / "same3").translate(GERMAN)] == expected
    )


def test_nmt_average_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    tiny = load_model(tiny_model_dir)
    run = write_run(tmp_path / "run", tiny_model_dir, [tiny, tiny], [1.0, 2.0])
    out = str(tmp_path / "out")

    def error(*argv: str) -> str:
        code, stdout, stderr = nmt(capsys, "average", *argv)
        assert code == 2 and stdout == "" and stderr.count("\n") == 1
        return stderr

    assert "the run has 2 such checkpoints (step 10" in error(
        "--run", str(run), "--last", "3", "--out", out
    )
    assert "not a training run dir" in error("--run", str(tmp_path), "--best", "1", "--out", out)
    (tmp_path / "exists").mkdir()
    assert "exists" in error("--run", str(run), "--last", "1", "--out", str(tmp_path / "exists"))
    shutil.rmtree(run / "model")
    assert "pass --data" in error("--run", str(run), "--last", "1", "--out", out)
    assert not Path(out).exists(), "no output after a failure"
