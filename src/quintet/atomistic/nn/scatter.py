"""Scatter helpers in plain torch (no torch_scatter): sums and means over an index."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["scatter_mean", "scatter_sum"]


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index`` (along dim 0)."""
    size = list(src.shape)  # a list, not tuple unpacking, so that TorchScript compiles it
    size[0] = dim_size
    return src.new_zeros(size).index_add(0, index, src)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Mean of the rows of ``src`` in each bucket (empty buckets give zero)."""
    total = scatter_sum(src, index, dim_size)
    count = torch.bincount(index, minlength=dim_size).clamp(min=1).to(src.dtype)
    shape = [-1] + [1] * (src.dim() - 1)
    return total / count.view(shape)
