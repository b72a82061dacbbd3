"""The Ray Data stages of `nmt prepare` after reading: the tokenizer (an actor, so each
worker loads sentencepiece once) and the Parquet sink that also counts what it kept.

Every pair read reaches the sink, dropped ones with their reason in `drop`; the sink writes
the kept ones and returns counts (unknown ids among them) and length histograms, so the
statistics come out of the same single streaming pass that writes the data.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.datasource import Datasink

from pipeline.corpus.tokenizer import Tokenizer
from pipeline.storage import Location

PERCENTILES = (50, 90, 95, 99)
IDS = pa.list_(pa.int32())
UNK_ID = 1  # fixed across the project (ModelConfig)
SIDES = ("src", "tgt")


@dataclass(frozen=True)
class LengthFilter:
    """Train-only limits on token lengths (ids without bos/eos)."""

    max_len: int = 100
    max_ratio: float = 3.0

    def reasons(self, src_len: np.ndarray, tgt_len: np.ndarray) -> list[str | None]:
        """The drop reason per pair: "too_long", "length_ratio" or None (kept).

        A side that encodes to no ids at all (e.g. only characters sentencepiece removes)
        counts as "empty"."""
        longer, shorter = np.maximum(src_len, tgt_len), np.minimum(src_len, tgt_len)
        empty = shorter == 0
        too_long = ~empty & (longer > self.max_len)
        ratio = ~empty & ~too_long & (longer > self.max_ratio * shorter)
        codes = np.select([empty, too_long, ratio], [1, 2, 3], default=0)
        return np.array([None, "empty", "too_long", "length_ratio"], dtype=object)[codes].tolist()


def ids_array(ids: list[list[int]]) -> tuple[pa.ListArray, np.ndarray]:
    """Token id lists as an Arrow list<int32> column (built from flat numpy arrays, far
    faster than pa.array over Python lists) and their lengths (int32, shape [n])."""
    lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat), type=IDS), lengths


class TokenizePairs:
    """Ray Data actor: (index, src_text, tgt_text, drop) -> (index, src_ids, tgt_ids,
    src_len, tgt_len, drop[, src_text, tgt_text]). Pairs already dropped are not encoded.

    Text goes through `Tokenizer.encode`: sentencepiece for subwords, whole words looked up
    for a word vocabulary."""

    def __init__(
        self,
        src_model: bytes,
        tgt_model: bytes,
        length_filter: LengthFilter | None,
        keep_text: bool,
    ) -> None:
        self.src = Tokenizer.from_serialized(src_model)
        self.tgt = Tokenizer.from_serialized(tgt_model)
        self.length_filter = length_filter
        self.keep_text = keep_text

    def __call__(self, batch: pa.Table) -> pa.Table:
        live = pc.is_null(batch["drop"])
        src_ids, src_len = ids_array(self._encode(self.src, batch["src_text"], live))
        tgt_ids, tgt_len = ids_array(self._encode(self.tgt, batch["tgt_text"], live))
        columns = {
            "index": batch["index"],
            "src_ids": src_ids,
            "tgt_ids": tgt_ids,
            "src_len": pa.array(src_len),
            "tgt_len": pa.array(tgt_len),
            "drop": self._drop(batch["drop"], live, src_len, tgt_len),
        }
        if self.keep_text:
            columns |= {"src_text": batch["src_text"], "tgt_text": batch["tgt_text"]}
        return pa.table(columns)

    @staticmethod
    def _encode(tokenizer, texts: pa.ChunkedArray, live: pa.ChunkedArray) -> list[list[int]]:
        # a dropped pair's text may be anything (even undecodable): encode "" instead
        kept = pc.if_else(live, texts, pa.scalar("")).to_pylist()
        return tokenizer.encode(kept, num_threads=-1)  # sentencepiece's default: every core

    def _drop(self, drop, live, src_len: np.ndarray, tgt_len: np.ndarray) -> pa.ChunkedArray:
        if self.length_filter is None:
            return drop
        reasons = pa.array(self.length_filter.reasons(src_len, tgt_len), pa.string())
        return pc.if_else(live, reasons, drop)


# ---------------------------------------------------------------- statistics


@dataclass
class SplitStats:
    """Counts for one split; histograms are counts per token length, so they are bounded
    by the longest sentence, not by the corpus size."""

    rows_in: int = 0
    dropped: Counter = field(default_factory=Counter)
    src_hist: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tgt_hist: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unk: Counter = field(default_factory=Counter)  # {"src": n, "tgt": n} unknown ids kept

    @property
    def kept(self) -> int:
        return int(self.src_hist.sum())

    def add(self, other: SplitStats) -> None:
        self.rows_in += other.rows_in
        self.dropped.update(other.dropped)
        self.src_hist = _add_hist(self.src_hist, other.src_hist)
        self.tgt_hist = _add_hist(self.tgt_hist, other.tgt_hist)
        self.unk.update(other.unk)

    def count(self, block: pa.Table) -> pa.Table:
        """Count `block` (all pairs, dropped ones included); returns the kept pairs."""
        self.rows_in += block.num_rows
        dropped = block["drop"].drop_null()
        self.dropped.update(dict(Counter(dropped.to_pylist())))
        kept = block.filter(pc.is_null(block["drop"]))
        self.src_hist = _add_hist(self.src_hist, np.bincount(kept["src_len"].to_numpy()))
        self.tgt_hist = _add_hist(self.tgt_hist, np.bincount(kept["tgt_len"].to_numpy()))
        for side in SIDES:
            ids = pc.list_flatten(kept[f"{side}_ids"])
            self.unk[side] += int(pc.sum(pc.equal(ids, UNK_ID)).as_py() or 0)
        return kept.drop_columns(["drop"])

    def tokens(self, side: str) -> int:
        hist = self.src_hist if side == "src" else self.tgt_hist
        return int(np.dot(np.arange(len(hist)), hist))

    def to_json(self) -> dict:
        tokens = {side: self.tokens(side) for side in SIDES}
        unk = {side: self.unk[side] for side in SIDES}
        return {
            "in": self.rows_in,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "src_len_pct": length_percentiles(self.src_hist),
            "tgt_len_pct": length_percentiles(self.tgt_hist),
            "tokens": tokens,  # ids of the kept pairs, without bos/eos
            "unk_tokens": unk,  # of them, the unknown id's
            "unk_rate": {side: round(unk[side] / max(tokens[side], 1), 6) for side in SIDES},
        }


def _add_hist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    size = max(len(a), len(b))
    return np.pad(a, (0, size - len(a))) + np.pad(b, (0, size - len(b)))


def length_percentiles(hist: np.ndarray) -> dict[str, int]:
    """{"p50", "p90", "p95", "p99", "max"} of the lengths counted in `hist` (exact: the
    smallest length with at least p% of the pairs at or below it); {} when empty."""
    total = int(hist.sum())
    if total == 0:
        return {}
    cumulative = np.cumsum(hist)
    result = {f"p{p}": int(np.searchsorted(cumulative, p / 100 * total)) for p in PERCENTILES}
    return result | {"max": int(np.flatnonzero(hist)[-1])}


# ---------------------------------------------------------------- sink


class PreparedSplitSink(Datasink):
    """Writes the kept pairs of one split as Parquet shards into `directory` (one file per
    write task, written block by block so memory stays bounded) and gathers SplitStats.

    Write tasks run on any node, so they write through the directory's filesystem (a local
    path must then be shared by every node); the sink keeps its URI, which every process
    can open, rather than a filesystem object."""

    def __init__(self, directory: Location, rows_per_file: int) -> None:
        self.uri = directory.uri
        self.rows_per_file = rows_per_file
        self.stats = SplitStats()

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def on_write_start(self, schema=None) -> None:
        Location.of(self.uri).mkdir()

    def write(self, blocks, ctx) -> SplitStats:
        stats = SplitStats()
        file = Location.of(self.uri) / f"{ctx.task_idx:05d}-{uuid.uuid4().hex[:8]}.parquet"
        writer = None
        for block in blocks:
            if block.num_rows == 0:  # an empty input yields a block without columns
                continue
            kept = stats.count(block)
            if kept.num_rows == 0:
                continue
            writer = writer or pq.ParquetWriter(file.path, kept.schema, filesystem=file.filesystem)
            writer.write_table(kept)
        if writer is not None:
            writer.close()
        return stats

    def on_write_complete(self, write_result) -> None:
        for stats in write_result.write_returns:
            self.stats.add(stats)
