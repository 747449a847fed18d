"""Write the prototype cells that `quintet data relax-pairs` cannot build from a short spec.

Run once (ASE only); the CIFs are committed next to this script:
    python datasets/bulk_chgnet/make_prototypes.py
"""

from pathlib import Path

from ase.build import bulk
from ase.io import write
from ase.spacegroup import crystal

HERE = Path(__file__).resolve().parent / "prototypes"
HERE.mkdir(exist_ok=True)

protos = {
    # rutile TiO2, P4_2/mnm, 6 atoms
    "TiO2_rutile": crystal(
        ["Ti", "O"],
        basis=[(0, 0, 0), (0.3048, 0.3048, 0)],
        spacegroup=136,
        cellpar=[4.594, 4.594, 2.959, 90, 90, 90],
    ),
    # normal spinel MgAl2O4, Fd-3m origin choice 2, primitive rhombohedral cell (14 atoms)
    "MgAl2O4_spinel_prim": crystal(
        ["Mg", "Al", "O"],
        basis=[(0.125, 0.125, 0.125), (0.5, 0.5, 0.5), (0.2624, 0.2624, 0.2624)],
        spacegroup=227,
        setting=2,
        cellpar=[8.08, 8.08, 8.08, 90, 90, 90],
        primitive_cell=True,
    ),
    # layered LiCoO2 (alpha-NaFeO2 type), R-3m, hexagonal cell (12 atoms)
    "LiCoO2_layered_hex": crystal(
        ["Li", "Co", "O"],
        basis=[(0, 0, 0), (0, 0, 0.5), (0, 0, 0.2396)],
        spacegroup=166,
        cellpar=[2.816, 2.816, 14.05, 90, 90, 120],
    ),
    # primitive (non-cubic) settings of cubic prototypes
    "MgO_rocksalt_prim": bulk("MgO", "rocksalt", a=4.21),
    "ZnS_zincblende_prim": bulk("ZnS", "zincblende", a=5.41),
    "CeO2_fluorite_prim": bulk("CeO2", "fluorite", a=5.41),
}
for name, atoms in protos.items():
    write(HERE / f"{name}.cif", atoms)
    print(name, len(atoms), atoms.get_chemical_formula(), atoms.cell.cellpar().round(3))
