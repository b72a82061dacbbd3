"""Checkpoint averaging: the element-wise mean of several state dicts of one network
(Junczys-Dowmunt et al. 2016; Vaswani et al. 2017), a model that usually translates better
than any of the checkpoints it averages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor


def average_state_dicts(states: Iterable[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The mean of each floating-point tensor over `states`, in each tensor's own dtype.

    The sum is kept in float64, so that N copies of one state average to exactly that state.
    Integer and bool tensors (counters, masks) are copied from the last state: their mean
    means nothing. One state is read at a time, so `states` may be a generator that loads
    checkpoints one by one. Raises ValueError when the states are not of one network (other
    names or shapes) or there are none."""
    sums: dict[str, Tensor] = {}
    last: Mapping[str, Tensor] = {}
    count = 0
    for state in states:
        if count and (state.keys() != sums.keys() or _shapes(state) != _shapes(sums)):
            raise ValueError(f"state {count + 1} is not of the same network as the first")
        for name, tensor in state.items():
            if tensor.is_floating_point():
                # a copy for the first state: the sum is updated in place
                value = tensor.detach().to("cpu", torch.float64, copy=not count)
                sums[name] = value if not count else sums[name].add_(value)
            else:
                sums[name] = tensor.detach().cpu()
        last, count = state, count + 1
    if not count:
        raise ValueError("nothing to average: no state given")
    return {
        name: (total / count).to(last[name].dtype) if last[name].is_floating_point() else total
        for name, total in sums.items()
    }


def _shapes(state: Mapping[str, Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in state.items()}
