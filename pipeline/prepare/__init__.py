"""Corpus preparation: read a parallel corpus (text, TSV or Parquet; local or remote), clean
the training split, train sentencepiece on a sample of it, and write every split as Parquet
shards of token ids, with Ray Data.

- `preparation`: the library entry, `prepare_corpus(PrepareSettings)` (or its fields as
  keywords) and `is_prepared(path)`.
- `settings`: `PrepareSettings`, the options of a preparation (flags, keywords, stats.json).
- `dataflow`: the Ray Data pipeline of one split; `stages`: its map and write stages.
- `cli`: `nmt prepare`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports

if TYPE_CHECKING:
    from pipeline.prepare.preparation import is_prepared, prepare_corpus
    from pipeline.prepare.settings import PrepareSettings

__all__ = ["PrepareSettings", "is_prepared", "prepare_corpus"]

__getattr__ = lazy_exports(
    __name__,
    {
        "prepare_corpus": "pipeline.prepare.preparation",
        "is_prepared": "pipeline.prepare.preparation",
        "PrepareSettings": "pipeline.prepare.settings",
    },
)
