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
