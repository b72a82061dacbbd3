"""GRU decoder conditioned on the previous token and the context, with Bahdanau's deep
output (maxout) before the softmax.

The per-step loop does only what truly depends on the previous step (the GRU's hidden
matmul, attention, the context's contribution to the gates). Everything that can be done
for all target positions at once is hoisted out of the loop: the embedding's gate
contribution before it, the deep output and the big vocabulary projection after it, and
only over real tokens. This is where the training speed comes from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.attention import ATTENTIONS, RowSources
from models.config import ModelConfig


@dataclass
class EncodedSource:
    """What the decoder attends to, for a batch of B sources of padded length S."""

    annotations: Tensor  # [B, S, K]
    keys: Tensor  # [B, S, A] attention keys, projected once per batch
    mask: Tensor  # [B, S] True on real tokens

    def select(self, index: Tensor) -> EncodedSource:
        """Rows in `index` order (for sorting, beam expansion, dropping finished rows)."""
        return EncodedSource(self.annotations[index], self.keys[index], self.mask[index])

    def heads(self, sizes: Sequence[int]) -> dict[int, EncodedSource]:
        """The first n rows, as views (no copy), for every n of `sizes` (descending, the first
        the whole batch), with one backward for all of them (see `_Heads`)."""
        distinct = sorted(set(sizes), reverse=True)
        annotations, keys = (_Heads.apply(t, distinct) for t in (self.annotations, self.keys))
        return {
            n: EncodedSource(annotations[i], keys[i], self.mask[:n]) for i, n in enumerate(distinct)
        }


class _Heads(torch.autograd.Function):
    """x [B, *] -> the views x[:n] for n in sizes (descending, sizes[0] == B).

    Autograd's own slicing would give every decoder step's x[:n] a backward that fills a
    zero tensor the size of x and adds it up: T full-size passes over the source's
    annotations and keys per batch. Here the gradients of all prefixes add into the first
    one's."""

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int]) -> tuple[Tensor, ...]:
        ctx.set_materialize_grads(False)
        ctx.sizes = sizes
        return tuple(x[:n] for n in sizes)

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, None]:
        total = None
        for n, grad in zip(ctx.sizes, grads, strict=True):
            if grad is None:
                continue
            if total is None:
                total = grad.new_zeros(ctx.sizes[0], *grad.shape[1:])
            total[:n] += grad
        return total, None


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding, annotation_size: int):
        super().__init__()
        hidden, gates = config.dec_hidden_size, 3 * config.dec_hidden_size
        self.hidden_size = hidden
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        self.hidden_dropout = nn.Dropout(config.hidden_dropout)
        self.attention = ATTENTIONS[config.attention](
            hidden, annotation_size, config.attention_size
        )
        self.init_proj = nn.Linear(annotation_size, hidden)
        # GRU weights split by input so each part can be computed where it is cheapest.
        self.emb_gates = nn.Linear(config.emb_size, gates)
        self.ctx_gates = nn.Linear(annotation_size, gates, bias=False)
        # One matmul per step gives both a GRU's hidden gates and the attention query: the
        # one GRU's from s_{i-1}, or, in the conditional GRU, the second GRU's from s'_i.
        query_size = self.attention.query_size
        self.conditional = config.conditional_gru
        self.hidden_proj = nn.Linear(hidden, gates + (0 if self.conditional else query_size))
        recurrent = [self.hidden_proj]
        if self.conditional:
            self.intermediate_proj = nn.Linear(hidden, gates + query_size)
            recurrent.append(self.intermediate_proj)
        self.deep_output = nn.Linear(
            hidden + config.emb_size + annotation_size, 2 * config.deep_output_size
        )
        self.output = nn.Linear(config.deep_output_size, config.tgt_vocab_size)
        if config.tie_target_embeddings:
            self.output.weight = embedding.weight
        for layer in recurrent:  # orthogonal recurrent weights, one block per gate
            for block in layer.weight.data.split(hidden, dim=0):
                nn.init.orthogonal_(block)

    def init_state(self, summary: Tensor) -> Tensor:
        """summary [B, K] -> s_0 [B, H] = tanh(W_init C)

        float32 even under bfloat16 autocast: the GRU update mixes the new candidate into
        this state, so the recurrent state then stays float32 at every step."""
        return torch.tanh(self.init_proj(summary)).float()

    def step(
        self,
        hidden: Tensor,
        emb_gates: Tensor,
        source: EncodedSource,
        rows: RowSources | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One decoder step: s_i = GRU([E y_{i-1}; c_i], s_{i-1}), c_i = attend(s_{i-1});
        conditional: s'_i = GRU_1(E y_{i-1}, s_{i-1}), c_i = attend(s'_i),
        s_i = GRU_2(c_i, s'_i) (Nematus's cGRU).

        hidden [R, H], emb_gates [R, 3H] (the previous token's gate input), a source of B
        sentences, `rows` saying which sentence each row reads (e.g. its beams; None: R = B,
        row i reads sentence i) -> new hidden [R, H], context [R, K], attention weights
        [R, S] (None without attention)
        """
        gates = 3 * self.hidden_size
        if self.conditional:
            hidden = _gru_update(emb_gates, self.hidden_proj(hidden), hidden)
            projected = self.intermediate_proj(hidden)
        else:
            projected = self.hidden_proj(hidden)
        query = projected[:, gates:] if self.attention.query_size else hidden
        context, weights = self.attention(query, source.keys, source.annotations, source.mask, rows)
        input_gates = self.ctx_gates(context)
        if not self.conditional:
            input_gates = input_gates + emb_gates
        return _gru_update(input_gates, projected[:, :gates], hidden), context, weights

    def logits(self, hidden: Tensor, prev_embedded: Tensor, context: Tensor) -> Tensor:
        """Deep output, then the vocabulary: logits = W_o t. Any leading shape [N, *] ->
        [N, V]."""
        return self.output(self.output_features(hidden, prev_embedded, context))

    def output_features(self, hidden: Tensor, prev_embedded: Tensor, context: Tensor) -> Tensor:
        """Deep output t = maxout(U s_i + V E y_{i-1} + C c_i), its inputs dropped out by
        `hidden_dropout` and t by `dropout`: what the output layer multiplies. Any leading
        shape [N, *] -> [N, l]."""
        inputs = self.hidden_dropout(torch.cat([hidden, prev_embedded, context], dim=-1))
        pre = self.deep_output(inputs)
        maxout = pre.view(*pre.shape[:-1], -1, 2).amax(dim=-1)
        return self.dropout(maxout)

    def teacher_forced(
        self,
        source: EncodedSource,
        init: Tensor,
        tgt_in: Tensor,
        tgt_len: Tensor,
        project: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Run the decoder over gold prefixes without computing anything on padding.

        tgt_in [B, T] (bos + target, padded), tgt_len [B] ->
        logits [N, V] (with `project=False`: the output features [N, l]) for the N =
        sum(tgt_len) real positions, in packed (time-major, longest-first) order, and
        `sorted_index` [B] (row order used for packing), so that
        `pack_padded_sequence(x[sorted_index], tgt_len[sorted_index])` aligns gold labels.
        """
        sorted_len, sorted_index = tgt_len.sort(descending=True)
        embedded = self.dropout(self.embedding(tgt_in[sorted_index]))
        packed = pack_padded_sequence(embedded, sorted_len.cpu(), batch_first=True)
        sizes = packed.batch_sizes.tolist()
        # [N, 3H] for every position at once, then split by step (one backward for all).
        emb_gates = self.emb_gates(packed.data).split(sizes)
        # As targets end, the batch shrinks: rows are sorted longest-first, so the rows still
        # running at step t are always the first batch_sizes[t] (views, no copies).
        heads = source.select(sorted_index).heads(sizes)
        hidden = init[sorted_index]
        hiddens, contexts = [], []
        for n, step_gates in zip(sizes, emb_gates, strict=True):
            hidden, context, _ = self.step(hidden[:n], step_gates, heads[n])
            hiddens.append(hidden)
            contexts.append(context)
        features = self.output_features(torch.cat(hiddens), packed.data, torch.cat(contexts))
        return (self.output(features) if project else features), sorted_index


def _gru_update(input_gates: Tensor, hidden_gates: Tensor, hidden: Tensor) -> Tensor:
    """A GRU transition from its gates' two halves: input_gates, hidden_gates [R, 3H] (r, z, n
    blocks), hidden [R, H] -> the new hidden state [R, H]."""
    in_r, in_z, in_n = input_gates.chunk(3, dim=1)
    h_r, h_z, h_n = hidden_gates.chunk(3, dim=1)
    reset = torch.sigmoid(in_r + h_r)
    update = torch.sigmoid(in_z + h_z)
    candidate = torch.tanh(in_n + reset * h_n)
    return candidate + update * (hidden - candidate)  # (1-z)*n + z*h
