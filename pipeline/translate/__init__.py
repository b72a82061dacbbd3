"""Translation: the one `Translator` that turns text into translations, the decoding
settings every stage shares, and evaluation.

- `translator`: `Translator` (model dir -> batched, length-sorted search over strings).
- `settings`: `DecodeSettings`, how to decode (beam, n-best, pruning, precision, batch).
- `evaluate`: sacreBLEU/chrF scores, speed and BLEU by length (`nmt evaluate`).
- `plots`: attention heatmaps and BLEU-by-length plots.
- `cli`: `nmt translate`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports

if TYPE_CHECKING:
    from pipeline.translate.settings import DecodeSettings
    from pipeline.translate.translator import Translation, Translator

__all__ = ["DecodeSettings", "Translation", "Translator"]

__getattr__ = lazy_exports(
    __name__,
    {
        "Translator": "pipeline.translate.translator",
        "Translation": "pipeline.translate.translator",
        "DecodeSettings": "pipeline.translate.settings",
    },
)
