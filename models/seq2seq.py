"""The encoder-decoder: RNNsearch with attention, or the fixed-context baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from models.config import ModelConfig
from models.decoder import Decoder, EncodedSource
from models.encoder import Encoder
from models.sampled_softmax import sampled_cross_entropy


class Seq2Seq(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        src_embedding = nn.Embedding(config.src_vocab_size, config.emb_size, config.pad_id)
        tgt_embedding = (
            src_embedding
            if config.share_embeddings
            else nn.Embedding(config.tgt_vocab_size, config.emb_size, config.pad_id)
        )
        self.encoder = Encoder(
            src_embedding, config.enc_hidden_size, config.enc_layers, config.dropout
        )
        self.decoder = Decoder(config, tgt_embedding, self.encoder.output_size)

    def encode(self, src: Tensor, src_len: Tensor) -> tuple[EncodedSource, Tensor]:
        """src [B, S], src_len [B] -> what to attend to, initial decoder state [B, H]"""
        annotations, summary = self.encoder(src, src_len)
        if self.config.attention == "none":
            # The baseline sees only C: one "annotation" per sentence, never a padded one.
            annotations = summary.unsqueeze(1)
            mask = torch.ones(src.size(0), 1, dtype=torch.bool, device=src.device)
        else:
            mask = torch.arange(src.size(1), device=src.device)[None, :] < src_len[:, None]
        keys = self.decoder.attention.precompute_keys(annotations)
        return EncodedSource(annotations, keys, mask), self.decoder.init_state(summary)

    def packed_logits(
        self, src: Tensor, src_len: Tensor, tgt_in: Tensor, tgt_len: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Logits [N, V] for the N real target positions, and the row order they follow
        (see Decoder.teacher_forced)."""
        source, init = self.encode(src, src_len)
        return self.decoder.teacher_forced(source, init, tgt_in, tgt_len)

    def teacher_forced_logits(
        self, src: Tensor, src_len: Tensor, tgt_in: Tensor, tgt_len: Tensor
    ) -> Tensor:
        """Teacher-forced logits, padded: [B, T, V] (zeros on padding). For tests and
        inspection; training uses `forward`, which never materialises the padding."""
        logits, order = self.packed_logits(src, src_len, tgt_in, tgt_len)
        padded = logits.new_zeros(*tgt_in.shape, logits.size(-1))
        return padded.index_put_(_packed_positions(order, tgt_len), logits)

    def forward(
        self,
        src: Tensor,
        src_len: Tensor,
        tgt_in: Tensor,
        tgt_out: Tensor,
        tgt_len: Tensor,
        label_smoothing: float = 0.0,
        vocabulary: Tensor | None = None,
    ) -> Tensor:
        """The training loss: summed cross-entropy over real target tokens (divide by
        tgt_len.sum() for the mean). It is `forward` so that DDP wraps it directly.

        tgt_in = bos + y, tgt_out = y + eos, both [B, T] padded, tgt_len [B] = len(y) + 1.
        With `vocabulary` (sorted target ids [K] holding every id of tgt_out, see
        `models.sampled_softmax`), the softmax runs over those ids only.
        """
        source, init = self.encode(src, src_len)
        project = vocabulary is None
        out, order = self.decoder.teacher_forced(source, init, tgt_in, tgt_len, project)
        gold = pack_padded_sequence(tgt_out[order], tgt_len[order].cpu(), batch_first=True).data
        if not project:
            return sampled_cross_entropy(
                out, self.decoder.output, gold, vocabulary, label_smoothing
            )
        return F.cross_entropy(out.float(), gold, reduction="sum", label_smoothing=label_smoothing)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def store_linear_weights_in(self, dtype: torch.dtype) -> Seq2Seq:
        """Keep the Linear layers' weights in `dtype` (bfloat16 for decoding under autocast,
        which then casts only activations, never the weights again). Embeddings and the
        encoder's GRU stay float32, and so does a Linear sharing its weight with an
        embedding. Such a model only runs inside `torch.autocast`."""
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        for module in self.modules():
            if isinstance(module, nn.Linear) and id(module.weight) not in embeddings:
                module.to(dtype)
        return self


def _packed_positions(order: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """(row, time) indices of the packed order produced by Decoder.teacher_forced."""
    sorted_len = lengths[order]
    rows, times = [], []
    for t in range(int(sorted_len.max())):
        n = int((sorted_len > t).sum())
        rows.append(order[:n])
        times.append(torch.full((n,), t, dtype=torch.long, device=order.device))
    return torch.cat(rows), torch.cat(times)
