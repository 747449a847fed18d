"""Small synthetic defect pairs for tests and the demo (no oracle, no shared data).

A pristine MX2 (or hBN-like) supercell gets 1–2 random vacancies/substitutions. The "relaxed"
structure follows a smooth, local analytic displacement field: every atom near a defect moves
along the line to it by ``A · exp(−d / λ)``, with the amplitude ``A`` set by the defect type and
the element that moves (atoms fall into vacancies, are pushed away by larger substituents). The
field is invariant to rotations and translations, so an equivariant model can learn it, and the
unrelaxed input is a meaningful dummy baseline. It is *not* physics; the real-data numbers come
from the CHGNet-relaxed sets in ``../shared/data/materials/defects2d``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from quintet.io import atomic_write_text

__all__ = ["displacement_field", "synthetic_host", "synthetic_pairs", "write_2dmd"]

#: substitutions per host element in the synthetic sets
_SUBS = {"Mo": ["W", "Nb"], "S": ["Se", "O"], "W": ["Mo"], "Se": ["S"]}


def synthetic_host(formula: str = "MoS2", size: int = 3, vacuum: float = 7.0) -> tuple[Any, Any]:
    """The pristine unit cell and ``size × size × 1`` supercell of a 2H MX2 monolayer."""
    from ase.build import mx2

    unit = mx2(formula, size=(1, 1, 1), vacuum=vacuum)
    unit.pbc = True
    return unit, unit.repeat((size, size, 1))


def displacement_field(
    positions: np.ndarray,
    numbers: np.ndarray,
    cell: np.ndarray,
    defects: list[tuple[str, np.ndarray, int]],
    length: float = 1.5,
) -> np.ndarray:
    """Displacements of every atom from a list of defects ``(kind, site position, ΔZ)``.

    ``kind`` is ``"vac"`` (atoms move towards the empty site) or ``"sub"`` (atoms move away when the
    substituent is heavier, ΔZ > 0, towards it when lighter). Minimum-image vectors in the plane.
    """
    disp = np.zeros_like(positions)
    inv = np.linalg.inv(cell)
    for kind, site, dz in defects:
        d = positions - site
        f = d @ inv
        f[:, :2] -= np.round(f[:, :2])
        d = f @ cell
        r = np.linalg.norm(d, axis=1)
        near = (r > 1e-6) & (r < 4.5)
        unit = np.zeros_like(d)
        unit[near] = d[near] / r[near, None]
        light = numbers < 20
        amp = np.where(light, 0.12, 0.06) if kind == "vac" else np.full(len(r), 0.04 * np.sign(dz))
        sign = -1.0 if kind == "vac" else 1.0
        disp[near] += sign * (amp[near] * np.exp(-r[near] / length))[:, None] * unit[near]
    return disp


def synthetic_pairs(
    n: int, formula: str = "MoS2", size: int = 3, seed: int = 0, max_defects: int = 2
) -> tuple[Any, list[tuple[Any, Any]]]:
    """``n`` (unrelaxed, relaxed) defect pairs on one host; returns ``(pristine supercell, pairs)``.

    Each structure has 1..``max_defects`` defects, each a vacancy or a substitution (50/50).
    """
    from ase.data import atomic_numbers

    rng = np.random.default_rng(seed)
    _, host = synthetic_host(formula, size)
    pairs = []
    for _ in range(n):
        atoms = host.copy()
        k = int(rng.integers(1, max_defects + 1))
        sites = rng.choice(len(host), size=k, replace=False)
        defects: list[tuple[str, np.ndarray, int]] = []
        remove = []
        for s in sites:
            sym = host.get_chemical_symbols()[s]
            if rng.random() < 0.5:
                defects.append(("vac", host.positions[s].copy(), 0))
                remove.append(int(s))
            else:
                new = str(rng.choice(_SUBS.get(sym, ["C"])))
                atoms.numbers[s] = atomic_numbers[new]
                defects.append(("sub", host.positions[s].copy(), int(atomic_numbers[new] - host.numbers[s])))
        keep = np.setdiff1d(np.arange(len(atoms)), remove)
        atoms = atoms[keep]
        relaxed = atoms.copy()
        relaxed.positions += displacement_field(
            atoms.positions, atoms.numbers, np.asarray(atoms.cell), defects
        )
        pairs.append((atoms, relaxed))
    return host, pairs


def write_2dmd(
    folder: str | Path, host_name: str, n: int, formula: str = "MoS2", size: int = 3, seed: int = 0
) -> Path:
    """Write ``n`` synthetic pairs in the 2DMD layout under ``folder/host_name``; returns the host folder."""
    from quintet.atomistic.structures import write_structure

    root = Path(folder) / host_name
    (root / "CIF").mkdir(parents=True, exist_ok=True)
    host, pairs = synthetic_pairs(n, formula, size, seed)
    write_structure(root / f"{host_name}_pristine_supercell.cif", host)
    rows = []
    for k, (u, r) in enumerate(pairs):
        pid = f"{host_name}_syn_{k:04d}"
        write_structure(root / "CIF" / f"{pid}_unrelaxed.cif", u)
        write_structure(root / "CIF" / f"{pid}_relaxed.cif", r)
        rows.append({"atoms_id": pid, "n_atoms": len(u)})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["atoms_id", "n_atoms"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(root / "meta.csv", buf.getvalue())
    return root
