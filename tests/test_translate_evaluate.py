"""`nmt translate` and `nmt evaluate` end to end on the tiny trained de->en model."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch
from conftest import require_shared_data
from PIL import Image

from models.config import ModelConfig
from models.model_dir import save_model
from models.seq2seq import Seq2Seq
from pipeline.cli import main
from pipeline.corpus.synthetic import parallel_corpus
from pipeline.translate.evaluate import length_buckets
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator

PAIRS = parallel_corpus(30, seed=11)
GERMAN = [german for german, _ in PAIRS]
ENGLISH = [english for _, english in PAIRS]


def write_lines(path: Path, lines: list[str]) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
    return path


def run_nmt(capsys, monkeypatch, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """The CLI in-process: exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()  # raises on a truncated or corrupt file
        return image.size


def copy_model(source: Path, target: Path, **meta) -> Path:
    shutil.copytree(source, target)
    old = json.loads((target / "meta.json").read_text())
    (target / "meta.json").write_text(json.dumps({**old, **meta}))
    return target


@pytest.fixture(scope="module")
def baseline_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """An untrained fixed-context (no attention) model with the tiny model's tokenizers."""
    directory = copy_model(
        tiny_model_dir, tmp_path_factory.mktemp("baseline") / "model", name="baseline"
    )
    config = ModelConfig.load(directory / "config.json")
    config.attention = "none"
    torch.manual_seed(1)
    save_model(Seq2Seq(config).eval(), directory)
    return directory


def test_translate_keeps_order_and_blank_lines(tiny_model_dir, tmp_path, capsys, monkeypatch):
    lines = [GERMAN[0], "", GERMAN[1], GERMAN[2], "   ", "", *GERMAN[3:12]]
    source = write_lines(tmp_path / "in.de.gz", lines)
    output = tmp_path / "out.en"
    argv = ["translate", "--model", str(tiny_model_dir), "--input", str(source)]
    code, stdout, _ = run_nmt(capsys, monkeypatch, [*argv, "--output", str(output)])
    assert code == 0 and stdout == ""
    written = output.read_text(encoding="utf-8").split("\n")
    assert written[-1] == "" and len(written) - 1 == len(lines)
    translator = Translator(tiny_model_dir)
    for line, translation in zip(lines, written, strict=False):
        expected = translator.translate([line])[0].text if line.strip() else ""
        assert translation == expected
    assert any(written), "the tiny model translates into words"


def test_translate_through_a_shell_pipe(tiny_model_dir, tmp_path):
    def nmt(*args: str, stdin: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "pipeline.cli", "translate", *args]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)

    piped = nmt("--model", str(tiny_model_dir), "--beam-size", "1", stdin=f"{GERMAN[0]}\n\n")
    assert piped.returncode == 0, piped.stderr
    greedy = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=1))
    expected = greedy.translate([GERMAN[0]])[0].text
    assert piped.stdout == f"{expected}\n\n"

    empty = nmt("--model", str(tiny_model_dir), stdin="")
    assert (empty.returncode, empty.stdout) == (0, "")

    missing = nmt("--model", str(tmp_path / "nope"), stdin="Hallo\n")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr


def test_n_best_writes_tab_separated_candidates(tiny_model_dir, capsys, monkeypatch):
    stdin = f"{GERMAN[3]}\n\n{GERMAN[4]}\n"
    model = ["--model", str(tiny_model_dir), "--beam-size", "4"]
    _, best, _ = run_nmt(capsys, monkeypatch, ["translate", *model], stdin)
    code, out, _ = run_nmt(capsys, monkeypatch, ["translate", *model, "--n-best", "3"], stdin)
    assert code == 0
    lines = out.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == ""
    for line, one_best in zip(lines[::2], best.split("\n")[::2], strict=True):
        fields = line.split("\t")
        assert len(fields) == 6
        texts, scores = fields[::2], [float(score) for score in fields[1::2]]
        assert texts[0] == one_best
        assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)

    code, _, err = run_nmt(capsys, monkeypatch, ["translate", *model, "--n-best", "5"], stdin)
    assert code == 2 and "--n-best" in err


def test_attention_plot_file_and_directory(
    tiny_model_dir, baseline_model_dir, tmp_path, capsys, monkeypatch
):
    model = ["translate", "--model", str(tiny_model_dir)]
    stdin = f"\n{GERMAN[5]}\n{GERMAN[6]}\n"
    single = tmp_path / "attention.png"
    code, _, _ = run_nmt(capsys, monkeypatch, [*model, "--attention-plot", str(single)], stdin)
    assert code == 0
    width, height = assert_png(single)
    assert width > 100 and height > 100

    directory = tmp_path / "heatmaps"
    code, _, _ = run_nmt(capsys, monkeypatch, [*model, "--attention-plot", str(directory)], stdin)
    assert code == 0
    assert sorted(p.name for p in directory.iterdir()) == ["line-000002.png", "line-000003.png"]
    for path in directory.iterdir():
        assert_png(path)

    baseline = ["translate", "--model", str(baseline_model_dir), "--attention-plot", str(single)]
    code, _, err = run_nmt(capsys, monkeypatch, baseline, stdin)
    assert code == 2 and "no attention" in err


def test_evaluate_matches_sacrebleu_on_the_same_hypotheses(
    tiny_model_dir, baseline_model_dir, tmp_path, capsys, monkeypatch
):
    src = write_lines(tmp_path / "test.de.gz", GERMAN)
    ref = write_lines(tmp_path / "test.en.gz", ENGLISH)
    plot, hypotheses_file = tmp_path / "by_length.png", tmp_path / "hyp.en"
    argv = ["evaluate", "--model", str(tiny_model_dir), "--model", str(baseline_model_dir)]
    argv += ["--src", str(src), "--ref", str(ref), "--beam-size", "3", "--json"]
    argv += ["--by-length", str(plot), "--bucket-width", "3", "--min-bucket", "4"]
    code, out, _ = run_nmt(capsys, monkeypatch, [*argv, "--hypotheses", str(hypotheses_file)])
    assert code == 0
    report = json.loads(out)
    assert report["sentences"] == len(GERMAN)

    for number, system in enumerate(report["systems"], start=1):
        hypotheses = Path(f"{hypotheses_file}.{number}").read_text(encoding="utf-8").splitlines()
        assert len(hypotheses) == len(ENGLISH)
        bleu = sacrebleu.BLEU()
        assert system["bleu"]["score"] == pytest.approx(
            bleu.corpus_score(hypotheses, [ENGLISH]).score
        )
        assert system["bleu"]["signature"] == str(bleu.get_signature())
        chrf = sacrebleu.corpus_chrf(hypotheses, [ENGLISH]).score
        assert system["chrf"]["score"] == pytest.approx(chrf)
        assert system["beam_size"] == 3 and system["sentences_per_second"] > 0
        assert system["beam_prune"] == DecodeSettings().beam_prune and system["precision"] == "fp32"
    tiny, baseline = report["systems"]
    assert tiny["bleu"]["score"] > baseline["bleu"]["score"], "trained beats untrained"

    table = report["by_length"]
    assert_png(plot)
    assert sum(table["sentences"]) == len(GERMAN) and table["unit"] == "words"
    tiny_hypotheses = Path(f"{hypotheses_file}.1").read_text(encoding="utf-8").splitlines()
    for label, bleu in zip(table["buckets"], table["bleu"][tiny["name"]], strict=True):
        low, _, high = label.partition("-")
        chosen = [i for i, s in enumerate(GERMAN) if int(low) <= len(s.split()) <= int(high or low)]
        direct = sacrebleu.corpus_bleu(
            [tiny_hypotheses[i] for i in chosen], [[ENGLISH[i] for i in chosen]]
        )
        assert bleu == pytest.approx(direct.score)


def test_evaluate_human_report_has_signatures_and_a_markdown_table(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    src = write_lines(tmp_path / "test.de", GERMAN[:8])
    ref = write_lines(tmp_path / "test.en", ENGLISH[:8])
    argv = ["evaluate", "--model", str(tiny_model_dir), "--src", str(src), "--ref", str(ref)]
    argv += ["--beam-size", "1", "--by-length", str(tmp_path / "plot.png"), "--precision", "bf16"]
    code, out, _ = run_nmt(capsys, monkeypatch, argv)
    assert code == 0
    assert "beam 1, alpha 0.6, batch 64, cpu, bf16" in out
    assert "BLEU|nrefs:1|case:mixed|eff:no|tok:13a" in out and "chrF2|nrefs:1" in out
    assert "sentences/s" in out
    assert "| source words | sentences | BLEU tiny-de-en |" in out


def test_chinese_targets_use_the_zh_tokenizer(tiny_model_dir, tmp_path, capsys, monkeypatch):
    model = copy_model(tiny_model_dir, tmp_path / "en-zh", src_lang="en", tgt_lang="zh")
    references = ["我爱中国。", "你好。", "他在公园里跑步。"]
    src = write_lines(tmp_path / "test.src", GERMAN[:3])
    ref = write_lines(tmp_path / "test.zh", references)
    hypotheses_file = tmp_path / "hyp.zh"
    argv = ["evaluate", "--model", str(model), "--src", str(src), "--ref", str(ref), "--json"]
    argv += ["--hypotheses", str(hypotheses_file)]
    _, out, _ = run_nmt(capsys, monkeypatch, argv)
    bleu = json.loads(out)["systems"][0]["bleu"]
    hypotheses = hypotheses_file.read_text(encoding="utf-8").splitlines()
    direct = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="zh")
    assert bleu["tok"] == "zh" and bleu["score"] == pytest.approx(direct.score)

    _, out, _ = run_nmt(capsys, monkeypatch, [*argv, "--tokenize", "13a"])
    assert json.loads(out)["systems"][0]["bleu"]["tok"] == "13a"


def test_bad_input_gives_one_line_errors(tiny_model_dir, tmp_path, capsys, monkeypatch):
    src = write_lines(tmp_path / "test.de", GERMAN[:3])
    short_ref = write_lines(tmp_path / "test.en", ENGLISH[:2])
    model = ["--model", str(tiny_model_dir)]
    evaluate = ["evaluate", *model, "--src", str(src)]

    def error_of(argv: list[str]) -> str:
        code, out, err = run_nmt(capsys, monkeypatch, argv)
        assert code == 2 and out == "" and err.count("\n") == 1
        return err

    assert "line-aligned" in error_of([*evaluate, "--ref", str(short_ref)])
    assert "does not exist" in error_of([*evaluate, "--ref", str(tmp_path / "missing.en")])
    assert "does not exist" in error_of(["translate", "--model", str(tmp_path / "nope")])
    old = copy_model(tiny_model_dir, tmp_path / "old")
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "format_version": 0}))
    assert "format version" in error_of(["translate", "--model", str(old)])
    assert "--beam-size" in error_of(["translate", *model, "--beam-size", "0"])
    assert "--beam-prune" in error_of(["translate", *model, "--beam-prune", "-1"])
    with pytest.raises(SystemExit, match="2"):  # argparse's usage error
        run_nmt(capsys, monkeypatch, ["translate", *model, "--precision", "fp16"])
    assert "--precision: invalid choice: 'fp16'" in capsys.readouterr().err


def test_empty_input_gives_empty_output(tiny_model_dir, tmp_path, capsys, monkeypatch):
    code, out, _ = run_nmt(capsys, monkeypatch, ["translate", "--model", str(tiny_model_dir)])
    assert (code, out) == (0, "")
    empty = write_lines(tmp_path / "empty.txt", [])
    argv = ["evaluate", "--model", str(tiny_model_dir), "--src", str(empty), "--ref", str(empty)]
    code, out, _ = run_nmt(capsys, monkeypatch, [*argv, "--json"])
    assert code == 0 and json.loads(out)["systems"] == []


def test_length_buckets_cover_every_sentence_and_merge_the_sparse_tail():
    lengths = [1, 3, 5, 6, 7, 9, 10, 11, 12, 30, 44]
    buckets = length_buckets(lengths, width=5, min_count=3)
    assert [b.label for b in buckets] == ["1-5", "6-10", "11-44"]
    assert sorted(i for b in buckets for i in b.indices) == list(range(len(lengths)))
    assert all(b.low <= lengths[i] <= b.high for b in buckets for i in b.indices)
    assert [b.label for b in length_buckets([0, 2], width=5, min_count=1)] == ["0-2"]


def test_evaluate_reads_the_real_gzipped_corpus(capsys, monkeypatch, tiny_model_dir):
    """Real Multi30K files are read through gzip; mismatched splits are caught before decoding."""
    data = require_shared_data() / "multi30k"
    argv = ["evaluate", "--model", str(tiny_model_dir)]
    argv += ["--src", str(data / "test_2016_flickr.de.gz"), "--ref", str(data / "val.en.gz")]
    code, _, err = run_nmt(capsys, monkeypatch, argv)
    assert code == 2 and "has 1000 lines but" in err and "1014" in err


def test_evaluate_scores_rewritten_sources_beside_the_untouched_ones(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    src = write_lines(tmp_path / "test.de", GERMAN[:12])
    ref = write_lines(tmp_path / "test.en", ENGLISH[:12])
    argv = ["evaluate", "--model", f"{tiny_model_dir}+{tiny_model_dir}", "--src", str(src)]
    argv += ["--ref", str(ref), "--beam-size", "1", "--lowercase-bleu"]
    rewrites = ["--rewrite-source", "none", "strip-final-punct", "--rewrite-source", "both"]
    code, out, _ = run_nmt(capsys, monkeypatch, [*argv, *rewrites, "--json"])
    assert code == 0
    (system,) = json.loads(out)["systems"]  # an A+B spec is one system
    assert system["name"] == "tiny-de-en+tiny-de-en" and "+" in system["model"]
    assert list(system["rewrites"]) == ["strip-final-punct", "both"]
    translator = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=1))
    rewritten = {
        "strip-final-punct": [german.rstrip(".") for german in GERMAN[:12]],
        "both": [german.rstrip(".").lower() for german in GERMAN[:12]],
    }
    for name, sources in rewritten.items():
        hypotheses = [t.text for t in translator.translate(sources)]
        direct = sacrebleu.BLEU(lowercase=True).corpus_score(hypotheses, [ENGLISH[:12]])
        assert system["rewrites"][name]["bleu"]["score"] == pytest.approx(direct.score)
        assert system["rewrites"][name]["bleu"]["case"] == "lc"
    untouched = [t.text for t in translator.translate(GERMAN[:12])]
    assert system["bleu"]["score"] == pytest.approx(
        sacrebleu.BLEU(lowercase=True).corpus_score(untouched, [ENGLISH[:12]]).score
    )

    code, out, _ = run_nmt(capsys, monkeypatch, [*argv, *rewrites])
    assert code == 0 and "BLEU|nrefs:1|case:lc|" in out
    assert "| system | untouched | strip-final-punct | both |" in out
    with pytest.raises(SystemExit, match="2"):
        run_nmt(capsys, monkeypatch, [*argv, "--rewrite-source", "uppercase"])
