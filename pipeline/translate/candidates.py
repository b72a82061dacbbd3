"""Building a model's candidate list (`models.candidates`) from its prepared training data."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import pyarrow.parquet as pq

from models.candidates import CANDIDATES_FILE, build_candidate_table
from models.config import ModelConfig
from models.model_dir import CONFIG_FILE
from pipeline.corpus.tokenizer import SRC_SPM, TGT_SPM
from pipeline.errors import UserError
from pipeline.storage import Location
from pipeline.translate.translator import find_model_dir


@dataclass(frozen=True)
class CandidateSettings:
    """How much of the table to keep: decoding may use up to these many."""

    frequent: int = 2000  # most frequent target pieces
    per_source: int = 50  # likeliest translations kept per source piece
    iterations: int = 5  # of IBM Model 1's EM

    def __post_init__(self) -> None:
        if self.frequent < 0 or self.per_source < 0 or self.iterations < 1:
            raise UserError("--frequent and --per-source must be 0 or more, --iterations >= 1")
        if not self.frequent and not self.per_source:
            raise UserError("a candidate list needs --frequent or --per-source above 0")


def build_candidates(model: str, data: str, settings: CandidateSettings) -> Location:
    """Writes candidates.npz into the model dir of `model` from the training pairs of the
    prepared `data` (which must share the model's tokenizers); returns where it went."""
    model_dir, data_dir = find_model_dir(model), Location.of(data)
    if not (data_dir / "train").is_dir():
        raise UserError(f"--data {data_dir} is not a prepared dataset (no train/)")
    for name in (SRC_SPM, TGT_SPM):
        if (data_dir / name).read_bytes() != (model_dir / name).read_bytes():
            raise UserError(
                f"--data {data_dir} was prepared with another {name} than {model_dir}'s: "
                "give the data the model was trained on"
            )
    config = ModelConfig.from_dict(json.loads((model_dir / CONFIG_FILE).read_text()))
    table = pq.read_table((data_dir / "train").uri, columns=["src_ids", "tgt_ids"])
    pairs = zip(table["src_ids"].to_pylist(), table["tgt_ids"].to_pylist(), strict=True)
    specials = (config.pad_id, config.unk_id, config.bos_id, config.eos_id)
    candidates = build_candidate_table(
        pairs,
        config.src_vocab_size,
        config.tgt_vocab_size,
        settings.frequent,
        settings.per_source,
        settings.iterations,
        exclude=specials,
    )
    buffer = io.BytesIO()
    candidates.save(buffer)
    target = model_dir / CANDIDATES_FILE
    target.write_bytes(buffer.getvalue())
    return target
