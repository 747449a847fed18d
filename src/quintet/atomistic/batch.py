"""Collate records into a batch and split a batch back into records.

How each field is combined comes from its kind in :mod:`quintet.atomistic.keys`: per-atom and
per-edge fields are concatenated, per-structure fields stacked, and ``index`` fields (edge
indices) concatenated along dim 1 with each structure's atoms offset by the atoms before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from quintet.atomistic import keys as K

__all__ = ["collate", "plan_batches", "uncollate"]


def collate(records: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Combine records into one batch dict (adds ``BATCH`` and ``NUM_ATOMS``).

    Raises:
        ValueError: empty input, or records that do not carry the same keys.
    """
    if len(records) == 0:
        raise ValueError("cannot collate an empty list of records")
    names = set(records[0])
    for r in records[1:]:
        if set(r) != names:
            raise ValueError(f"records carry different fields: {sorted(names ^ set(r))}")
    counts = [int(r[K.POSITIONS].shape[0]) for r in records]
    out: dict[str, Tensor] = {}
    for name in sorted(names - {K.BATCH, K.NUM_ATOMS}):
        kind = K.kind_of(name)
        vals = [r[name] for r in records]
        if kind in ("node", "edge"):
            out[name] = torch.cat(vals, dim=0)
        elif kind == "graph":
            out[name] = torch.stack(vals, dim=0)
        else:  # index
            offset = 0
            shifted = []
            for v, n in zip(vals, counts, strict=True):
                shifted.append(v + offset)
                offset += n
            out[name] = torch.cat(shifted, dim=1)
    device = records[0][K.POSITIONS].device
    n_t = torch.tensor(counts, dtype=torch.long, device=device)
    out[K.NUM_ATOMS] = n_t
    out[K.BATCH] = torch.repeat_interleave(torch.arange(len(records), device=device), n_t)
    return out


def plan_batches(num_atoms: Sequence[int], max_structures: int, max_atoms: int | None = None) -> list[range]:
    """Split structures, in order, into consecutive batches of bounded size.

    A batch holds at most ``max_structures`` structures and, when ``max_atoms`` is set, at most
    ``max_atoms`` atoms in all; a structure larger than ``max_atoms`` gets a batch of its own.
    Small cells are thus packed many to a batch (the per-step overhead of a batched forward pass
    and solve is shared) while a batch of large cells stays within memory.

    Args:
        num_atoms: atoms of each structure.
        max_structures: most structures per batch (>= 1).
        max_atoms: most atoms per batch (>= 1), or ``None`` for no atom limit.

    Returns:
        One ``range`` of structure indices per batch, covering ``0..len(num_atoms)`` in order.

    Raises:
        ValueError: a limit below 1.
    """
    if max_structures < 1:
        raise ValueError(f"max_structures must be >= 1, got {max_structures}")
    if max_atoms is not None and max_atoms < 1:
        raise ValueError(f"max_atoms must be >= 1 or None, got {max_atoms}")
    out: list[range] = []
    start, atoms = 0, 0
    for k, n in enumerate(num_atoms):
        full = k - start >= max_structures or (max_atoms is not None and atoms + n > max_atoms)
        if k > start and full:
            out.append(range(start, k))
            start, atoms = k, 0
        atoms += n
    if len(num_atoms) > start:
        out.append(range(start, len(num_atoms)))
    return out


def uncollate(batch: Mapping[str, Tensor]) -> list[dict[str, Tensor]]:
    """Split a batch (as made by :func:`collate`) back into per-structure records.

    Edge fields are assigned to the structure of their centre atom. ``BATCH`` is dropped and
    ``NUM_ATOMS`` becomes a 0-d tensor per record.
    """
    counts = batch[K.NUM_ATOMS].tolist()
    starts = [0]
    for c in counts[:-1]:
        starts.append(starts[-1] + c)
    edge_graph = None
    index_names = [n for n in batch if n in K.KINDS and K.KINDS[n] == "index"]
    if index_names:
        edge_graph = batch[K.BATCH][batch[index_names[0]][0]]
    records: list[dict[str, Tensor]] = []
    for g, (s0, n) in enumerate(zip(starts, counts, strict=True)):
        rec: dict[str, Tensor] = {}
        emask = None if edge_graph is None else edge_graph == g
        for name, val in batch.items():
            if name in (K.BATCH,):
                continue
            kind = K.kind_of(name)
            if kind == "node":
                rec[name] = val[s0 : s0 + n]
            elif kind == "graph":
                rec[name] = val[g]
            elif kind == "edge":
                if emask is None:
                    raise ValueError(f"edge field {name!r} without an edge index to assign it")
                rec[name] = val[emask]
            else:
                mask = batch[K.BATCH][val[0]] == g
                rec[name] = val[:, mask] - s0
        records.append(rec)
    return records
