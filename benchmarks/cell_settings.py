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
    for name, fn in (("super", _super), ("skew", _skew)):
        out = folder.parent / f"{folder.name}_{name}"
        (out / "CIF").mkdir(parents=True, exist_ok=True)
        kept = []
        for i in test:
            u = read(folder / "CIF" / f"{i}_unrelaxed.cif")
            r = read(folder / "CIF" / f"{i}_relaxed.cif")
            fu = u.get_scaled_positions(wrap=False)
            fr = r.get_scaled_positions(wrap=False)
            r.set_scaled_positions(fr - np.round(fr - fu))  # relaxed atoms: the image nearest their start
            u, r = fn(u, r)
            if (
                np.abs((r.positions - u.positions) @ np.linalg.pinv(r.cell[:])).max() >= 0.45
            ):  # as the loader checks
                print(f"{name}: {i} left out (an atom moves >= 0.45 of a cell vector: ambiguous image)")
                continue
            kept.append(i)
            write(out / "CIF" / f"{i}_unrelaxed.cif", u)
            write(out / "CIF" / f"{i}_relaxed.cif", r)
        for split in ("train", "val", "test"):
            with open(out / f"{split}.csv", "w", newline="") as f:
                f.write("atoms_id\n" + "".join(f"{i}\n" for i in kept))
        print(f"{out}: {len(kept)} of {len(test)} test pairs")


def _super(u, r):
    return u.repeat((2, 1, 1)), r.repeat((2, 1, 1))


def _skew(u, r):
    """Same lattice, cell rows a1, a2, a1 + a3; both structures shifted by the unrelaxed atoms' lattice shifts."""
    u, r = u.copy(), r.copy()
    u.set_cell(M_SKEW @ u.cell[:], scale_atoms=False)
    r.set_cell(M_SKEW @ r.cell[:], scale_atoms=False)
    fu = u.get_scaled_positions(wrap=False)
    shift = np.floor(fu)
    u.set_scaled_positions(fu - shift)
    r.set_scaled_positions(r.get_scaled_positions(wrap=False) - shift)
    return u, r


if __name__ == "__main__":
    main(Path(sys.argv[1]))
