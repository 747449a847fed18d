"""Shipped physics checks for atomistic models (use them in your own model tests too).

Every check takes a *model function* ``fn(batch) -> dict[str, Tensor]`` that maps a collated batch
(positions, atomic numbers, cell, pbc, batch, num_atoms, and whatever extra record fields the
records carry — no edges: the model builds its own graph) to outputs, and names which outputs are

- ``invariant``: unchanged by rotations, translations and permutations (energies, distances, σ);
- ``vectors``: per-atom (N, 3) vectors that rotate with the structure and ignore translations (forces);
- ``positions``: per-atom (N, 3) points that rotate *and* translate with it (predicted positions);
- ``tensors``: per-structure (3, 3) rank-2 tensors, R T Rᵀ under rotations (stress).

Rotations are applied about the origin to positions *and* cell rows, so periodic structures stay
the same crystal. Compare in float64 where possible: equivariance errors then sit near 1e-10.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate

__all__ = [
    "ModelFn",
    "assert_batch_matches_single",
    "assert_cell_setting_consistent",
    "assert_forces_match_fd",
    "assert_permutation_equivariant",
    "assert_rotation_equivariant",
    "assert_stress_match_fd",
    "assert_supercell_consistent",
    "assert_translation_invariant",
    "example_records",
    "random_rotation",
]

ModelFn = Callable[[dict[str, Tensor]], Mapping[str, Tensor]]
Records = Sequence[Mapping[str, Tensor]]


def random_rotation(seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """A uniformly random proper rotation matrix (det = +1)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def _close(a: Tensor, b: Tensor, what: str, atol: float, rtol: float) -> None:
    if a.shape != b.shape:
        raise AssertionError(f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}")
    err = (a - b).abs().max().item() if a.numel() else 0.0
    tol = atol + rtol * (b.abs().max().item() if b.numel() else 0.0)
    if not err <= tol:
        raise AssertionError(f"{what}: max abs error {err:.3e} > tolerance {tol:.3e}")


def _not_vacuous(out: Mapping[str, Tensor], names: Sequence[str], what: str) -> None:
    for k in names:
        if out[k].numel() and float(out[k].abs().max()) < 1e-10:
            raise AssertionError(f"{what}: output {k!r} is identically zero, so the check would prove nothing")


def _run(fn: ModelFn, records: Records) -> dict[str, Tensor]:
    out = fn(collate([dict(r) for r in records]))
    return {k: v.detach() for k, v in out.items()}


def _transform(
    records: Records, rot: Tensor | None = None, shift: Tensor | None = None
) -> list[dict[str, Tensor]]:
    out = []
    for r in records:
        r2 = dict(r)
        pos = r[K.POSITIONS]
        if rot is not None:
            rt = rot.to(pos.dtype)
            pos = pos @ rt.T
            r2[K.CELL] = r[K.CELL] @ rt.T
            for key in (K.RELAXED_POSITIONS, K.RELAXED_CELL):
                if key in r:
                    r2[key] = r[key] @ rt.T
        if shift is not None:
            pos = pos + shift.to(pos.dtype)
            if K.RELAXED_POSITIONS in r:
                r2[K.RELAXED_POSITIONS] = r2[K.RELAXED_POSITIONS] + shift.to(pos.dtype)
        r2[K.POSITIONS] = pos
        out.append(r2)
    return out


def assert_rotation_equivariant(
    fn: ModelFn,
    records: Records,
    invariant: Sequence[str] = (),
    vectors: Sequence[str] = (),
    positions: Sequence[str] = (),
    tensors: Sequence[str] = (),
    seed: int = 0,
    atol: float = 1e-6,
    rtol: float = 1e-6,
) -> None:
    """Outputs transform correctly when positions and cell rotate by a random rotation R."""
    rot = random_rotation(seed)
    ref = _run(fn, records)
    _not_vacuous(ref, (*vectors, *positions, *tensors), "rotation")
    out = _run(fn, _transform(records, rot=rot))
    for k in invariant:
        _close(out[k], ref[k], f"rotation: invariant output {k!r}", atol, rtol)
    for k in (*vectors, *positions):
        _close(out[k], ref[k] @ rot.to(ref[k].dtype).T, f"rotation: vector output {k!r}", atol, rtol)
    for k in tensors:
        r = rot.to(ref[k].dtype)
        _close(out[k], r @ ref[k] @ r.T, f"rotation: tensor output {k!r}", atol, rtol)


def assert_translation_invariant(
    fn: ModelFn,
    records: Records,
    invariant: Sequence[str] = (),
    vectors: Sequence[str] = (),
    positions: Sequence[str] = (),
    tensors: Sequence[str] = (),
    seed: int = 0,
    atol: float = 1e-6,
    rtol: float = 1e-6,
) -> None:
    """A rigid translation leaves invariants, vectors, tensors unchanged; ``positions`` outputs move."""
    g = torch.Generator().manual_seed(seed + 1)
    t = torch.randn(3, generator=g, dtype=torch.float64) * 3.0
    ref = _run(fn, records)
    out = _run(fn, _transform(records, shift=t))
    for k in (*invariant, *vectors, *tensors):
        _close(out[k], ref[k], f"translation: output {k!r}", atol, rtol)
    for k in positions:
        _close(out[k], ref[k] + t.to(ref[k].dtype), f"translation: position output {k!r}", atol, rtol)


def assert_permutation_equivariant(
    fn: ModelFn,
    records: Records,
    graph_outputs: Sequence[str] = (),
    node_outputs: Sequence[str] = (),
    seed: int = 0,
    atol: float = 1e-6,
    rtol: float = 1e-6,
) -> None:
    """Shuffling atoms inside each structure permutes per-atom outputs and leaves per-structure ones alone."""
    g = torch.Generator().manual_seed(seed + 2)
    perms, shuffled = [], []
    for r in records:
        n = r[K.POSITIONS].shape[0]
        p = torch.randperm(n, generator=g)
        perms.append(p)
        shuffled.append({k: (v[p] if K.kind_of(k) == "node" else v) for k, v in r.items()})
    ref = _run(fn, records)
    out = _run(fn, shuffled)
    offsets = np.cumsum([0] + [r[K.POSITIONS].shape[0] for r in records])
    full = torch.cat([p + int(o) for p, o in zip(perms, offsets[:-1], strict=True)])
    for k in graph_outputs:
        _close(out[k], ref[k], f"permutation: per-structure output {k!r}", atol, rtol)
    for k in node_outputs:
        _close(out[k], ref[k][full], f"permutation: per-atom output {k!r}", atol, rtol)


def assert_supercell_consistent(
    fn: ModelFn,
    record: Mapping[str, Tensor],
    reps: tuple[int, int, int] = (2, 1, 1),
    extensive: Sequence[str] = (),
    intensive: Sequence[str] = (),
    node_outputs: Sequence[str] = (),
    atol: float = 1e-6,
    rtol: float = 1e-6,
) -> None:
    """A periodic ``reps`` supercell has ∏reps × the extensive outputs and the same per-atom outputs."""
    if not bool(record[K.PBC].all()):
        raise ValueError("the supercell check needs a fully periodic record")
    n = record[K.POSITIONS].shape[0]
    cell = record[K.CELL]
    shifts = [
        torch.tensor([a, b, c], dtype=cell.dtype) @ cell
        for a in range(reps[0])
        for b in range(reps[1])
        for c in range(reps[2])
    ]
    m = len(shifts)
    sup = {}
    for k, v in record.items():
        if k == K.POSITIONS:
            sup[k] = torch.cat([v + s for s in shifts])
        elif k == K.CELL:
            sup[k] = cell * torch.tensor(reps, dtype=cell.dtype).unsqueeze(-1)
        elif K.kind_of(k) == "node":
            sup[k] = torch.cat([v] * m)
        elif k in (K.ENERGY,):
            sup[k] = v * m
        else:
            sup[k] = v
    ref = _run(fn, [record])
    out = _run(fn, [sup])
    for k in extensive:
        _close(out[k], ref[k] * m, f"supercell: extensive output {k!r}", atol, rtol)
    for k in intensive:
        _close(out[k], ref[k], f"supercell: intensive output {k!r}", atol, rtol)
    for k in node_outputs:
        _close(out[k], torch.cat([ref[k]] * m), f"supercell: per-atom output {k!r}", atol, rtol)
    assert out[node_outputs[0]].shape[0] == n * m if node_outputs else True


def assert_cell_setting_consistent(
    relax: Callable[[Any], Any], atoms: Any, transform: Sequence[Sequence[int]] = ((1, 0, 0), (0, 1, 0), (1, 0, 1)),
    atol: float = 1e-4,
) -> None:
    """A relaxer gives the same relaxed crystal when the input's cell is written in another basis of its lattice.

    ``relax`` maps an ASE ``Atoms`` to its relaxed ``Atoms`` (e.g. ``lambda a: quintet.deeprelax.relax(a, model=m)``).
    The input is relaxed as given and with cell rows ``transform @ cell`` (atoms wrapped into it); the second
    relaxed cell must be ``transform @`` the first, and every atom must sit at the same place up to a lattice
    translation of the relaxed cell.
    """
    t = np.asarray(transform)
    other = atoms.copy()
    other.set_cell(t @ atoms.cell[:], scale_atoms=False)
    other.wrap()
    a, b = relax(atoms), relax(other)
    if not np.allclose(b.cell[:], t @ a.cell[:], atol=atol):
        raise AssertionError(f"cell setting {t.tolist()}: relaxed cell {b.cell[:].tolist()} != {(t @ a.cell[:]).tolist()}")
    d = b.cell.scaled_positions(b.positions) - b.cell.scaled_positions(a.positions)
    off = np.abs((d - np.round(d)) @ b.cell[:]).max()
    if off > atol:
        raise AssertionError(f"cell setting {t.tolist()}: an atom's relaxed position differs by {off:.2e} Å")


def assert_forces_match_fd(
    fn: ModelFn,
    record: Mapping[str, Tensor],
    energy_key: str = K.ENERGY,
    forces_key: str = K.FORCES,
    eps: float = 1e-4,
    n_checks: int = 6,
    seed: int = 0,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Forces equal −∂E/∂r by central finite differences on random atom components (use float64)."""
    rec = dict(record)
    forces = _run(fn, [rec])[forces_key]
    _not_vacuous({forces_key: forces}, (forces_key,), "forces vs FD")
    g = torch.Generator().manual_seed(seed + 3)
    n = rec[K.POSITIONS].shape[0]
    for _ in range(n_checks):
        a = int(torch.randint(n, (1,), generator=g))
        c = int(torch.randint(3, (1,), generator=g))
        e = []
        for sign in (1.0, -1.0):
            pos = rec[K.POSITIONS].clone()
            pos[a, c] += sign * eps
            e.append(_run(fn, [{**rec, K.POSITIONS: pos}])[energy_key].sum())
        fd = -(e[0] - e[1]) / (2 * eps)
        _close(
            forces[a, c].reshape(()),
            fd.reshape(()).to(forces.dtype),
            f"forces vs FD (atom {a}, {c})",
            atol,
            rtol,
        )


def assert_stress_match_fd(
    fn: ModelFn,
    record: Mapping[str, Tensor],
    energy_key: str = K.ENERGY,
    stress_key: str = K.STRESS,
    eps: float = 1e-5,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Stress equals (1/V) ∂E/∂ε for a symmetric strain ε applied to cell and positions (ASE convention)."""
    rec = dict(record)
    stress = _run(fn, [rec])[stress_key].reshape(3, 3)
    cell = rec[K.CELL]
    vol = torch.abs(torch.det(cell))
    for a, b in ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)):
        e = []
        for sign in (1.0, -1.0):
            strain = torch.eye(3, dtype=cell.dtype)
            strain[a, b] += sign * eps / (1 if a == b else 2)
            if a != b:
                strain[b, a] += sign * eps / 2
            e.append(
                _run(fn, [{**rec, K.POSITIONS: rec[K.POSITIONS] @ strain, K.CELL: cell @ strain}])[
                    energy_key
                ].sum()
            )
        fd = (e[0] - e[1]) / (2 * eps) / vol
        _close(
            stress[a, b].reshape(()), fd.reshape(()).to(stress.dtype), f"stress vs FD ({a},{b})", atol, rtol
        )


def assert_batch_matches_single(
    fn: ModelFn,
    records: Records,
    graph_outputs: Sequence[str] = (),
    node_outputs: Sequence[str] = (),
    atol: float = 1e-6,
    rtol: float = 1e-6,
) -> None:
    """Running a batch gives the same outputs as running each structure alone."""
    out = _run(fn, records)
    offset = 0
    for g, r in enumerate(records):
        single = _run(fn, [r])
        n = r[K.POSITIONS].shape[0]
        for k in graph_outputs:
            _close(out[k][g : g + 1], single[k], f"batch vs single: {k!r} of structure {g}", atol, rtol)
        for k in node_outputs:
            _close(
                out[k][offset : offset + n], single[k], f"batch vs single: {k!r} of structure {g}", atol, rtol
            )
        offset += n


def _atoms_to_record(atoms, dtype: torch.dtype) -> dict[str, Tensor]:  # type: ignore[no-untyped-def]
    return {
        K.POSITIONS: torch.tensor(atoms.get_positions(), dtype=dtype),
        K.ATOMIC_NUMBERS: torch.tensor(atoms.get_atomic_numbers(), dtype=torch.long),
        K.CELL: torch.tensor(np.asarray(atoms.cell.array), dtype=dtype),
        K.PBC: torch.tensor(np.asarray(atoms.pbc), dtype=torch.bool),
    }


def example_records(dtype: torch.dtype = torch.float64, seed: int = 0) -> dict[str, dict[str, Tensor]]:
    """Small, varied test structures: a rattled periodic Cu-Ni cell, a triclinic cell smaller than a
    typical cutoff, a 2D MoS2 slab (pbc T,T,F) and an ethanol molecule (no cell)."""
    from ase.build import bulk, molecule, mx2

    rng = np.random.default_rng(seed)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    cu.numbers[[1, 5]] = 28
    cu.positions += rng.normal(scale=0.08, size=cu.positions.shape)
    tri = bulk("Al", "fcc", a=4.05)  # primitive, triclinic, 1 atom, much smaller than the cutoff
    tri = tri.repeat((2, 1, 1))
    tri.positions += rng.normal(scale=0.05, size=tri.positions.shape)
    slab = mx2("MoS2", size=(2, 2, 1), vacuum=None)
    slab.pbc = (True, True, False)
    slab.positions += rng.normal(scale=0.05, size=slab.positions.shape)
    mol = molecule("CH3CH2OH")
    mol.positions += rng.normal(scale=0.03, size=mol.positions.shape)
    return {
        "bulk": _atoms_to_record(cu, dtype),
        "triclinic": _atoms_to_record(tri, dtype),
        "slab": _atoms_to_record(slab, dtype),
        "molecule": _atoms_to_record(mol, dtype),
    }
