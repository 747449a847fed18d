"""Field names of the atomistic tensor records — the only place they are spelled.

A single structure is a ``dict[str, Tensor]`` (a *record*); a batch is the same dict with the
records concatenated (see :mod:`quintet.atomistic.batch`). Every key has a *kind* that tells
collate how to combine records:

- ``node``: one row per atom, concatenated;
- ``edge``: one row per edge, concatenated;
- ``graph``: one entry per structure, stacked (a record holds it without the batch dimension);
- ``index``: a ``(2, E)`` atom-index tensor, concatenated along dim 1 and offset by the atom count.

Units: Å, eV, eV/Å, eV/Å³. Models may register extra keys with :func:`register_key`.
"""

from __future__ import annotations

from typing import Final, Literal

Kind = Literal["node", "edge", "graph", "index"]

# --- per atom -------------------------------------------------------------------------------
POSITIONS: Final[str] = "pos"  # (N, 3) float, Cartesian positions, Å
ATOMIC_NUMBERS: Final[str] = "z"  # (N,) long, atomic numbers 1..118
FORCES: Final[str] = "forces"  # (N, 3) float, eV/Å
DEFECT: Final[str] = "defect"  # (N,) long, 0 pristine, 1 substitution, 2 vacancy placeholder
FIXED: Final[str] = "fixed"  # (N,) bool, atoms held fixed (masked in force losses)
RELAXED_POSITIONS: Final[str] = (
    "relaxed_pos"  # (N, 3) float, relaxed positions unwrapped to the unrelaxed images, Å
)
BATCH: Final[str] = "batch"  # (N,) long, index of the structure each atom belongs to (batches only)
ATOM_ENERGY: Final[str] = "atom_energy"  # (N,) float, per-atom energy contribution, eV

# --- per structure --------------------------------------------------------------------------
CELL: Final[str] = (
    "cell"  # (3, 3) per record, (B, 3, 3) batched; rows are lattice vectors, Å (zeros if no cell)
)
PBC: Final[str] = "pbc"  # (3,) bool per record, (B, 3) batched
NUM_ATOMS: Final[str] = "num_atoms"  # () long per record, (B,) batched
ENERGY: Final[str] = "energy"  # () float per record, (B,) batched, total energy, eV
STRESS: Final[str] = "stress"  # (3, 3) per record, (B, 3, 3) batched, eV/Å³ (ASE sign convention)
RELAXED_CELL: Final[str] = "relaxed_cell"  # (3, 3) per record, (B, 3, 3) batched, Å
STRUCTURE_ID: Final[str] = "structure_id"  # () long per record: index of the structure in its dataset

# --- per edge -------------------------------------------------------------------------------
EDGE_INDEX: Final[str] = "edge_index"  # (2, E) long; row 0 = centre i (receives), row 1 = neighbour j
EDGE_SHIFT: Final[str] = "edge_shift"  # (E, 3) float, integer cell multiples S: r_ij = r_j - r_i + S @ cell
EDGE_VECTORS: Final[str] = "edge_vec"  # (E, 3) float, r_j - r_i + S @ cell, Å
EDGE_LENGTHS: Final[str] = "edge_len"  # (E,) float, |edge_vec|, Å

KINDS: dict[str, Kind] = {
    POSITIONS: "node",
    ATOMIC_NUMBERS: "node",
    FORCES: "node",
    DEFECT: "node",
    FIXED: "node",
    RELAXED_POSITIONS: "node",
    BATCH: "node",
    ATOM_ENERGY: "node",
    CELL: "graph",
    PBC: "graph",
    NUM_ATOMS: "graph",
    ENERGY: "graph",
    STRESS: "graph",
    RELAXED_CELL: "graph",
    STRUCTURE_ID: "graph",
    EDGE_INDEX: "index",
    EDGE_SHIFT: "edge",
    EDGE_VECTORS: "edge",
    EDGE_LENGTHS: "edge",
}


def register_key(name: str, kind: Kind) -> str:
    """Declare a model-specific field so collate knows how to batch it; returns ``name``.

    Raises:
        ValueError: the key already exists with another kind, or the kind is unknown.
    """
    if kind not in ("node", "edge", "graph", "index"):
        raise ValueError(f"unknown key kind {kind!r}")
    old = KINDS.get(name)
    if old is not None and old != kind:
        raise ValueError(f"key {name!r} is already registered as {old!r}, not {kind!r}")
    KINDS[name] = kind
    return name


def kind_of(name: str) -> Kind:
    """The kind of a key; unknown keys raise an error that lists the registered ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(
            f"unknown record key {name!r}; register it with quintet.atomistic.keys.register_key "
            f"(known: {sorted(KINDS)})"
        ) from None
