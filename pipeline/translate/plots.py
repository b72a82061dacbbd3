"""The figures `nmt translate` and `nmt evaluate` write: attention heatmaps (Bahdanau et al.
2014, Fig. 3) and BLEU by source length (their Fig. 2).

Drawn with matplotlib's object API (`Figure`, which renders PNG with Agg) instead of pyplot:
no global figure state and no display needed, so it works headless and from any thread.
"""

from __future__ import annotations

import functools
import logging
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib import font_manager
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

# Tried in order after DejaVu Sans for glyphs it lacks (Chinese pieces), where installed.
CJK_FONTS = [
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "AR PL UMing CN",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
]
INCHES_PER_LABEL = 0.3  # heatmap cell size, so that every piece's label stays readable


@functools.cache
def _cjk_fonts() -> tuple[str, ...]:
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return tuple(name for name in CJK_FONTS if name in installed)


def _font_family(labels: Sequence[str]) -> list[str]:
    """DejaVu Sans, falling back to an installed CJK font for CJK labels."""
    has_cjk = any("CJK" in unicodedata.name(char, "") for label in labels for char in label)
    if has_cjk and not _cjk_fonts():
        log.warning("no CJK font installed (e.g. fonts-noto-cjk): Chinese labels show as boxes")
    return ["DejaVu Sans", *_cjk_fonts()]


def attention_heatmap(
    source_pieces: Sequence[str],
    target_pieces: Sequence[str],
    attention: Sequence[Sequence[float]],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """Write the attention weights as a grey-scale PNG (white = 1), source pieces across the
    top, target pieces down the side, as in Bahdanau et al. (2014), Fig. 3.

    attention: [len(target_pieces)][len(source_pieces)], each row a distribution.
    """
    rows, columns = len(target_pieces), len(source_pieces)
    if len(attention) != rows or any(len(row) != columns for row in attention):
        raise ValueError(f"attention must be [{rows}][{columns}] (target x source pieces)")
    family = _font_family([*source_pieces, *target_pieces])
    size = (2.5 + INCHES_PER_LABEL * columns, 2.0 + INCHES_PER_LABEL * rows)
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(attention, cmap="gray", vmin=0.0, vmax=1.0, aspect="auto")
    axes.xaxis.tick_top()
    axes.set_xticks(range(columns), labels=source_pieces, rotation=90, family=family)
    axes.set_yticks(range(rows), labels=target_pieces, family=family)
    axes.set_xlabel("source")
    axes.set_ylabel("translation")
    if title:
        axes.set_title(title, family=family, fontsize="small")
    figure.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    return _save(figure, path)


def bleu_by_length_plot(
    buckets: Sequence[str],
    counts: Sequence[int],
    bleu_by_system: Mapping[str, Sequence[float]],
    path: str | Path,
    unit: str = "words",
) -> Path:
    """One line per system: BLEU of each source-length bucket (Bahdanau et al. 2014, Fig. 2).

    buckets: labels such as "1-5"; counts: sentences per bucket; bleu_by_system: name ->
    one BLEU per bucket.
    """
    figure = Figure(figsize=(7.0, 4.5), layout="constrained")
    axes = figure.add_subplot()
    positions = range(len(buckets))
    for name, scores in bleu_by_system.items():
        axes.plot(positions, scores, marker="o", label=name)
    labels = [f"{bucket}\n({count})" for bucket, count in zip(buckets, counts, strict=True)]
    axes.set_xticks(positions, labels=labels)
    axes.set_xlabel(f"source sentence length in {unit} (sentences)")
    axes.set_ylabel("BLEU")
    axes.set_ylim(bottom=0.0)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path
