"""Oracle data generation: calculators by name, structure specs, relaxation, MD (resumable), pair sets."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT

from quintet.atomistic import keys as K
from quintet.atomistic import oracle as O
from quintet.atomistic.datasets import RelaxPairDataset
from quintet.atomistic.oracle import (
    DefectPairsConfig,
    MDConfig,
    RelaxPairsConfig,
    build_structure,
    get_calculator,
    make_defect_pairs,
    make_relax_pairs,
    relax,
    run_md,
)
from quintet.atomistic.structures import read_structure, read_structures


def test_calculators_by_name() -> None:
    assert isinstance(get_calculator("EMT"), EMT)
    lj = get_calculator("ase.calculators.lj:LennardJones")
    assert type(lj).__name__ == "LennardJones"
    with pytest.raises(ValueError, match=r"unknown oracle 'dft'.*chgnet"):
        get_calculator("dft")


def test_missing_oracle_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake(name: str, *a: object, **k: object) -> object:
        if name.startswith("tblite"):
            raise ImportError("No module named 'tblite'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(RuntimeError, match=r"oracle 'xtb' is not installed: install the 'oracles' extra"):
        get_calculator("xtb")


def test_structure_specs(tmp_path: Path) -> None:
    cu = build_structure("Cu:fcc:3.61", (2, 1, 1))
    assert len(cu) == 8 and np.allclose(cu.cell.lengths(), [7.22, 3.61, 3.61])
    mos2 = build_structure("MoS2:mx2")
    assert mos2.get_chemical_formula() == "MoS2" and mos2.pbc.tolist() == [True, True, False]
    assert len(build_structure("CH3CH2OH")) == 9
    hbn = build_structure("BN:graphene:2.50", (2, 2, 1))
    assert hbn.get_chemical_formula() == "B4N4" and hbn.pbc.tolist() == [True, True, False]
    cu.write(tmp_path / "cu.cif")
    assert len(build_structure(str(tmp_path / "cu.cif"), (1, 1, 2))) == 16
    with pytest.raises(ValueError, match="unknown crystal 'fccc'"):
        build_structure("Cu:fccc")
    with pytest.raises(ValueError, match="neither a file"):
        build_structure("notamolecule")
    with pytest.raises(FileNotFoundError, match=r"missing\.cif"):
        build_structure(str(tmp_path / "missing.cif"))


def test_perovskite_spec() -> None:
    sto = build_structure("SrTiO3:perovskite:3.9", (2, 1, 1))
    assert sto.get_chemical_formula() == "O6Sr2Ti2" and np.isclose(sto.get_volume(), 2 * 3.9**3)
    big = build_structure("SrTiO3:perovskite:3.9", (2, 2, 2))  # six distinct X around each B
    d = big.get_all_distances(mic=True)
    ti, o = np.flatnonzero(big.symbols == "Ti"), big.symbols == "O"
    # each B site sits in an octahedron of six X at a/2
    for i in ti:
        assert np.isclose(np.sort(d[i, o])[:6], 1.95).all() and np.sort(d[i, o])[6] > 3.0
    with pytest.raises(ValueError, match="expected an ABX3 formula"):
        build_structure("SrTiO2:perovskite")


def test_sublattice_rules_parse_and_fail_clearly() -> None:
    rules = O._parse_sublattices(["Sr:Ca,Ba", "Ti:Ti,Zr,Nb/2"])
    assert rules == [O.Sublattice("Sr", ("Ca", "Ba"), 1), O.Sublattice("Ti", ("Ti", "Zr", "Nb"), 2)]
    for bad, msg in [
        ("Ti:Zr/3", r"k=3 needs 1 <= k <= 1"),
        ("Ti:Zr,Xx", "unknown element 'Xx'"),
        ("Ti", "must look like"),
        ("Ti:Zr,Nb/two", "must be an integer"),
    ]:
        with pytest.raises(ValueError, match=msg):
            RelaxPairsConfig(sublattices=[bad])
    with pytest.raises(ValueError, match="given twice"):
        RelaxPairsConfig(sublattices=["Ti:Zr", "Ti:Nb"])
    with pytest.raises(ValueError, match="three repetitions"):
        RelaxPairsConfig(supercells=[(2, 0, 1)])


def test_relax_pairs_with_sublattices_and_drawn_supercells(tmp_path: Path) -> None:
    # fcc Cu: the conventional cell's four sites take two distinct elements, two sites each
    cfg = RelaxPairsConfig(
        out=tmp_path / "ord", n=6, prototypes=["Cu:fcc:3.7"], supercells=[(1, 1, 1), (2, 1, 1)],
        sublattices=["Cu:Cu,Ni,Pd,Au/2"], strain=0.0, rattle=0.02, cell_filter="unitcell", seed=4,
    )  # fmt: skip
    ds = RelaxPairDataset(make_relax_pairs(cfg, progress=False), dtype=torch.float64)
    sizes = set()
    for k in range(len(ds)):
        u, r = ds.atoms(k)
        counts = np.unique(u.numbers, return_counts=True)[1]
        assert len(counts) == 2 and counts[0] == counts[1] == len(u) // 2
        assert (u.numbers == r.numbers).all()
        sizes.add(len(u))
    assert sizes == {4, 8}  # both supercells were drawn
    with pytest.raises(ValueError, match=r"sublattice 'Cu' has 1 sites, too few for 2"):
        make_relax_pairs(
            RelaxPairsConfig(out=tmp_path / "x", prototypes=["Cu:sc:2.5"], sublattices=["Cu:Ni,Pd/2"]),
            progress=False,
        )


def test_relax_lowers_energy_to_fmax() -> None:
    atoms = build_structure("Cu:fcc:3.61", (2, 2, 2))
    atoms.rattle(0.1, seed=0)
    res = relax(atoms, EMT(), fmax=0.02, max_steps=300)
    assert res.converged and res.fmax_final < 0.02 and res.e_final < res.e_initial
    assert res.steps > 0 and np.allclose(res.atoms.cell[:], atoms.cell[:])
    # cell relaxation of a strained cell moves the lattice constant back towards EMT's minimum (≈3.59 Å)
    strained = build_structure("Cu:fcc:3.80")
    cell_res = relax(strained, EMT(), fmax=0.01, relax_cell=True, cell_filter="unitcell")
    assert abs(cell_res.atoms.cell.lengths()[0] - 3.59) < 0.02
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        relax(atoms, EMT(), optimizer="lbfgs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown cell filter"):
        relax(atoms, EMT(), relax_cell=True, cell_filter="exp")  # type: ignore[arg-type]


def _md_cfg(out: Path, **kw: object) -> MDConfig:
    base = dict(
        out=out,
        structure="Cu:fcc:3.61",
        supercell=(2, 2, 2),
        vacancies=1,
        steps=60,
        stride=5,
        chunk_frames=4,
        equilibration_steps=10,
        temperature_K=500.0,
    )
    base.update(kw)
    return MDConfig(**base)  # type: ignore[arg-type]


def test_md_frames_labels_and_exact_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = run_md(_md_cfg(tmp_path / "a" / "md.extxyz"), progress=False)
    frames = read_structures(full)
    assert len(frames) == 12 and len(frames[0]) == 31
    assert frames[-1].info["step"] == 60
    e = frames[3].get_potential_energy()
    calc = EMT()
    probe = frames[3].copy()
    probe.calc = calc
    assert probe.get_potential_energy() == pytest.approx(e, abs=1e-5)
    assert np.allclose(probe.get_forces(), frames[3].get_forces(), atol=1e-5)
    assert frames[3].get_stress().shape == (6,)
    assert not (full.parent / "md.extxyz.parts").exists()
    assert (full.parent / "md.config.yaml").is_file() and (full.parent / "md.summary.json").is_file()

    # interrupted after two chunks, then resumed: the same frames as the uninterrupted run
    calls = {"n": 0}
    real_write = O.write_structure

    def crash_on_third_chunk(path: Path, atoms: object, format: str | None = None) -> Path:
        if "chunk_" in str(path):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real_write(path, atoms, format)

    monkeypatch.setattr(O, "write_structure", crash_on_third_chunk)
    out_b = tmp_path / "b" / "md.extxyz"
    with pytest.raises(KeyboardInterrupt):
        run_md(_md_cfg(out_b), progress=False)
    assert not out_b.exists() and len(list((out_b.parent / "md.extxyz.parts").glob("chunk_*"))) == 2
    monkeypatch.setattr(O, "write_structure", real_write)
    resumed = read_structures(run_md(_md_cfg(out_b), progress=False))
    assert len(resumed) == 12
    for x, y in zip(frames, resumed, strict=True):
        assert np.allclose(x.positions, y.positions, atol=1e-6)
        assert x.get_potential_energy() == pytest.approx(y.get_potential_energy(), abs=1e-6)


def test_md_molecule_nvt(tmp_path: Path) -> None:
    cfg = MDConfig(
        out=tmp_path / "ch4.extxyz",
        structure="CH4",
        ensemble="nvt",
        timestep_fs=0.25,
        steps=40,
        stride=10,
        equilibration_steps=0,
        temperature_K=300.0,
    )
    frames = read_structures(run_md(cfg, progress=False))
    assert len(frames) == 4 and not frames[0].pbc.any()
    assert "stress" not in frames[0].calc.results
    assert np.isfinite(frames[-1].get_forces()).all()


def test_md_bad_settings() -> None:
    with pytest.raises(ValueError, match="stride"):
        MDConfig(steps=5, stride=10)


def test_relax_pairs_layout_resume_and_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = RelaxPairsConfig(out=tmp_path / "rp", n=3, cell_filter="unitcell", max_steps=200, seed=1)
    out = make_relax_pairs(cfg, progress=False)
    ds = RelaxPairDataset(out, dtype=torch.float64)
    assert ds.ids == ["emt_s1_00000", "emt_s1_00001", "emt_s1_00002"]
    assert ds.meta["emt_s1_00001"]["oracle"] == "emt" and int(ds.meta["emt_s1_00001"]["steps"]) > 0
    _u, r = ds.atoms(1)
    r.calc = EMT()
    # the stored relaxed structure is an EMT minimum (CIF precision allows a little slack)
    assert np.abs(r.get_forces()).max() < 0.08
    assert float(ds.meta["emt_s1_00001"]["e_relaxed"]) < float(ds.meta["emt_s1_00001"]["e_unrelaxed"])
    assert (out / "config.yaml").is_file()
    # resume: only the missing id is made; the rest are untouched and the remade one is identical
    before = (out / "CIF" / "emt_s1_00002_relaxed.cif").read_text()
    lines = (out / "meta.csv").read_text().splitlines()
    (out / "meta.csv").write_text("\n".join(lines[:-1]) + "\n")
    made = []
    real = O.relax
    monkeypatch.setattr(O, "relax", lambda *a, **k: made.append(1) or real(*a, **k))
    make_relax_pairs(cfg, progress=False)
    assert len(made) == 1
    assert (out / "CIF" / "emt_s1_00002_relaxed.cif").read_text() == before
    with pytest.raises(ValueError, match=r"other settings \(differs in \['seed'\]\)"):
        make_relax_pairs(
            RelaxPairsConfig(out=tmp_path / "rp", n=3, cell_filter="unitcell", max_steps=200, seed=2)
        )


def test_defect_pairs_labels_match_meta(tmp_path: Path) -> None:
    cfg = DefectPairsConfig(
        out=tmp_path / "dp", host="Cu:fcc:3.61", supercell=(2, 2, 2), n=4, max_defects=3, seed=2
    )
    folder = make_defect_pairs(cfg, progress=False)
    assert folder.name == "Cu"
    unit = read_structure(folder / "Cu.cif")
    assert abs(unit.cell.lengths()[0] - 3.59) < 0.02  # the host was relaxed by the oracle first
    assert len(read_structure(folder / "Cu_pristine_supercell.cif")) == 32
    ds = RelaxPairDataset(folder, layout="2dmd", dtype=torch.float64)
    assert len(ds) == 4
    for k, pid in enumerate(ds.ids):
        tags = ds.meta[pid]["defects"].split(";")
        rec = ds[k]
        assert int((rec[K.DEFECT] == 2).sum()) == sum(t.startswith("vac_") for t in tags)
        assert int((rec[K.DEFECT] == 1).sum()) == sum(t.startswith("sub_") for t in tags)
        assert rec[K.POSITIONS].shape[0] == 32  # vacancy placeholders restore the pristine count
        moved = (rec[K.RELAXED_POSITIONS] - rec[K.POSITIONS]).norm(dim=1)
        assert (
            moved.max() < 0.5 and moved[rec[K.DEFECT] == 2].abs().max() == 0
            if (rec[K.DEFECT] == 2).any()
            else True
        )


def test_xtb_molecule_md_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("tblite.ase", reason="the 'oracles' extra (tblite) is not installed")
    cfg = MDConfig(
        out=tmp_path / "h2o.extxyz",
        structure="H2O",
        oracle="xtb",
        timestep_fs=0.5,
        steps=10,
        stride=5,
        equilibration_steps=0,
    )
    frames = read_structures(run_md(cfg, progress=False))
    assert len(frames) == 2 and frames[0].info["oracle"] == "xtb"
    # GFN2-xTB total energy of water is about -137 eV (≈ -5.07 Hartree)
    assert -140 < frames[0].get_potential_energy() < -134


def test_failing_oracle_names_the_pair_and_keeps_the_rest(tmp_path: Path) -> None:
    class Exploding(EMT):
        calls = 0

        def calculate(self, *a: object, **k: object) -> None:
            super().calculate(*a, **k)
            Exploding.calls += 1
            if Exploding.calls > 40:
                self.results["energy"] = float("nan")

    cfg = RelaxPairsConfig(out=tmp_path / "rp", n=5, cell_filter="unitcell", relax_cell=False)
    with pytest.raises(RuntimeError, match=r"pair Exploding_s0_0000\d failed .*non-finite energy"):
        make_relax_pairs(cfg, calc=Exploding(), progress=False)
    ds = RelaxPairDataset(tmp_path / "rp")  # the finished pairs form a valid data set
    assert 1 <= len(ds) < 5
