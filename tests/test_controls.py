"""Decoding controls (issue 22): int8 decoding, scoring given translations, forced
prefixes, quality signals and lexical constraints, on the tiny trained de->en model and
small hand-made models. Nothing here needs Ray."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.corpus.synthetic import parallel_corpus
from pipeline.errors import UserError
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator

SOURCES = [german for german, _ in parallel_corpus(40, seed=5)]


# int8


def test_int8_translations_agree_with_fp32_on_most_sentences(tiny_model_dir):
    from models.quantize import is_quantized

    exact = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=3))
    int8 = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=3, precision="int8"))
    assert is_quantized(int8.model) and not is_quantized(exact.model)
    same = sum(
        a.text == b.text
        for a, b in zip(exact.translate(SOURCES), int8.translate(SOURCES), strict=True)
    )
    assert same >= 0.8 * len(SOURCES)
    with pytest.raises(UserError, match="decodes in int8, not fp32"):
        int8.translate(SOURCES[:1], DecodeSettings())


def test_bulk_job_records_int8_and_refuses_to_resume_with_another_precision(
    tiny_model_dir, tmp_path
):
    from pipeline.bulk.job import BulkOptions, _job_description, bulk_translate
    from pipeline.bulk.store import prepare_output_dir
    from pipeline.translate.catalog import resolve_models

    store = tmp_path / "store"
    store.mkdir()
    pq.write_table(pa.table({"text": SOURCES[:4]}), store / "part.parquet")
    output = tmp_path / "out"
    int8 = BulkOptions("text", decoding=DecodeSettings(precision="int8"), show_progress=False)
    files = [str(store / "part.parquet")]
    job = _job_description(files, resolve_models([str(tiny_model_dir)]), int8)
    assert job["precision"] == "int8"
    prepare_output_dir(output, job, resume=False)  # as a killed int8 job leaves it
    fp32 = BulkOptions("text", resume=True, show_progress=False)
    with pytest.raises(UserError, match="another job's results \\(precision differ\\)"):
        bulk_translate(str(tiny_model_dir), str(store), str(output), fp32)


# scoring


def _batch(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in sequences])
    batch = torch.zeros(len(sequences), max(1, int(lengths.max())), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        batch[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return batch, lengths


def test_scores_equal_minus_the_training_loss_of_each_pair(tiny_model_dir):
    from models.ensemble import Ensemble
    from models.scoring import forced_decode, score_pairs, teacher_forcing_batch

    translator = Translator(tiny_model_dir)
    model, config = translator.model, translator.model.config
    pairs = parallel_corpus(6, seed=9)
    sources = translator.src_tokenizer.encode([german for german, _ in pairs])
    targets = translator.tgt_tokenizer.encode([english for _, english in pairs])
    targets[2] = []  # an empty target: only eos is predicted
    src, src_len = _batch(sources)
    tgt, tgt_len = _batch(targets)
    scores = score_pairs(model, src, src_len, tgt, tgt_len)
    for row in range(len(pairs)):  # each pair alone through the training loss
        one_tgt, one_len = _batch([targets[row]])
        tgt_in, tgt_out, lengths = teacher_forcing_batch(
            one_tgt, one_len, config.bos_id, config.eos_id, config.pad_id
        )
        with torch.no_grad():
            loss = model(
                src[row : row + 1, : src_len[row]], src_len[row : row + 1], tgt_in, tgt_out, lengths
            )
        assert float(scores[row]) == pytest.approx(-float(loss), abs=1e-4)
    # The step decoder fed the targets, and an ensemble of the model, agree.
    token_log_probs, attention = forced_decode(model, src, src_len, tgt, tgt_len)
    assert token_log_probs.sum(1) == pytest.approx(scores, abs=1e-4)
    assert attention.shape == (len(pairs), int(tgt_len.max()) + 1, src.size(1))
    ensemble = Ensemble([model, model])
    assert score_pairs(ensemble, src, src_len, tgt, tgt_len) == pytest.approx(scores, abs=1e-4)
    # The Translator's scores, from text, are the same numbers.
    scored = translator.score(
        [g for g, _ in pairs], [e if i != 2 else "" for i, (_, e) in enumerate(pairs)]
    )
    assert [s.log_prob for s in scored] == pytest.approx(scores.tolist(), abs=1e-4)
    assert scored[2].predictions == 1
    with pytest.raises(UserError, match="source 1 is empty"):
        translator.score(["Ein Hund.", " "], ["A dog.", "x"])
    with pytest.raises(UserError, match="2 sources but 1 targets"):
        translator.score(["Ein Hund.", "Ein Hund."], ["A dog."])


def test_the_best_translation_scores_as_its_search_said(tiny_model_dir):
    """Greedy's score is the sum of its log-probabilities: scoring its output gives it back."""
    translator = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=1))
    translations = translator.translate(SOURCES[:8])
    scored = translator.score(SOURCES[:8], [t.text for t in translations])
    for translation, score in zip(translations, scored, strict=True):
        assert score.log_prob == pytest.approx(translation.score, abs=1e-3)
        assert score.mean_log_prob == pytest.approx(translation.signals.mean_log_prob, abs=1e-3)


# forced prefix


@pytest.mark.parametrize("beam_size", [1, 3])
def test_a_prefix_is_kept_verbatim_and_the_search_goes_on(tiny_model_dir, beam_size):
    translator = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=beam_size))
    plain = translator.translate(SOURCES[:6])
    # A prefix the model would not choose: another sentence's opening words.
    prefixes = [" ".join(plain[(i + 1) % 6].text.split()[:2]) for i in range(6)]
    prefixes[3] = None  # no prefix: the usual translation
    forced = translator.translate(SOURCES[:6], prefixes=prefixes)
    for prefix, result, alone in zip(prefixes, forced, plain, strict=True):
        if prefix is None:
            assert result.text == alone.text
        else:
            assert result.text.startswith(prefix)
            assert len(result.text) > len(prefix)  # it went on after the prefix
    assert sum(r.text != p.text for r, p in zip(forced, plain, strict=True)) >= 3
    with pytest.raises(UserError, match="the target prefix of text 0 has .* pieces, more than"):
        translator.translate(SOURCES[:1], prefixes=["a dog " * 40])


# quality signals


def test_coverage_is_one_for_a_diagonal_and_low_when_a_piece_gets_no_attention():
    from pipeline.translate.quality import attention_coverage, repeats_more_than_source

    diagonal = torch.eye(5).tolist()
    assert attention_coverage(diagonal) == 1.0
    skipping = torch.eye(5)[:, [0, 1, 2, 3, 3]]  # the last source piece gets none
    skipping[:, 4] = 0.0
    skipping[4, 3] = 1.0
    assert attention_coverage(skipping.tolist()) == pytest.approx(0.8)
    assert attention_coverage(torch.full((2, 6), 1 / 6).tolist()) == 0.0  # spread thin
    assert repeats_more_than_source("ein Hund läuft", "a dog and a dog and a dog and a dog")
    assert not repeats_more_than_source(
        "ein Mann und ein Mann und ein Mann", "a man and a man and a man"
    )


def test_every_translation_and_alternative_carries_signals(tiny_model_dir):
    translator = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=4, n_best=3))
    for result in translator.translate(SOURCES[:5]):
        assert result.signals == result.alternative_signals[0]
        assert len(result.alternative_signals) == len(result.alternatives) == 3
        for signals in result.alternative_signals:
            assert signals.mean_log_prob < 0
            assert 0 < signals.coverage <= 1 and signals.length_ratio > 0


# lexical constraints


def _contains(tokens: list[int], phrase: list[int]) -> bool:
    return any(tokens[i : i + len(phrase)] == phrase for i in range(len(tokens) - len(phrase) + 1))


def test_progress_on_overlapping_constraints_follows_the_output():
    from models.constraints import Progress

    # "a b" and "b c" overlap in "a b c"; "x x y" repeats a piece (KMP's fallback).
    progress = Progress(((1, 2), (2, 3), (7, 7, 8)), (0, 0, 0))
    for token in (1, 2, 3):
        progress = progress.after(token)
    assert progress.matched == (2, 2, 0) and not progress.done
    for token in (7, 7, 7, 8):
        progress = progress.after(token)
    assert progress.done and progress.needed == 0


def test_every_constraint_appears_and_mixed_batches_give_each_its_own_result(tiny_model_dir):
    from models.constraints import constrained_beam_search

    translator = Translator(tiny_model_dir)
    model, tokenizer = translator.model, translator.tgt_tokenizer
    pairs = parallel_corpus(8, seed=21)
    sources = translator.src_tokenizer.encode([german for german, _ in pairs])
    words = [english.rstrip(".").split() for _, english in pairs]
    # From other sentences' references: one word, a multi-piece phrase, two overlapping
    # phrases ("w1 w2" and "w2 w3"), and none.
    constraints = []
    for i in range(len(pairs)):
        other = words[(i + 3) % len(pairs)]
        phrases = [
            [other[-1]],
            [" ".join(other[1:3])],
            [" ".join(other[0:2]), " ".join(other[1:3])],
            [],
        ][i % 4]
        constraints.append([tokenizer.encode([p])[0] for p in phrases])
    assert any(len(p) > 1 for c in constraints for p in c)  # multi-piece phrases are tested
    src, src_len = _batch(sources)
    together = constrained_beam_search(model, src, src_len, constraints, beam_size=4)
    for row, (hypotheses, phrases) in enumerate(zip(together, constraints, strict=True)):
        (best,) = hypotheses
        assert all(_contains(best.tokens, phrase) for phrase in phrases), (row, phrases)
        (alone,) = constrained_beam_search(
            model, src[row : row + 1, : src_len[row]], src_len[row : row + 1], [phrases], 4
        )
        assert alone[0].tokens == best.tokens
        assert alone[0].score == pytest.approx(best.score, abs=1e-4)


def test_translator_constraints_greedy_and_beam_and_bad_input(tiny_model_dir):
    for beam_size in (1, 3):
        translator = Translator(tiny_model_dir, settings=DecodeSettings(beam_size=beam_size))
        plain = translator.translate(SOURCES[:6])
        terms = [[plain[(i + 2) % 6].text.split()[-2]] if i % 2 == 0 else [] for i in range(6)]
        forced = translator.translate(SOURCES[:6], constraints=terms)
        for term, result, alone in zip(terms, forced, plain, strict=True):
            if term:
                assert term[0] in result.text.split()
                assert result.signals is not None
            else:
                assert result.text == alone.text  # unconstrained sentences: the usual search
        both = translator.translate(SOURCES[:1], prefixes=["a dog"], constraints=[["water"]])
        assert both[0].text.startswith("a dog") and "water" in both[0].text
    with pytest.raises(UserError, match="text 0 has an empty constraint"):
        translator.translate(SOURCES[:1], constraints=[["dog", " "]])
    with pytest.raises(UserError, match="the constraints of text 1 need .* pieces"):
        translator.translate(SOURCES[:2], constraints=[[], ["a dog sits on the water"] * 8])


# the command line


def _nmt(capsys, monkeypatch, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    import io
    import sys

    from pipeline.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_nmt_score_prints_the_translators_scores(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import json

    pairs = parallel_corpus(5, seed=13)
    (tmp_path / "s.de").write_text("".join(g + "\n" for g, _ in pairs))
    (tmp_path / "t.en").write_text("".join(e + "\n" for _, e in pairs))
    argv = ["score", "--model", str(tiny_model_dir), "--src", str(tmp_path / "s.de")]
    code, out, err = _nmt(capsys, monkeypatch, [*argv, "--tgt", str(tmp_path / "t.en"), "--json"])
    assert code == 0, err
    expected = Translator(tiny_model_dir).score([g for g, _ in pairs], [e for _, e in pairs])
    lines = [json.loads(line) for line in out.splitlines()]
    assert [x["log_prob"] for x in lines] == pytest.approx([s.log_prob for s in expected], abs=1e-3)
    (tmp_path / "short.en").write_text("A dog.\n")
    code, _, err = _nmt(capsys, monkeypatch, [*argv, "--tgt", str(tmp_path / "short.en")])
    assert code == 2 and "has 5 lines but --tgt" in err and len(err.splitlines()) == 1


def test_translate_glossary_prefix_and_signals(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import json

    sources = SOURCES[:4]
    glossary = tmp_path / "terms.tsv"
    first_word = sources[0].split()[1]  # a word of line 1 only
    glossary.write_text(f"# de<TAB>en\n{first_word}\twater\nKeinWort\tsky\n")
    prefixes = tmp_path / "prefixes.en"
    prefixes.write_text("\n\na dog\n\n")
    argv = ["translate", "--model", str(tiny_model_dir), "--beam-size", "2"]
    code, out, err = _nmt(
        capsys,
        monkeypatch,
        [*argv, "--glossary", str(glossary), "--target-prefix", str(prefixes), "--signals"],
        "\n".join(sources) + "\n",
    )
    assert code == 0, err
    lines = [line.split("\t") for line in out.splitlines()]
    assert "water" in lines[0][0] and lines[2][0].startswith("a dog")
    assert all("sky" not in text for text, _ in lines)  # a term not in the input is ignored
    assert set(json.loads(lines[1][1])) == {
        "mean_log_prob",
        "coverage",
        "repetition",
        "length_ratio",
    }
    glossary.write_text("Hund\tdog\nKatze\n")
    code, _, err = _nmt(capsys, monkeypatch, [*argv, "--glossary", str(glossary)], "Ein Hund.\n")
    assert code == 2 and f"{glossary}:2: a glossary line is source<TAB>target" in err
