"""Seeded batch samplers whose order depends only on (seed, epoch): the key to exact resume.

With ``steps_per_epoch`` set, the training indices form one endless stream made of seeded
permutations of the dataset (pass ``p`` is ``permutation(seed, p)``); epoch ``e`` takes the next
``steps_per_epoch`` global batches of that stream, so every sample is seen equally often whatever
the epoch length. Without it, epoch ``e`` is one permutation ``permutation(seed, e)``. Under DDP each
global batch is cut into one slice per rank (all ranks run the same number of steps).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

__all__ = ["EpochBatchSampler", "ShardSampler", "epoch_permutation"]


def epoch_permutation(n: int, seed: int, index: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``(seed, index)``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5EED, int(index)]).permutation(n)


class EpochBatchSampler:
    """Batches of training indices for one epoch; set :attr:`epoch` before iterating.

    Args:
        num_samples: dataset length.
        batch_size: samples per batch on this rank.
        steps_per_epoch: batches per epoch (``None``: one pass over the data per epoch).
        seed: data-order seed.
        rank: this process's rank.
        world_size: number of processes (DDP).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        steps_per_epoch: int | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the training dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def __len__(self) -> int:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        per_rank = math.ceil(self.num_samples / self.world_size)
        return math.ceil(per_rank / self.batch_size)

    def _stream(self, start: int, stop: int) -> np.ndarray:
        """Positions ``[start, stop)`` of the endless stream of seeded permutations."""
        n = self.num_samples
        out = []
        pos = start
        while pos < stop:
            p, off = divmod(pos, n)
            take = min(n - off, stop - pos)
            out.append(epoch_permutation(n, self.seed, p)[off : off + take])
            pos += take
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def __iter__(self) -> Iterator[list[int]]:
        b, w, r = self.batch_size, self.world_size, self.rank
        if self.steps_per_epoch is not None:
            g = b * w
            start = self.epoch * self.steps_per_epoch * g
            idx = self._stream(start, start + self.steps_per_epoch * g)
            for t in range(self.steps_per_epoch):
                yield idx[t * g + r * b : t * g + (r + 1) * b].tolist()
            return
        perm = epoch_permutation(self.num_samples, self.seed, self.epoch)
        per_rank = math.ceil(self.num_samples / w)
        if per_rank * w > self.num_samples:  # pad by wrapping so that every rank has the same count
            perm = np.concatenate([perm, np.resize(perm, per_rank * w - self.num_samples)])
        mine = perm[r::w]
        for t in range(len(self)):
            yield mine[t * b : (t + 1) * b].tolist()


class ShardSampler:
    """Sequential indices of this rank's shard (``rank::world_size``) for validation."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_samples, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
