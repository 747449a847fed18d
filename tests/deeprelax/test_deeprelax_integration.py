"""DeepRelax on the real data in ../shared/data/materials (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.deeprelax.graph import DISPLACE
from quintet.deeprelax.jobs import DataConfig, evaluate_model, load_dataset
from quintet.deeprelax.model import DeepRelax, ModelConfig


@pytest.mark.integration
def test_bulk_oxides_load_and_an_untrained_model_equals_the_dummy(shared_data: Path, tmp_path: Path) -> None:
    cfg = ModelConfig(hidden=16, num_layers=1, num_rbf=8)
    data = DataConfig(root=str(shared_data / "materials" / "bulk_oxides"), layout="custom")
    ds = load_dataset(data, "all", cfg)
    assert len(ds) == 50
    rec = ds[0]
    assert int(rec[DISPLACE].sum()) == rec[K.POSITIONS].shape[0] * min(20, rec[K.POSITIONS].shape[0] - 1)
    torch.manual_seed(0)
    summary, _ = evaluate_model(DeepRelax(cfg), ds, batch_size=25, progress=False)
    assert summary["coord_mae_A"] == pytest.approx(summary["dummy_coord_mae_A"], rel=1e-5)
    assert 0.1 < summary["dummy_coord_mae_A"] < 0.3  # README: ≈ 0.17 Å, mostly the cell change
    assert summary["dummy_cell_mae_A"] > 0.05


@pytest.mark.integration
def test_defect_supercells_drop_vacancy_placeholders(shared_data: Path) -> None:
    cfg = ModelConfig(hidden=16, num_layers=1, num_rbf=8, relax_cell=False)
    data = DataConfig(root=str(shared_data / "materials" / "defects2d" / "MoS2"), layout="2dmd")
    ds = load_dataset(data, "test", cfg)
    recs = [ds[k] for k in range(4)]
    for r in recs:
        assert r[K.POSITIONS].shape[0] <= 75  # placeholders dropped (a vacancy leaves 74)
        # CIFs are periodic along z, but the vacuum exceeds the cutoff: no image edges along z
        assert (r[K.EDGE_SHIFT][:, 2] == 0).all()
    out = DeepRelax(cfg)(collate(recs))
    assert torch.equal(out["pred_cell"], collate(recs)[K.CELL])


@pytest.mark.integration
def test_compiled_model_relaxes_like_the_eager_one(tmp_path: Path) -> None:
    """torch.compile (inductor, dynamic shapes) gives the eager results to float32 round-off, through
    ``relax_ensemble`` on batches of two sizes and through ``quintet deeprelax predict --compile``."""
    import csv
    import warnings

    from quintet.atomistic.nn import CompiledModel
    from quintet.atomistic.structures import to_ase, write_structure
    from quintet.atomistic.testing import example_records
    from quintet.cli import main
    from quintet.deeprelax.inference import SolveConfig, relax_ensemble
    from quintet.train.checkpoint import save_model

    recs = example_records(torch.float32)
    recs = [recs["bulk"], recs["triclinic"], recs["slab"]]
    torch.manual_seed(0)
    model = DeepRelax(ModelConfig(hidden=16, num_layers=2, num_rbf=8))
    with torch.no_grad():  # non-trivial heads (their last layers start at zero)
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    model.eval()
    fast = CompiledModel(model)
    solve = SolveConfig(steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fall-back to eager fails the test
        for group in (recs, recs[:2]):
            eager = relax_ensemble([model], collate(group), solve)
            got = relax_ensemble([fast], collate(group), solve)
            for key in ("mu_relaxed", "sigma_relaxed", "mu_displace", "cell", "init_positions", "positions"):
                torch.testing.assert_close(got[key], eager[key], atol=2e-4, rtol=1e-4)
    assert fast.compiled

    path = save_model(tmp_path / "m.pt", model, {}, extra={"system": "deeprelax", "model": model.config_dict()})
    for k, r in enumerate(recs[:2]):
        write_structure(tmp_path / "in" / f"s{k}.cif", to_ase(r))
    unc = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / f"out{len(flag)}"
        assert main(["deeprelax", "predict", "-m", str(path), str(tmp_path / "in"), "-o", str(out), *flag]) == 0
        rows = list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))
        unc[len(flag)] = {r["id"]: float(r["uncertainty_A"]) for r in rows}
    assert "compile: true" in (tmp_path / "out1" / "config.yaml").read_text()
    assert unc[1] == pytest.approx(unc[0], rel=1e-4)
