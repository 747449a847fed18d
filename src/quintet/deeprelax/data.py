"""DeepRelax data: record checks, the graph transform, ASE pairs to records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.deeprelax.graph import with_deeprelax_graph
from quintet.deeprelax.maths import check_displacements

__all__ = ["DeepRelaxTransform", "check_record", "pairs_to_records"]

#: largest supported cell (atoms); beyond it the O(N^2) displace search is refused with a clear error
MAX_ATOMS = 20000


def check_record(record: Mapping[str, Tensor], source: str = "structure") -> None:
    """Validate an input record for DeepRelax.

    Raises:
        ValueError: no atoms, too many atoms, a non-periodic structure (DeepRelax needs a cell),
            a singular periodic cell, or relaxed labels whose periodic image is ambiguous.
    """
    n = int(record[K.POSITIONS].shape[0])
    if n == 0:
        raise ValueError(f"{source}: no atoms")
    if n > MAX_ATOMS:
        raise ValueError(
            f"{source}: {n} atoms is more than the {MAX_ATOMS} DeepRelax supports in one structure"
        )
    pbc = record[K.PBC].detach().cpu().numpy().astype(bool).reshape(3)
    if not pbc.any():
        raise ValueError(
            f"{source}: not periodic (pbc all False); DeepRelax relaxes crystals and slabs with a cell"
        )
    cell = record[K.CELL].detach().cpu().numpy().reshape(3, 3).astype(np.float64)
    sub = cell[pbc]
    if np.linalg.matrix_rank(sub, tol=1e-6) < int(pbc.sum()):
        raise ValueError(
            f"{source}: the cell vectors along the periodic directions are degenerate: {cell.tolist()}"
        )
    if K.RELAXED_POSITIONS in record:
        rel_cell = record.get(K.RELAXED_CELL, record[K.CELL]).detach().cpu().numpy().reshape(3, 3)
        check_displacements(
            record[K.POSITIONS].detach().cpu().numpy(),
            record[K.RELAXED_POSITIONS].detach().cpu().numpy(),
            rel_cell,
            pbc,
            source=source,
        )


class DeepRelaxTransform:
    """Dataset transform: validate a record, drop fields DeepRelax does not use, add both edge sets.

    Vacancy placeholders (``DEFECT == 2``, added by 2DMD loaders) are removed: DeepRelax sees the
    defect structure as it is.

    Args:
        cutoff, max_neighbors, max_displace: graph settings (match the model's :class:`ModelConfig`).
    """

    keep = (K.POSITIONS, K.ATOMIC_NUMBERS, K.CELL, K.PBC, K.RELAXED_POSITIONS, K.RELAXED_CELL, K.STRUCTURE_ID)

    def __init__(self, cutoff: float = 6.0, max_neighbors: int | None = 30, max_displace: int = 20) -> None:
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self.max_displace = max_displace

    def __call__(self, record: Mapping[str, Tensor]) -> dict[str, Tensor]:
        rec = dict(record)
        if K.DEFECT in rec:
            real = rec[K.DEFECT] != 2
            for k in (K.POSITIONS, K.ATOMIC_NUMBERS, K.RELAXED_POSITIONS):
                if k in rec:
                    rec[k] = rec[k][real]
        rec = {k: v for k, v in rec.items() if k in self.keep}
        sid = int(rec[K.STRUCTURE_ID]) if K.STRUCTURE_ID in rec else -1
        check_record(rec, source=f"structure {sid}")
        return with_deeprelax_graph(rec, self.cutoff, self.max_neighbors, self.max_displace)


def pairs_to_records(
    pairs: Sequence[tuple[Any, Any]], dtype: torch.dtype = torch.float32
) -> list[dict[str, Tensor]]:
    """(unrelaxed, relaxed) ASE pairs → records with unwrapped relaxed positions."""
    from quintet.atomistic.datasets import pair_record

    out = []
    for k, (u, r) in enumerate(pairs):
        rec = pair_record(u, r, dtype=dtype, source=f"pair {k}")  # refuses pairs of different atoms
        rec[K.STRUCTURE_ID] = torch.tensor(k)
        out.append(rec)
    return out
