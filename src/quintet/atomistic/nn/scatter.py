"""Scatter helpers in plain torch (no torch_scatter): sums and means over an index."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["scatter_mean", "scatter_sum"]


def scatter_sum(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index`` (along dim 0)."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add(0, index, src)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int) -> Tensor:
    """Mean of the rows of ``src`` in each bucket (empty buckets give zero)."""
    total = scatter_sum(src, index, dim_size)
    count = torch.bincount(index, minlength=dim_size).clamp(min=1).to(src.dtype)
    return total / count.view(-1, *([1] * (src.dim() - 1)))
