"""Training over a sampled target vocabulary (Jean, Cho, Memisevic & Bengio 2014, section 3).

The softmax of a batch is normalised over V', a subset of the target vocabulary that holds
every target id of the batch, the special ids, and uniformly drawn others up to a fixed
size. This is Jean et al.'s importance sampling with their choice of proposal: Q uniform on
V' makes every log-Q correction the same constant, so the estimate is the softmax over V'.
We draw V' per batch rather than per partition of the corpus: batches are shuffled across
the whole corpus, so a per-batch V' is a partition of one batch, with no pass over the data
to precompute. Only V''s rows of the output layer are multiplied, and only they get a
gradient. A model trained this way decodes with its full output layer, like any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sample_vocabulary(
    gold: Tensor,
    vocab_size: int,
    size: int,
    always: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    """V' for a batch: gold [N] (its target ids), the ids `always`, and uniformly drawn
    others up to `size` ids in all -> sorted ids [K], K = max(size, distinct ids given).

    When the batch alone has more distinct targets than `size`, V' holds them all: a gold
    id outside V' would have no probability to learn."""
    if not 0 < size <= vocab_size:
        raise ValueError(f"sampled softmax size {size} must be between 1 and {vocab_size}")
    present = torch.zeros(vocab_size, dtype=torch.bool)
    present[gold.cpu()] = True
    present[list(always)] = True
    missing = size - int(present.sum())
    if missing > 0:
        absent = (~present).nonzero().squeeze(1)
        drawn = torch.randperm(len(absent), generator=generator)[:missing]
        present[absent[drawn]] = True
    return present.nonzero().squeeze(1).to(gold.device)


def sampled_cross_entropy(
    features: Tensor,
    output: nn.Linear,
    gold: Tensor,
    vocabulary: Tensor,
    label_smoothing: float = 0.0,
) -> Tensor:
    """The summed cross-entropy of gold [N] under a softmax over `vocabulary` [K] (sorted
    ids holding every gold id): features [N, D] times `output`'s rows of `vocabulary`.

    Equals the full softmax's cross-entropy when `vocabulary` is every id."""
    bias = None if output.bias is None else output.bias[vocabulary]
    logits = F.linear(features, output.weight[vocabulary], bias)
    positions = torch.searchsorted(vocabulary, gold)
    return F.cross_entropy(
        logits.float(), positions, reduction="sum", label_smoothing=label_smoothing
    )
