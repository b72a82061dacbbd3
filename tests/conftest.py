"""Shared fixtures: a toy model trained once per session, and the real corpora's location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require_shared_data() -> Path:
    """The real corpora, or a skip outside CI (a failure in CI, where they must be present)."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    message = f"real corpora not found at {SHARED_DATA} (../shared/data beside the repo)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; CI must have them")
    pytest.skip(message)


@pytest.fixture(scope="session")
def toy_model():
    """A Bahdanau model trained briefly on the reversal task: emits eos, has real attention."""
    from models.toy import train_toy

    torch.set_num_threads(2)
    return train_toy("bahdanau", max_steps=250, max_seconds=60, seed=0).model.eval()


def build_tiny_model_dir(directory: Path, steps: int = 150, seed: int = 0) -> Path:
    """A small de->en model dir (sentencepiece + weights + meta) trained on the generated
    corpus for a few seconds: real files, real tokenizers, translations that are words."""
    import json

    from models.config import ModelConfig
    from models.model_dir import save_model
    from models.seq2seq import Seq2Seq
    from models.training import collate, token_batches, train_step
    from pipeline.corpus.synthetic import parallel_corpus
    from pipeline.corpus.tokenizer import SRC_SPM, TGT_SPM, Tokenizer, train_sentencepiece

    directory.mkdir(parents=True, exist_ok=True)
    corpus = parallel_corpus(3000, seed=seed)
    spm_bytes = train_sentencepiece([s for pair in corpus for s in pair], vocab_size=120)
    for name in (SRC_SPM, TGT_SPM):
        (directory / name).write_bytes(spm_bytes)
    tokenizer = Tokenizer(directory / SRC_SPM)
    torch.manual_seed(seed)
    config = ModelConfig(
        src_vocab_size=tokenizer.vocab_size,
        tgt_vocab_size=tokenizer.vocab_size,
        emb_size=32,
        enc_hidden_size=48,
        dec_hidden_size=64,
        attention_size=48,
        deep_output_size=32,
        dropout=0.0,
    )
    model = Seq2Seq(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    pairs = list(
        zip(
            tokenizer.encode([d for d, _ in corpus]),
            tokenizer.encode([e for _, e in corpus]),
            strict=True,
        )
    )
    step = 0
    while step < steps:
        for chunk in token_batches(pairs, max_tokens=1500, seed=step):
            batch = collate(chunk, config.pad_id, config.bos_id, config.eos_id)
            train_step(model, batch, optimizer)
            step += 1
            if step >= steps:
                break
    save_model(model.eval(), directory)
    (directory / "meta.json").write_text(
        json.dumps({"src_lang": "de", "tgt_lang": "en", "name": "tiny-de-en"})
    )
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    # One thread: the tiny model's ops are too small to share, and threads spin-waiting on
    # each other on a busy machine slow the build down many times over.
    torch.set_num_threads(1)
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")
