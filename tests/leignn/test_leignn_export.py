"""``quintet leignn export``: the TorchScript file, loaded by a plain ``torch.jit.load``, gives the
energies, forces and stress of the original model on periodic and molecular inputs; bad or
foreign files are refused with the file named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.atomistic.calculator import ModelCalculator
from quintet.atomistic.neighbors import batch_neighbor_list
from quintet.atomistic.structures import from_ase
from quintet.config import config_to_dict
from quintet.leignn.calc import LEIGNNCalculator
from quintet.leignn.export import META_FILE, ExportJob, export, exported_calculator, load_exported
from quintet.leignn.model import LEIGNN, LEIGNNModelConfig
from quintet.train import save_model

VARIANTS = [("leignn", "conservative"), ("leignn", "direct"), ("vanilla", "conservative")]


def cu_cell():
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    a.numbers[2] = 28
    a.rattle(0.1, seed=1)
    return a


def ethanol():
    m = molecule("CH3CH2OH")
    m.rattle(0.05, seed=2)
    return m


def random_model(variant: str, forces: str) -> LEIGNN:
    """A model that knows H, C, O, Ni, Cu and has a non-zero energy head (an untrained one starts at zero)."""
    torch.manual_seed(3)
    model = LEIGNN(
        LEIGNNModelConfig(hidden=16, num_layers=2, num_rbf=8, cutoff=4.0, variant=variant, forces=forces)
    )
    recs = [from_ase(a, dtype=torch.float32, with_results=False) for a in (cu_cell(), ethanol())]
    model.fit_normalisation(recs)
    model.normalisation.energy_shift[[1, 6, 8, 28, 29]] = torch.tensor([-13.6, -1030.0, -2040.0, -4.0, -3.5])
    torch.nn.init.normal_(model.energy_head.net[-1].weight, std=0.5)
    return model.eval()


def model_file(model: LEIGNN, path: Path) -> Path:
    extra = {"system": "leignn", "model": config_to_dict(model.config), "dtype": "float32"}
    return save_model(path, model, {}, extra)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize(("variant", "forces"), VARIANTS)
def test_exported_calculator_matches_the_original(variant: str, forces: str, tmp_path: Path) -> None:
    path = export(ExportJob(model=str(model_file(random_model(variant, forces), tmp_path / "best.pt")),
                            out=str(tmp_path / "model.pt")))  # fmt: skip
    original = LEIGNNCalculator.from_checkpoint(tmp_path / "best.pt")
    exported = exported_calculator(path)
    for atoms in (cu_cell(), ethanol()):
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = original, exported
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), rel=1e-6)
        assert _rel(b.get_forces(), a.get_forces()) < 1e-5
        assert np.abs(a.get_forces()).max() > 1e-3  # a non-trivial model
        if forces == "conservative" and atoms.pbc.all():
            assert _rel(b.get_stress(), a.get_stress()) < 1e-5


def test_plain_torch_jit_load_on_a_batch_of_two(tmp_path: Path) -> None:
    model = random_model("leignn", "conservative")
    path = export(ExportJob(model=str(model_file(model, tmp_path / "best.pt")), out=str(tmp_path / "m.pt")))
    batch = collate([from_ase(a, dtype=torch.float32, with_results=False) for a in (cu_cell(), ethanol())])
    edge_index, shift = batch_neighbor_list(batch, 4.0)
    batch.update({K.EDGE_INDEX: edge_index, K.EDGE_SHIFT: shift})
    ref = model(batch, compute_stress=False)
    m = torch.jit.load(str(path))  # no quintet code involved
    assert m.cutoff == 4.0 and m.max_neighbors == -1 and m.conservative
    out = m(
        batch[K.POSITIONS],
        batch[K.ATOMIC_NUMBERS],
        batch[K.CELL],
        batch[K.BATCH],
        edge_index,
        shift,
        2,
        False,
    )
    assert torch.allclose(out["energy"], ref[K.ENERGY], rtol=1e-6, atol=0)
    assert torch.allclose(out["forces"], ref[K.FORCES], rtol=1e-5, atol=1e-6)
    with pytest.raises(torch.jit.Error, match="not in this model's training data"):
        z = batch[K.ATOMIC_NUMBERS].clone()
        z[0] = 79
        m(batch[K.POSITIONS], z, batch[K.CELL], batch[K.BATCH], edge_index, shift, 2, False)


def test_other_format_versions_and_foreign_files_are_refused(tmp_path: Path) -> None:
    path = export(ExportJob(model=str(model_file(random_model("leignn", "direct"), tmp_path / "b.pt")),
                            out=str(tmp_path / "m.pt")))  # fmt: skip
    module, meta = load_exported(path)
    assert meta["elements"] == ["H", "C", "O", "Ni", "Cu"] and meta["forces"] == "direct"
    old = tmp_path / "old.pt"
    torch.jit.save(module, str(old), _extra_files={META_FILE: json.dumps({**meta, "format_version": 0})})
    with pytest.raises(ValueError, match=r"old\.pt: LEIGNN export format 0 .* reads format 1: re-export"):
        load_exported(old)
    with pytest.raises(ValueError, match=r"b\.pt: not a TorchScript file"):
        load_exported(tmp_path / "b.pt")  # the training model file, not an export
    bare = tmp_path / "bare.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(bare))
    with pytest.raises(ValueError, match=r"bare\.pt: a TorchScript file but not a quintet LEIGNN export"):
        load_exported(bare)
    calc = exported_calculator(path)
    assert isinstance(calc, ModelCalculator) and not calc.supports_stress


def test_md_runs_on_an_exported_file_like_on_the_model_file(tmp_path: Path) -> None:
    """``quintet leignn md -m model.pt`` (exported) gives the same first steps as the model file,
    and an element the model never saw is refused by name before any step."""
    import ase.io

    from quintet.atomistic.md import MDConfig
    from quintet.leignn.export import is_exported
    from quintet.leignn.md import LEIGNNMDJob, md

    best = model_file(random_model("leignn", "conservative"), tmp_path / "best.pt")
    exported = export(ExportJob(model=str(best), out=str(tmp_path / "model.pt")))
    assert is_exported(exported) and not is_exported(best)
    structure = tmp_path / "cu.extxyz"
    ase.io.write(structure, cu_cell())
    runs = {}
    for name, path in (("file", best), ("exported", exported)):
        cfg = MDConfig(ensemble="nve", steps=4, write_every=2, out=str(tmp_path / name))
        res = md(LEIGNNMDJob(model=str(path), structure=str(structure), md=cfg))
        runs[name] = res.thermo_csv.read_text().splitlines()[1:]
    e = {k: np.array([[float(x) for x in row.split(",")] for row in v]) for k, v in runs.items()}
    assert np.allclose(e["file"], e["exported"], rtol=1e-5, atol=1e-6)
    au = bulk("Au", "fcc", a=4.08, cubic=True)
    ase.io.write(tmp_path / "au.extxyz", au)
    with pytest.raises(ValueError, match=r"element\(s\) Au were not in this model's training data"):
        md(LEIGNNMDJob(model=str(exported), structure=str(tmp_path / "au.extxyz"), md=cfg))
