"""How a chat model does on held-out conversations: the perplexity of the human replies,
and for each way of decoding, how varied its replies are: distinct-1 and distinct-2 (Li et
al. 2016: distinct n-grams over all n-grams, across every reply) and their mean length.

Words are the units (characters for Chinese and Japanese, which are written without
spaces). The human replies are scored the same way, as the bar to compare with.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import torch

from models.seq2seq import Seq2Seq
from models.training import collate, evaluate_loss
from pipeline.errors import UserError
from pipeline.translate.settings import DecodeSettings
from pipeline.translate.translator import Translator

# The decodings compared: name -> changes to the session's settings.
DECODINGS = {
    "beam 5": dict(sample=False, beam_size=5, no_repeat_ngram=0),
    "greedy": dict(sample=False, beam_size=1, no_repeat_ngram=0),
    "sampling T=1": dict(sample=True, temperature=1.0, top_k=0, top_p=1.0, no_repeat_ngram=0),
    "sampling T=0.7, top-p 0.9, no-repeat 3": dict(
        sample=True, temperature=0.7, top_k=0, top_p=0.9, no_repeat_ngram=3
    ),
}
UNSPACED = ("zh", "ja")  # languages whose units are characters


def units(text: str, lang: str | None) -> list[str]:
    return [c for c in text if not c.isspace()] if lang in UNSPACED else text.split()


def distinct(texts: list[str], n: int, lang: str | None = None) -> float:
    """Distinct n-grams over all n-grams of `texts` (each text's own n-grams); 0 for none."""
    grams = [
        tuple(words[i : i + n])
        for words in (units(text, lang) for text in texts)
        for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def perplexity(model: Seq2Seq, src_ids: list[list[int]], tgt_ids: list[list[int]]) -> float:
    """exp of the mean per-token cross-entropy of the targets (eos included), teacher-forced."""
    config = model.config
    pairs = list(zip(src_ids, tgt_ids, strict=True))
    batches = (
        collate(pairs[i : i + 64], config.pad_id, config.bos_id, config.eos_id)
        for i in range(0, len(pairs), 64)
    )
    device = next(model.parameters()).device
    with torch.inference_mode():
        return math.exp(evaluate_loss(model, (b.to(device) for b in batches)))


def evaluate_chat(translator: Translator, split: str | Path, seed: int = 1) -> dict:
    """Perplexity on a prepared split (`runs/data/chat-en/valid`) and, per decoding in
    DECODINGS, distinct-1/2 and mean length of the replies; the human replies' too."""
    try:
        table = pq.read_table(split, columns=["src_ids", "tgt_ids", "src_text", "tgt_text"])
    except (FileNotFoundError, OSError) as error:
        raise UserError(f"cannot read the prepared split {split}: {error}") from None
    columns = table.to_pydict()
    if not isinstance(translator.model, Seq2Seq):
        raise UserError("chat evaluation takes one model, not an ensemble")
    lang = translator.meta.get("tgt_lang")
    result = {
        "pairs": table.num_rows,
        "perplexity": perplexity(translator.model, columns["src_ids"], columns["tgt_ids"]),
        "replies": {"human": _variety(columns["tgt_text"], lang)},
    }
    base = replace(translator.settings, seed=seed, n_best=1)
    for name, changes in DECODINGS.items():
        settings: DecodeSettings = replace(base, **changes)
        replies = [t.text for t in translator.translate(columns["src_text"], settings)]
        result["replies"][name] = _variety(replies, lang)
    return result


def _variety(texts: list[str], lang: str | None) -> dict:
    lengths = [len(units(text, lang)) for text in texts]
    return {
        "distinct_1": distinct(texts, 1, lang),
        "distinct_2": distinct(texts, 2, lang),
        "mean_length": sum(lengths) / max(len(lengths), 1),
        "unique_replies": len(set(texts)) / max(len(texts), 1),
    }


def markdown(result: dict) -> str:
    """The result as the table docs/chat.md shows."""
    lines = [
        f"{result['pairs']} held-out pairs; perplexity of the human replies: "
        f"{result['perplexity']:.1f}",
        "",
        "| replies | distinct-1 | distinct-2 | unique replies | mean length |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in result["replies"].items():
        lines.append(
            f"| {name} | {row['distinct_1']:.3f} | {row['distinct_2']:.3f} | "
            f"{row['unique_replies']:.2f} | {row['mean_length']:.1f} |"
        )
    return "\n".join(lines)
