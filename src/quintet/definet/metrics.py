"""Losses and metrics of DefiNet: position errors over real atoms, local errors near defects.

Everything here is a pure function of tensors. Vacancy placeholders (label 2) are nodes of the
graph but not atoms: they never enter a loss or a metric. Positions are compared directly (the
targets are relaxed positions unwrapped to the image nearest each unrelaxed atom).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from quintet.atomistic.defects import PRISTINE, VACANCY

__all__ = [
    "coord_mae_per_structure",
    "defect_distance",
    "local_mae_per_structure",
    "position_loss",
    "real_atom_mask",
]


def real_atom_mask(defect: Tensor) -> Tensor:
    """``(N,)`` bool: True for real atoms, False for vacancy placeholders."""
    return defect != VACANCY


def _segment_sum(src: Tensor, index: Tensor, n: int) -> Tensor:
    out = torch.zeros((n, *src.shape[1:]), dtype=src.dtype, device=src.device)
    return out.index_add_(0, index, src)


def position_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean Euclidean position error over the atoms where ``mask`` is True (the DefiNet loss).

    Args:
        pred: ``(N, 3)`` predicted positions, Å.
        target: ``(N, 3)`` relaxed positions, Å.
        mask: ``(N,)`` bool, atoms that count.

    Returns:
        Scalar, Å. Zero (with gradient) when no atom counts.
    """
    err = torch.linalg.vector_norm(pred - target, dim=-1)
    w = mask.to(err.dtype)
    return (err * w).sum() / w.sum().clamp_min(1.0)


def coord_mae_per_structure(
    pred: Tensor, target: Tensor, mask: Tensor, batch: Tensor, num_graphs: int
) -> Tensor:
    """Per-structure coordinate MAE: mean |Δ| over the Cartesian components of the counted atoms.

    Args:
        pred: ``(N, 3)`` positions, Å.
        target: ``(N, 3)`` positions, Å.
        mask: ``(N,)`` bool, atoms that count.
        batch: ``(N,)`` structure index of every atom.
        num_graphs: number of structures.

    Returns:
        ``(num_graphs,)`` MAE in Å; NaN for a structure with no counted atom.
    """
    err = (pred - target).abs().mean(dim=-1) * mask.to(pred.dtype)
    num = _segment_sum(err, batch, num_graphs)
    den = _segment_sum(mask.to(pred.dtype), batch, num_graphs)
    return torch.where(den > 0, num / den.clamp_min(1.0), torch.full_like(num, float("nan")))


def _image_offsets(pbc: Tensor) -> Tensor:
    rng = [torch.tensor([-1.0, 0.0, 1.0]) if bool(p) else torch.tensor([0.0]) for p in pbc]
    return torch.cartesian_prod(*rng).reshape(-1, 3)


def defect_distance(pos: Tensor, cell: Tensor, pbc: Tensor, defect: Tensor, batch: Tensor) -> Tensor:
    """Minimum-image distance from every node to the nearest defect site of its structure.

    Defect sites are nodes with a label other than pristine (substitutions and vacancy
    placeholders). A defect node is at distance 0 from itself.

    Args:
        pos: ``(N, 3)`` positions, Å (typically the unrelaxed ones).
        cell: ``(B, 3, 3)`` lattice vectors as rows.
        pbc: ``(B, 3)`` periodic flags.
        defect: ``(N,)`` labels.
        batch: ``(N,)`` structure index.

    Returns:
        ``(N,)`` distances, Å; ``inf`` in structures without any defect.
    """
    out = torch.full((pos.shape[0],), float("inf"), dtype=pos.dtype, device=pos.device)
    for g in range(cell.shape[0]):
        idx = torch.nonzero(batch == g).flatten()
        if idx.numel() == 0:
            continue
        p = pos[idx]
        d_idx = torch.nonzero(defect[idx] != PRISTINE).flatten()
        if d_idx.numel() == 0:
            continue
        diff = p[d_idx][None, :, :] - p[:, None, :]  # (n, d, 3)
        per = pbc[g].to(torch.bool)
        if bool(per.any()):
            c = cell[g].to(pos.dtype)
            safe = c.clone()
            for k in range(3):
                if not bool(per[k]) and float(torch.linalg.vector_norm(safe[k])) < 1e-12:
                    safe[k] = torch.eye(3, dtype=pos.dtype)[k]
            inv = torch.linalg.inv(safe)
            f = diff @ inv
            f = f - per.to(pos.dtype) * torch.round(f)
            diff = f @ safe
            shifts = _image_offsets(per).to(pos.dtype) @ safe
            dist = torch.linalg.vector_norm(diff[:, :, None, :] + shifts, dim=-1).amin(dim=-1)
        else:
            dist = torch.linalg.vector_norm(diff, dim=-1)
        out[idx] = dist.amin(dim=1)
    return out


def local_mae_per_structure(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    dist: Tensor,
    batch: Tensor,
    num_graphs: int,
    radii: Sequence[float] = (3.0, 4.0, 5.0, 6.0),
) -> dict[float, Tensor]:
    """Coordinate MAE over the counted atoms within each radius of a defect.

    Args:
        pred, target: ``(N, 3)`` positions, Å.
        mask: ``(N,)`` bool, atoms that count (real atoms).
        dist: ``(N,)`` distance to the nearest defect (:func:`defect_distance`), Å.
        batch: ``(N,)`` structure index.
        num_graphs: number of structures.
        radii: radii in Å.

    Returns:
        ``{radius: (num_graphs,) MAE}``; NaN where a structure has no counted atom within the radius.
    """
    return {
        float(r): coord_mae_per_structure(pred, target, mask & (dist <= r), batch, num_graphs) for r in radii
    }
