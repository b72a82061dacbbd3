"""int8 decoding on CPU: dynamic quantization of the Linear layers.

Weights are quantized to int8 once (per tensor), activations at every product from their
observed range, and the products accumulate in int32 (fbgemm/onednn kernels). Embeddings,
the encoder's GRU, the additive attention's energy vector, the attention softmax and the
scores stay float32, so only the matrix products of the decoder's step (the GRU gates, the
attention query, deep output and the vocabulary projection) and the encoder's key
projection change.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """`model` with its nn.Linear layers replaced by their dynamically quantized int8 versions, in
    place (a Seq2Seq or an Ensemble: the searches take it as they take the original). CPU
    only: the quantized kernels have no CUDA implementation."""
    with warnings.catch_warnings():
        # torch.ao's eager quantization warns that it moves to torchao; it still works here
        # and needs no extra package.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(
            model, set(_quantizable(model)), dtype=torch.qint8, inplace=True
        )


def _quantizable(model: nn.Module) -> list[str]:
    """The names of the Linear layers worth int8: all but the additive attention's energy
    vector, whose input is the [R, S, A] grid; quantizing that grid at every step costs more
    than the 1-column product saves."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not name.endswith("attention.energy")
    ]


def is_quantized(model: nn.Module) -> bool:
    """Whether any layer of `model` is a dynamically quantized Linear."""
    quantized = torch.ao.nn.quantized.dynamic.Linear
    return any(isinstance(module, quantized) for module in model.modules())
