"""Structures in and out: ASE ``Atoms`` / pymatgen ``Structure`` / files <-> one tensor record.

A *record* is a ``dict[str, Tensor]`` keyed by :mod:`quintet.atomistic.keys`:

- ``POSITIONS`` (N, 3) float, ``ATOMIC_NUMBERS`` (N,) long, ``CELL`` (3, 3) float (rows are lattice
  vectors; zeros for a molecule), ``PBC`` (3,) bool;
- optionally ``ENERGY`` (), ``FORCES`` (N, 3), ``STRESS`` (3, 3) when the atoms carry results
  (a calculator, e.g. the single-point calculator extxyz files load into, or ``atoms.info["energy"]``)
  and ``FIXED`` (N,) when they carry a ``FixAtoms`` constraint.

Files are read with :func:`read_structures`, which validates every structure and names the file and
the problem on bad input (truncated file, unknown element, NaN/inf, atoms closer than 0.5 Å,
singular cell, empty structure, a CIF cut short). :func:`write_structure` writes atomically.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from quintet.atomistic import keys as K
from quintet.io import atomic_open

__all__ = [
    "MIN_DISTANCE",
    "PLAUSIBLE",
    "as_atoms",
    "check_atoms",
    "from_ase",
    "from_pymatgen",
    "like",
    "plausibility",
    "read_structure",
    "read_structures",
    "to_ase",
    "to_pymatgen",
    "write_structure",
]

PathLike = str | os.PathLike[str]

#: two atoms closer than this (Å, periodic images included) make a structure invalid. The shortest real
#: bond (H-H, 0.74 Å) is well above it; override per call (``min_distance=``) or per verb (key ``min_distance``)
MIN_DISTANCE = 0.5

_FORMAT_BY_SUFFIX = {
    ".cif": "cif",
    ".xyz": "extxyz",
    ".extxyz": "extxyz",
    ".db": "db",
    ".json": "json",
    ".traj": "traj",
    ".vasp": "vasp",
    ".poscar": "vasp",
}


def guess_format(path: PathLike) -> str:
    """ASE format name for ``path`` from its suffix (POSCAR/CONTCAR names included)."""
    p = Path(path)
    name = p.name.upper()
    if name.startswith(("POSCAR", "CONTCAR")):
        return "vasp"
    fmt = _FORMAT_BY_SUFFIX.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{p}: cannot tell the structure format from the suffix {p.suffix!r}; "
            f"known: {sorted(_FORMAT_BY_SUFFIX)} or POSCAR/CONTCAR"
        )
    return fmt


# --------------------------------------------------------------------------------------------
# validation (pure numpy)
# --------------------------------------------------------------------------------------------


def _periodic_rank(cell: np.ndarray, pbc: np.ndarray) -> int:
    vecs = cell[np.asarray(pbc, dtype=bool)]
    if len(vecs) == 0:
        return 0
    return int(np.linalg.matrix_rank(vecs, tol=1e-6 * max(1.0, float(np.abs(vecs).max()))))


def check_atoms(atoms: Any, source: str = "structure", min_distance: float = MIN_DISTANCE) -> None:
    """Raise ``ValueError`` naming ``source`` if ``atoms`` is not a usable structure.

    Checks: at least one atom; atomic numbers in 1..118; finite positions and cell; periodic
    directions spanned by linearly independent cell vectors (non-zero volume); no two atoms
    (periodic images included) closer than ``min_distance`` Å.

    Args:
        atoms: an ASE ``Atoms``.
        source: what to call the structure in the message (usually ``"file.cif (frame 3)"``).
        min_distance: smallest allowed interatomic distance, Å.
    """
    n = len(atoms)
    if n == 0:
        raise ValueError(f"{source}: empty structure (no atoms)")
    z = atoms.numbers
    bad = np.flatnonzero((z < 1) | (z > 118))
    if len(bad):
        raise ValueError(f"{source}: unknown element (atomic number {int(z[bad[0]])} at atom {int(bad[0])})")
    pos = atoms.positions
    if not np.all(np.isfinite(pos)):
        i = int(np.flatnonzero(~np.isfinite(pos).all(axis=1))[0])
        raise ValueError(f"{source}: non-finite (NaN/inf) coordinates at atom {i}")
    cell = np.asarray(atoms.cell[:], dtype=float)
    if not np.all(np.isfinite(cell)):
        raise ValueError(f"{source}: non-finite (NaN/inf) cell")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if _periodic_rank(cell, pbc) < int(pbc.sum()):
        raise ValueError(
            f"{source}: zero-volume or singular cell (periodic directions {pbc.tolist()}, cell {cell.tolist()})"
        )
    _check_finite_results(atoms, source)
    if n == 1 and not pbc.any():
        return
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    probe = Atoms(numbers=atoms.numbers, positions=pos, cell=cell, pbc=pbc)
    i, j, d = neighbor_list("ijd", probe, min_distance, self_interaction=False)
    if len(d):
        k = int(np.argmin(d))
        sym = atoms.get_chemical_symbols()
        a, b = int(i[k]), int(j[k])
        raise ValueError(
            f"{source}: atoms {a} ({sym[a]}) and {b} ({sym[b]}) are {float(d[k]):.4f} Å apart (closer than "
            f"{min_distance} Å): overlapping or duplicated atoms; fix the file (or lower key min_distance)"
        )


#: limits of a plausible one-shot relaxation (:func:`plausibility`): principal strain of the cell, largest
#: atomic displacement net of the cell change (Å), smallest interatomic distance of the result (Å)
PLAUSIBLE = {"max_strain": 0.25, "max_shift_A": 2.0, "min_distance_A": 0.5}


def plausibility(before: Any, after: Any, limits: Mapping[str, float] | None = None) -> dict[str, Any]:
    """``{"plausible": bool, "plausibility_reason": str}`` of a predicted relaxation ``before -> after``.

    Implausible: a principal strain of the cell beyond ``max_strain`` (stretch of the deformation from the
    input cell to the predicted one), an atom displaced more than ``max_shift_A`` in fractional
    coordinates times the predicted cell (so a uniform cell strain does not count), two atoms of the
    result closer than ``min_distance_A``, or a non-finite number. Pure: the predict verbs flag and warn.
    """
    from ase.neighborlist import neighbor_list

    lim = {**PLAUSIBLE, **(limits or {})}
    if not (np.isfinite(after.positions).all() and np.isfinite(after.cell[:]).all()):
        return {"plausible": False, "plausibility_reason": "non-finite positions or cell"}
    reasons = []
    c0, c1 = before.cell.complete(), after.cell.complete()
    stretch = np.sqrt(np.clip(np.linalg.eigvalsh((f := np.linalg.solve(c0, c1)) @ f.T), 0, None))
    if np.abs(stretch - 1).max() > lim["max_strain"]:
        reasons.append(f"cell strain {np.abs(stretch - 1).max():.0%} > {lim['max_strain']:.0%}")
    if len(before) == len(after):
        d = after.cell.scaled_positions(after.positions) - before.cell.scaled_positions(before.positions)
        d[:, after.pbc] -= np.round(d[:, after.pbc])
        shift = np.linalg.norm(d @ c1, axis=1)
        if shift.max() > lim["max_shift_A"]:
            reasons.append(f"atom {int(shift.argmax())} moved {shift.max():.2f} Å > {lim['max_shift_A']} Å")
    if len(after) > 1 and len(neighbor_list("d", after, lim["min_distance_A"], self_interaction=False)):
        reasons.append(f"atoms closer than {lim['min_distance_A']} Å")
    return {"plausible": not reasons, "plausibility_reason": "; ".join(reasons)}


def _check_finite_results(atoms: Any, source: str) -> None:
    """Energy, forces and stress a file carries must be finite numbers (a NaN label poisons training)."""
    for name, value in _results(atoms).items():
        try:
            arr = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            continue
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{source}: non-finite (NaN/inf) {name}; fix or drop this structure")


_FORMULA_SUM = re.compile(r"^_chemical_formula_sum\s+(.+)$", re.MULTILINE)
_FORMULA_Z = re.compile(r"^_cell_formula_units_Z\s+(\d+)", re.MULTILINE)


def _parse_formula(text: str) -> Counter[str]:
    text = text.strip().strip("'\"")
    out: Counter[str] = Counter()
    for el, num in re.findall(r"([A-Z][a-z]?)\s*([0-9.]*)", text):
        out[el] += float(num) if num else 1.0
    return out


_CIF_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|\S+")


def _atom_site_loop_ok(text: str) -> bool:
    """False when an ``_atom_site_`` loop holds a number of values that is no multiple of its columns, or
    ends the file without a final newline (either way the file was cut inside a coordinate line)."""
    lines = text.splitlines()
    open_end = not text.endswith(("\n", "\r"))
    k = 0
    while k < len(lines):
        if lines[k].strip().lower() == "loop_":
            k += 1
            cols = []
            while k < len(lines) and lines[k].strip().startswith("_"):
                cols.append(lines[k].strip().split()[0].lower())
                k += 1
            values = 0
            while k < len(lines) and not lines[k].strip().lower().startswith(("_", "loop_", "data_")):
                if not lines[k].lstrip().startswith("#"):
                    values += len(_CIF_TOKEN.findall(lines[k]))
                k += 1
            atom_site = bool(cols) and cols[0].startswith("_atom_site_") and not cols[0].startswith("_atom_site_aniso")
            if atom_site and (values == 0 or values % len(cols) or (open_end and k == len(lines))):
                return False
            continue
        k += 1
    return True


def _check_cif_complete(path: Path, atoms_list: list[Any]) -> None:
    """Detect CIFs cut short: every ``_atom_site_`` row complete, and the atoms read matching
    ``_chemical_formula_sum`` (times 1 or ``_cell_formula_units_Z``). A CIF cut exactly at a line
    boundary that declares no formula cannot be told from a smaller structure."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if not _atom_site_loop_ok(text):
        raise ValueError(
            f"{path}: truncated CIF: the _atom_site_ loop ends inside a coordinate line; re-export the file"
        )
    sums = _FORMULA_SUM.findall(text)
    zs = _FORMULA_Z.findall(text)
    if len(sums) != len(atoms_list):
        return  # multi-block files without a formula per block: nothing reliable to compare
    for b, (formula, atoms) in enumerate(zip(sums, atoms_list, strict=True)):
        want = _parse_formula(formula)
        have = Counter(atoms.get_chemical_symbols())
        if not want:
            continue
        if set(want) != set(have):
            raise ValueError(
                f"{path}: truncated or inconsistent CIF (block {b}): read {dict(have)}, "
                f"but _chemical_formula_sum says {formula.strip()}"
            )
        ratios = {el: have[el] / want[el] for el in want}
        r0 = next(iter(ratios.values()))
        z = int(zs[b]) if len(zs) == len(sums) else None
        ok = all(abs(r - r0) < 1e-6 for r in ratios.values()) and abs(r0 - round(r0)) < 1e-6 and r0 >= 1
        if z is not None:
            ok = ok and round(r0) in (1, z)
        if not ok:
            raise ValueError(
                f"{path}: truncated or inconsistent CIF (block {b}): read {dict(have)}, "
                f"but _chemical_formula_sum says {formula.strip()}"
            )


def read_structures(
    path: PathLike,
    index: str | int | slice = ":",
    format: str | None = None,
    validate: bool = True,
    min_distance: float = MIN_DISTANCE,
) -> list[Any]:
    """Read every structure of a CIF/POSCAR/extxyz/ASE-db/ASE-json/traj file, validated.

    Args:
        path: the file.
        index: ASE index (``":"`` all frames, ``-1`` last, ``"0:10"``...).
        format: ASE format name; guessed from the suffix when omitted.
        validate: run :func:`check_atoms` on each structure.
        min_distance: smallest allowed interatomic distance for validation, Å.

    Returns:
        a list of ASE ``Atoms`` (energies/forces, when the file has them, on a single-point calculator).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be parsed (truncated, malformed, unknown element) or a structure
            fails validation; the message names the file (and frame) and the problem.
    """
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such structure file")
    fmt = format or guess_format(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file")
    try:
        if fmt == "db":
            out = _read_db(path, index)
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Occupancies present")
                got = ase.io.read(path, index=index, format=fmt)
            out = got if isinstance(got, list) else [got]
    except (FileNotFoundError, ValueError) as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"{path}: cannot read as {fmt}: {_describe(exc)}") from exc
    except Exception as exc:  # ASE raises KeyError/RuntimeError/StopIteration/XYZError for bad files
        raise ValueError(f"{path}: cannot read as {fmt}: {_describe(exc)}") from exc
    if not out:
        raise ValueError(f"{path}: no structures found")
    if fmt == "cif" and validate:
        _check_cif_complete(path, out)
    if validate:
        for k, atoms in enumerate(out):
            check_atoms(atoms, f"{path}" + (f" (frame {k})" if len(out) > 1 else ""), min_distance)
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"unknown element or missing field {exc.args[0]!r}"
    text = str(exc) or type(exc).__name__
    if "StopIteration" in text or isinstance(exc, StopIteration):
        return "file ends in the middle of a frame (truncated)"
    return f"{type(exc).__name__}: {text}"


def _read_db(path: Path, index: str | int | slice) -> list[Any]:
    import ase.db

    with ase.db.connect(path) as db:
        rows = list(db.select())
    atoms = [row.toatoms() for row in rows]
    if isinstance(index, int):
        return [atoms[index]]
    if isinstance(index, slice):
        return atoms[index]
    if index == ":":
        return atoms
    parts = [int(p) if p else None for p in str(index).split(":")]
    return atoms[slice(*parts)] if len(parts) > 1 else [atoms[int(index)]]


def read_structure(path: PathLike, format: str | None = None, validate: bool = True) -> Any:
    """Read exactly one structure (the last frame of a multi-frame file is *not* chosen silently).

    Raises:
        ValueError: the file holds more than one structure, or is invalid (see :func:`read_structures`).
    """
    out = read_structures(path, ":", format=format, validate=validate)
    if len(out) != 1:
        raise ValueError(f"{path}: expected one structure, found {len(out)}")
    return out[0]


def write_structure(path: PathLike, atoms: Any | Sequence[Any], format: str | None = None) -> Path:
    """Write one structure (or a list of frames) atomically: a temporary file renamed into place.

    Args:
        path: destination; the format comes from the suffix unless ``format`` is given.
        atoms: an ASE ``Atoms`` or a sequence of them (multi-frame formats: extxyz, db, traj).
        format: ASE format name.
    """
    import ase.io

    path = Path(path)
    fmt = format or guess_format(path)
    frames = [atoms] if not isinstance(atoms, Sequence) else list(atoms)
    if not frames:
        raise ValueError(f"{path}: nothing to write (no structures)")
    if fmt in ("cif", "extxyz", "vasp", "json"):
        if fmt in ("cif", "vasp") and len(frames) != 1:
            raise ValueError(f"{path}: {fmt} holds one structure, got {len(frames)}")
        if fmt == "cif":  # ASE's CIF writer wants a binary stream
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Occupancies present")
                ase.io.write(buf, frames[0], format="cif")
            data = buf.getvalue()
        else:
            sbuf = io.StringIO()
            if fmt == "vasp":
                ase.io.write(sbuf, frames[0], format="vasp", direct=True, sort=False)
            else:
                ase.io.write(sbuf, frames if len(frames) > 1 else frames[0], format=fmt)
            data = sbuf.getvalue().encode()
        with atomic_open(path, "wb") as fh:
            fh.write(data)
        return path
    # formats that need a real file name (db, traj): write next to the target, then rename
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        if fmt == "db":
            import ase.db

            with ase.db.connect(tmp, type="db") as db:
                for a in frames:
                    db.write(a)
        else:
            ase.io.write(tmp, frames, format=fmt)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------------


def _results(atoms: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    calc = getattr(atoms, "calc", None)
    if calc is not None and getattr(calc, "results", None):
        res.update(calc.results)
    for k in ("energy", "free_energy"):
        if k not in res and k in atoms.info:
            res[k] = atoms.info[k]
    if "forces" not in res and "forces" in atoms.arrays:
        res["forces"] = atoms.arrays["forces"]
    if "stress" not in res and "stress" in atoms.info:
        res["stress"] = atoms.info["stress"]
    return res


def _stress_3x3(s: Any) -> np.ndarray:
    s = np.asarray(s, dtype=float)
    if s.shape == (3, 3):
        return s
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"stress must have shape (6,) or (3, 3), got {s.shape}")


def from_ase(
    atoms: Any, dtype: torch.dtype | None = None, with_results: bool = True
) -> dict[str, torch.Tensor]:
    """Turn an ASE ``Atoms`` into a record.

    Args:
        atoms: the structure; energy/forces/stress are taken from its calculator results or
            ``atoms.info`` / ``atoms.arrays`` when present, ``FIXED`` from a ``FixAtoms`` constraint.
        dtype: float dtype of the record (default: ``torch.get_default_dtype()``).
        with_results: include energy/forces/stress if available.

    Returns:
        the record (see the module docstring for the keys).
    """
    dtype = dtype or torch.get_default_dtype()
    rec: dict[str, torch.Tensor] = {
        K.POSITIONS: torch.as_tensor(np.asarray(atoms.positions, dtype=float), dtype=dtype),
        K.ATOMIC_NUMBERS: torch.as_tensor(np.asarray(atoms.numbers), dtype=torch.long),
        K.CELL: torch.as_tensor(np.asarray(atoms.cell[:], dtype=float), dtype=dtype),
        K.PBC: torch.as_tensor(np.asarray(atoms.pbc, dtype=bool)),
    }
    if with_results:
        res = _results(atoms)
        e = res.get("energy", res.get("free_energy"))
        if e is not None:
            rec[K.ENERGY] = torch.tensor(float(e), dtype=dtype)
        if res.get("forces") is not None:
            rec[K.FORCES] = torch.as_tensor(np.asarray(res["forces"], dtype=float), dtype=dtype)
        if res.get("stress") is not None:
            rec[K.STRESS] = torch.as_tensor(_stress_3x3(res["stress"]), dtype=dtype)
    fixed = _fixed_mask(atoms)
    if fixed is not None:
        rec[K.FIXED] = torch.as_tensor(fixed)
    return rec


def _fixed_mask(atoms: Any) -> np.ndarray | None:
    from ase.constraints import FixAtoms

    cons = [c for c in (atoms.constraints or []) if isinstance(c, FixAtoms)]
    if not cons:
        return None
    mask = np.zeros(len(atoms), dtype=bool)
    for c in cons:
        mask[c.get_indices()] = True
    return mask


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_ase(record: Mapping[str, Any]) -> Any:
    """Turn a record (tensors or arrays) back into an ASE ``Atoms``.

    Energy/forces/stress, when present, are attached as a single-point calculator, and ``FIXED``
    as a ``FixAtoms`` constraint, so ``from_ase(to_ase(r))`` reproduces ``r``.
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    pos = _np(record[K.POSITIONS]).astype(float)
    z = _np(record[K.ATOMIC_NUMBERS]).astype(int)
    cell = _np(record[K.CELL]).astype(float) if K.CELL in record else np.zeros((3, 3))
    pbc = _np(record[K.PBC]).astype(bool) if K.PBC in record else np.zeros(3, dtype=bool)
    atoms = Atoms(numbers=z, positions=pos, cell=cell.reshape(3, 3), pbc=pbc.reshape(3))
    res: dict[str, Any] = {}
    if K.ENERGY in record:
        res["energy"] = float(_np(record[K.ENERGY]))
    if K.FORCES in record:
        res["forces"] = _np(record[K.FORCES]).astype(float)
    if K.STRESS in record:
        s = _np(record[K.STRESS]).astype(float).reshape(3, 3)
        res["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    if res:
        atoms.calc = SinglePointCalculator(atoms, **res)
    if K.FIXED in record:
        mask = _np(record[K.FIXED]).astype(bool)
        if mask.any():
            atoms.set_constraint(FixAtoms(mask=mask))
    return atoms


def from_pymatgen(structure: Any, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Turn a pymatgen ``Structure`` (periodic) or ``Molecule`` (no cell) into a record."""
    return from_ase(_pmg_to_ase(structure), dtype=dtype)


def _pmg_to_ase(structure: Any) -> Any:
    from ase import Atoms

    if hasattr(structure, "lattice"):
        return Atoms(
            numbers=[site.specie.Z for site in structure],
            positions=structure.cart_coords,
            cell=structure.lattice.matrix,
            pbc=tuple(bool(p) for p in getattr(structure.lattice, "pbc", (True, True, True))),
        )
    return Atoms(numbers=[site.specie.Z for site in structure], positions=structure.cart_coords)


def to_pymatgen(record: Mapping[str, Any]) -> Any:
    """Turn a record into a pymatgen ``Structure`` (any periodic direction) or ``Molecule`` (none)."""
    from pymatgen.core import Lattice, Molecule, Structure

    pos = _np(record[K.POSITIONS]).astype(float)
    z = _np(record[K.ATOMIC_NUMBERS]).astype(int).tolist()
    pbc = _np(record[K.PBC]).astype(bool).reshape(3) if K.PBC in record else np.zeros(3, dtype=bool)
    if not pbc.any():
        return Molecule(z, pos)
    cell = _np(record[K.CELL]).astype(float).reshape(3, 3)
    lattice = Lattice(cell, pbc=tuple(bool(p) for p in pbc))
    return Structure(lattice, z, pos, coords_are_cartesian=True)


def as_atoms(obj: Any, source: str = "structure") -> tuple[Any, str]:
    """An ASE ``Atoms`` copy of ``obj`` (ASE ``Atoms`` or pymatgen ``Structure``/``Molecule``) and its kind
    (``"ase"`` or ``"pymatgen"``), for the one-call APIs that return the type they were given.

    pymatgen objects go through pymatgen's own ``AseAtomsAdaptor``.

    Raises:
        ValueError: a disordered or partially occupied structure (one species per site is needed), or
            an object of another type.
    """
    if hasattr(obj, "get_positions") and hasattr(obj, "numbers"):
        return obj.copy(), "ase"
    if hasattr(obj, "sites") and hasattr(obj, "is_ordered"):
        if not obj.is_ordered:
            raise ValueError(
                f"{source}: {obj.composition.reduced_formula} is disordered or partially occupied; give an "
                "ordered structure (one species per site, e.g. from pymatgen's OrderDisorderedStructureTransformation)"
            )
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(obj), "pymatgen"
    raise ValueError(f"{source}: expected an ase.Atoms or a pymatgen Structure, got {type(obj).__name__}")


def like(atoms: Any, kind: str) -> Any:
    """``atoms`` as the kind :func:`as_atoms` reported (``"pymatgen"``: a ``Structure``/``Molecule``)."""
    if kind != "pymatgen":
        return atoms
    from pymatgen.io.ase import AseAtomsAdaptor

    if any(atoms.pbc):
        return AseAtomsAdaptor.get_structure(atoms)
    return AseAtomsAdaptor.get_molecule(atoms)
