"""Bulk translation: translate a Parquet document store offline, exactly once and resumably,
with a pool of Ray Data actors (or through the running Serve deployment).

- `job`: the library entry, `bulk_translate(model, input, output, BulkOptions)`.
- `store`: fragments, atomic writes, the job file and the manifest.
- `worker`: the Ray Data actors that translate fragments.
- `cli`: `nmt bulk-translate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports

if TYPE_CHECKING:
    from pipeline.bulk.job import BulkOptions, bulk_translate

__all__ = ["BulkOptions", "bulk_translate"]

__getattr__ = lazy_exports(
    __name__, {"bulk_translate": "pipeline.bulk.job", "BulkOptions": "pipeline.bulk.job"}
)
