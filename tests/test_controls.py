"""Decoding controls (issue 22): int8 decoding, scoring given translations, forced
prefixes, quality signals and lexical constraints, on the tiny trained de->en model and
small hand-made models. Nothing here needs Ray."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
