"""Writes a small dataset in `nmt prepare`'s output layout straight from generated pairs, so
training tests don't pay for a Ray Data run (prepare has its own tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.corpus.synthetic import parallel_corpus
from pipeline.corpus.tokenizer import SRC_SPM, TGT_SPM, Tokenizer, train_sentencepiece


def write_prepared_dataset(out: Path, train_pairs: int = 2000, seed: int = 0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    corpus = parallel_corpus(train_pairs + 200, seed=seed)
    model = train_sentencepiece([s for pair in corpus for s in pair], vocab_size=120)
    for name in (SRC_SPM, TGT_SPM):
        (out / name).write_bytes(model)
    tokenizer = Tokenizer(out / SRC_SPM)
    splits = {"train": corpus[:train_pairs], "valid": corpus[train_pairs:]}
    for split, pairs in splits.items():
        src = tokenizer.encode([de for de, _ in pairs])
        tgt = tokenizer.encode([en for _, en in pairs])
        columns = {
            "index": pa.array(range(len(pairs)), pa.int64()),
            "src_ids": pa.array(src, pa.list_(pa.int32())),
            "tgt_ids": pa.array(tgt, pa.list_(pa.int32())),
            "src_len": pa.array([len(s) for s in src], pa.int32()),
            "tgt_len": pa.array([len(t) for t in tgt], pa.int32()),
        }
        if split != "train":
            columns |= {"src_text": [de for de, _ in pairs], "tgt_text": [en for _, en in pairs]}
        (out / split).mkdir()
        half = len(pairs) // 2  # two shards, as Ray Data would write
        table = pa.table(columns)
        pq.write_table(table.slice(0, half), out / split / "part-0.parquet")
        pq.write_table(table.slice(half), out / split / "part-1.parquet")
    stats = {
        "src_lang": "de",
        "tgt_lang": "en",
        "joint_vocab": True,
        "vocab_size": {"src": tokenizer.vocab_size, "tgt": tokenizer.vocab_size},
    }
    (out / "stats.json").write_text(json.dumps(stats))
    return out
