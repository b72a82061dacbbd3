"""Plain PyTorch training: batching by tokens, one optimisation step, one pass over batches.

Ray Train's `train_func` calls these unchanged, so the cost of Ray is measured against
exactly this code.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from models.seq2seq import Seq2Seq

Pair = tuple[Sequence[int], Sequence[int]]  # (source ids, target ids), no bos/eos


@dataclass
class Batch:
    src: Tensor  # [B, S]
    src_len: Tensor  # [B]
    tgt_in: Tensor  # [B, T] bos + y
    tgt_out: Tensor  # [B, T] y + eos
    tgt_len: Tensor  # [B] len(y) + 1

    @property
    def num_target_tokens(self) -> int:
        return int(self.tgt_len.sum())

    @property
    def padding_fraction(self) -> float:
        """Share of the padded source+target rectangles that is padding."""
        real = int(self.src_len.sum()) + self.num_target_tokens
        return 1.0 - real / (self.src.numel() + self.tgt_in.numel())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in vars(self).values()))


def collate(pairs: Sequence[Pair], pad_id: int, bos_id: int, eos_id: int) -> Batch:
    """Pad a list of (src, tgt) id sequences into a Batch."""
    src_len = torch.tensor([len(s) for s, _ in pairs])
    tgt_len = torch.tensor([len(t) + 1 for _, t in pairs])
    src = torch.full((len(pairs), int(src_len.max())), pad_id, dtype=torch.long)
    tgt_in = torch.full((len(pairs), int(tgt_len.max())), pad_id, dtype=torch.long)
    tgt_out = tgt_in.clone()
    for row, (source, target) in enumerate(pairs):
        # torch.tensor copies: the ids may be read-only views of Arrow buffers.
        src[row, : len(source)] = torch.tensor(source)
        tgt_in[row, : len(target) + 1] = torch.as_tensor([bos_id, *target])
        tgt_out[row, : len(target) + 1] = torch.as_tensor([*target, eos_id])
    return Batch(src, src_len, tgt_in, tgt_out, tgt_len)


def token_batches(
    pairs: Iterable[Pair], max_tokens: int, window: int = 100, seed: int | None = None
) -> Iterator[list[Pair]]:
    """Group a stream of pairs into batches of at most ~max_tokens (padded, src+tgt).

    Pairs are sorted by length inside a window of `window * max_tokens` tokens so batches
    hold similar lengths (little padding); batches are shuffled within the window so
    training does not see lengths in order. Memory is bounded by the window, not the stream.
    """
    rng = random.Random(seed)
    buffer: list[Pair] = []
    buffered_tokens = 0
    for pair in pairs:
        buffer.append(pair)
        buffered_tokens += len(pair[0]) + len(pair[1]) + 1
        if buffered_tokens >= window * max_tokens:
            yield from _batches_of_window(buffer, max_tokens, rng)
            buffer, buffered_tokens = [], 0
    if buffer:
        yield from _batches_of_window(buffer, max_tokens, rng)


def _batches_of_window(buffer: list[Pair], max_tokens: int, rng: random.Random):
    buffer.sort(key=lambda p: (len(p[1]), len(p[0])))
    batches, current, longest = [], [], 0
    for pair in buffer:
        longest_if_added = max(longest, len(pair[0]) + len(pair[1]) + 1)
        if current and longest_if_added * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest_if_added = [], len(pair[0]) + len(pair[1]) + 1
        current.append(pair)
        longest = longest_if_added
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


@dataclass
class StepResult:
    loss: float  # mean cross-entropy per target token
    num_tokens: int
    grad_norm: float


def train_step(
    model: Seq2Seq | torch.nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    label_smoothing: float = 0.0,
    clip_norm: float | None = 1.0,
    autocast_dtype: torch.dtype | None = None,
    vocabulary: Tensor | None = None,
) -> StepResult:
    """One optimisation step on one batch (mean loss over the batch's real target tokens).

    `model` is a Seq2Seq or a wrapper around one (DDP): its forward returns the summed loss.
    `vocabulary`: the sampled softmax's target ids (see `models.sampled_softmax`), or None
    for the full softmax.
    """
    model.train()
    num_tokens = batch.num_target_tokens
    device_type = batch.src.device.type
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss_sum = model(
            batch.src,
            batch.src_len,
            batch.tgt_in,
            batch.tgt_out,
            batch.tgt_len,
            label_smoothing,
            vocabulary,
        )
    loss = loss_sum / num_tokens
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = math.nan
    if clip_norm:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm))
    optimizer.step()
    return StepResult(float(loss.detach()), num_tokens, grad_norm)


@torch.no_grad()
def evaluate_loss(model: Seq2Seq, batches: Iterable[Batch]) -> float:
    """Mean per-token cross-entropy over batches (no label smoothing)."""
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        total += float(model(batch.src, batch.src_len, batch.tgt_in, batch.tgt_out, batch.tgt_len))
        tokens += batch.num_target_tokens
    return total / max(tokens, 1)
