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
