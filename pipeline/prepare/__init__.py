"""Corpus preparation: read a parallel corpus (text, TSV or Parquet; local or remote), clean
the training split, train sentencepiece on a sample of it, and write every split as Parquet
shards of token ids, with Ray Data.

- `preparation`: the library entry, `prepare_corpus(PrepareSettings)` and `is_prepared(path)`.
- `dataflow`: the Ray Data pipeline of one split; `stages`: its map and write stages.
- `cli`: `nmt prepare`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports

if TYPE_CHECKING:
    from pipeline.prepare.preparation import is_prepared, prepare_corpus

__all__ = ["is_prepared", "prepare_corpus"]

__getattr__ = lazy_exports(
    __name__,
    {
        "prepare_corpus": "pipeline.prepare.preparation",
        "is_prepared": "pipeline.prepare.preparation",
    },
)
