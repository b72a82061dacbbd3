"""Scoring given translations: the log-probability the model gives a target for its source.

`score_pairs` is one batched teacher-forced pass, the same computation as the training loss
(`Seq2Seq.forward`): each pair's score is the sum of log P(y_t | y_<t, x) over its target
pieces and the final eos, so the scores of a batch add up to minus its (unsmoothed) loss.
`forced_decode` steps the search's own step decoder along the targets instead, which also
gives the attention weights and works for ensembles.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence

from models.search import Decodable, start_decoding
from models.seq2seq import Seq2Seq


def teacher_forcing_batch(tgt: Tensor, tgt_len: Tensor, bos: int, eos: int, pad: int) -> tuple:
    """Targets y [B, T] (padded with `pad`), their lengths [B] -> tgt_in = bos + y,
    tgt_out = y + eos (both [B, T + 1]) and their lengths len(y) + 1 [B]."""
    batch = tgt.size(0)
    tgt_in = torch.cat([tgt.new_full((batch, 1), bos), tgt], dim=1)
    tgt_out = torch.cat([tgt, tgt.new_full((batch, 1), pad)], dim=1)
    tgt_out[torch.arange(batch, device=tgt.device), tgt_len] = eos
    return tgt_in, tgt_out, tgt_len + 1


@torch.inference_mode()
def score_pairs(
    model: Seq2Seq | Decodable, src: Tensor, src_len: Tensor, tgt: Tensor, tgt_len: Tensor
) -> Tensor:
    """src [B, S], src_len [B], targets without bos/eos tgt [B, T], tgt_len [B] ->
    log P(target + eos | source) [B] (float32), summed over the len(y) + 1 predictions."""
    config = model.config
    if not isinstance(model, Seq2Seq):  # an ensemble: its mean log-probabilities per step
        token_log_probs, _ = forced_decode(model, src, src_len, tgt, tgt_len)
        return token_log_probs.sum(dim=1)
    tgt_in, tgt_out, lengths = teacher_forcing_batch(
        tgt, tgt_len, config.bos_id, config.eos_id, config.pad_id
    )
    logits, order = model.packed_logits(src, src_len, tgt_in, lengths)
    # The packed positions in the order the logits follow: gold token and sentence of each.
    packed_lengths = lengths[order].cpu()
    gold = pack_padded_sequence(tgt_out[order], packed_lengths, batch_first=True).data
    rows = torch.arange(src.size(0), device=src.device)[:, None].expand_as(tgt_out)
    row = pack_padded_sequence(rows[order], packed_lengths, batch_first=True).data
    log_probs = torch.log_softmax(logits.float(), dim=-1).gather(1, gold[:, None]).squeeze(1)
    return torch.zeros(src.size(0), device=src.device).index_add_(0, row, log_probs)


@torch.inference_mode()
def forced_decode(
    model: Seq2Seq | Decodable, src: Tensor, src_len: Tensor, tgt: Tensor, tgt_len: Tensor
) -> tuple[Tensor, Tensor | None]:
    """The search's step decoder fed the targets: per-prediction log-probabilities
    [B, T + 1] (y's pieces, then eos; 0 past each target's end) and attention weights
    [B, T + 1, S] (None without attention)."""
    config = model.config
    tgt_in, tgt_out, lengths = teacher_forcing_batch(
        tgt, tgt_len, config.bos_id, config.eos_id, config.pad_id
    )
    decoder = start_decoding(model, src, src_len)
    steps = tgt_in.size(1)
    token_log_probs = torch.zeros(src.size(0), steps, device=src.device)
    attention = [] if config.attention != "none" else None
    for t in range(steps):
        log_probs, weights = decoder.log_probs(tgt_in[:, t])
        token_log_probs[:, t] = log_probs.gather(1, tgt_out[:, t, None]).squeeze(1)
        if attention is not None and weights is not None:
            attention.append(weights.float())
    real = torch.arange(steps, device=src.device)[None, :] < lengths[:, None]
    token_log_probs = token_log_probs.masked_fill(~real, 0.0)
    return token_log_probs, (torch.stack(attention, dim=1) if attention else None)
