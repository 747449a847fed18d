"""The test pairs of a custom-layout folder rewritten in other cell settings (for `quintet deeprelax eval`).

    python benchmarks/cell_settings.py benchmarks/work/bulk_all

Writes ``<folder>_super`` (every test pair as a 2x1x1 supercell) and ``<folder>_skew`` (the same lattice
in a non-reduced setting: cell rows a1, a2, a1 + a3, atoms wrapped into it), each with the same
``test.csv`` (and a one-line train/val so the loader accepts the folder). Unrelaxed and relaxed
structures get the same transformation, so the relaxation itself is unchanged; a relaxer that does not
depend on how the cell is written scores the same ratio vs the dummy on all three folders.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import numpy as np
from ase.io import read, write

M_SKEW = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])


def _ids(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return [r["atoms_id"] for r in csv.DictReader(f)]


def main(folder: Path) -> None:
    test = _ids(folder / "test.csv")
    for name, fn in (("super", lambda a: a.repeat((2, 1, 1))), ("skew", _skew)):
        out = folder.parent / f"{folder.name}_{name}"
        (out / "CIF").mkdir(parents=True, exist_ok=True)
        for i in test:
            for k in ("unrelaxed", "relaxed"):
                atoms = read(folder / "CIF" / f"{i}_{k}.cif")
                write(out / "CIF" / f"{i}_{k}.cif", fn(atoms))
        for split in ("train", "val", "test"):
            shutil.copyfile(folder / "test.csv", out / f"{split}.csv")
        print(f"{out}: {len(test)} test pairs")


def _skew(atoms):
    atoms = atoms.copy()
    atoms.set_cell(M_SKEW @ atoms.cell[:], scale_atoms=False)
    atoms.wrap()
    return atoms


if __name__ == "__main__":
    main(Path(sys.argv[1]))
