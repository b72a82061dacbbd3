"""Bi-directional GRU encoder over packed sequences (padding never reaches the RNN)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class Encoder(nn.Module):
    def __init__(
        self, embedding: nn.Embedding, hidden_size: int, num_layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(
            embedding.embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output_size = 2 * hidden_size

    def forward(self, src: Tensor, src_len: Tensor) -> tuple[Tensor, Tensor]:
        """src [B, S] ids, src_len [B] -> annotations [B, S, 2H], summary [B, 2H].

        The annotation h_j = [->h_j; <-h_j]; the summary is the encoder's last hidden states
        [->h_T; <-h_1], the fixed-length C of the no-attention baseline.
        """
        embedded = self.dropout(self.embedding(src))
        packed = pack_padded_sequence(
            embedded, src_len.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, final = self.rnn(packed)
        annotations, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.size(1))
        summary = torch.cat([final[-2], final[-1]], dim=1)  # top layer, both directions
        return annotations, summary
