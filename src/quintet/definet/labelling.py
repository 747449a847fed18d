"""``quintet definet label``: label defect structure files against their pristine host.

Writes ``labels.csv`` (one row per structure: the substitutions and vacancies found) and, per
structure, an extxyz file with the vacancy placeholders appended and a per-atom ``defect`` array
(0 pristine, 1 substitution, 2 vacancy) — exactly the nodes DefiNet sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LabelJob", "label_files"]


@dataclass
class LabelJob:
    """Settings of ``quintet definet label``.

    Attributes:
        inputs: structure files and/or folders.
        pristine: the pristine supercell file, or
        unit_cell: a unit-cell file repeated ``supercell`` times.
        supercell: repetitions, e.g. ``[5, 5, 1]``.
        tol: site-matching tolerance, Å.
        out: where ``labels.csv`` and the labelled extxyz files go (``None``: print only).
    """

    inputs: list[str] = field(default_factory=list)
    pristine: str | None = None
    unit_cell: str | None = None
    supercell: list[int] | None = None
    tol: float = 0.3
    out: str | None = None


def _describe(symbols: list[str], indices: Any, new: list[str] | None = None) -> str:
    if new is None:
        return ";".join(f"{symbols[i]}{i}" for i in indices)
    return ";".join(f"{symbols[i]}{i}->{n}" for i, n in zip(indices, new, strict=True))


def label_files(job: LabelJob) -> list[dict[str, Any]]:
    """Label every input; returns one summary row per structure (and writes them when ``out``).

    Raises:
        FileNotFoundError: missing inputs or host. ValueError: a structure that cannot be labelled
            (interstitials, mismatched host ...), naming the file and atoms.
    """
    import numpy as np
    from ase import Atoms

    from quintet.atomistic.defects import SUBSTITUTION, label_atoms, load_host
    from quintet.atomistic.pipeline import discover, iter_structures
    from quintet.atomistic.structures import write_structure
    from quintet.config import save_config
    from quintet.io import atomic_write_csv

    host = load_host(job.pristine, job.unit_cell, job.supercell)
    host_symbols = host.get_chemical_symbols()
    rows = []
    out = Path(job.out) if job.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_config(job, out / "config.yaml")
    for item in iter_structures(discover(job.inputs)):
        atoms = item.atoms
        lab = label_atoms(atoms, host, tol=job.tol, name=item.source)
        sub_atoms = np.flatnonzero(lab.labels[: lab.num_atoms] == SUBSTITUTION)
        sites = lab.site_of_atom[sub_atoms]
        syms = atoms.get_chemical_symbols()
        row = {
            "id": item.id,
            "source": item.source,
            "n_atoms": len(atoms),
            "n_substitutions": len(sub_atoms),
            "n_vacancies": lab.num_vacancies,
            "substitutions": _describe(host_symbols, sites, [syms[i] for i in sub_atoms]),
            "vacancies": _describe(host_symbols, lab.vacancy_sites),
            "max_site_distance_A": f"{lab.match_distance.max():.4f}",
        }
        rows.append(row)
        if out is not None:
            labelled = Atoms(numbers=lab.numbers, positions=lab.positions, cell=atoms.cell, pbc=atoms.pbc)
            labelled.new_array("defect", lab.labels.astype(np.int64))
            write_structure(out / f"{row['id']}_labelled.extxyz", labelled)
    if out is not None:
        atomic_write_csv(out / "labels.csv", rows)
    return rows
