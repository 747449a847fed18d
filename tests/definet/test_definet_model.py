"""DefiNet model: equivariance (shipped checks), defect gating, zero-displacement start, layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import mx2

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.atomistic.datasets import pair_record
from quintet.atomistic.defects import repeat_unit_cell
from quintet.atomistic.testing import (
    assert_batch_matches_single,
    assert_permutation_equivariant,
    assert_rotation_equivariant,
    assert_supercell_consistent,
    assert_translation_invariant,
)
from quintet.definet.layers import DefectEdgeGate
from quintet.definet.model import PRED_POSITIONS, DefiNet, DefiNetConfig


def _records(dtype=torch.float64):
    unit = mx2("MoS2", size=(1, 1, 1), vacuum=7.0)
    unit.pbc = True
    host = repeat_unit_cell(unit, (3, 3, 1))
    rng = np.random.default_rng(0)
    a = host.copy()
    a.numbers[0] = 74
    del a[[4, 11]]
    a.positions += rng.normal(scale=0.03, size=a.positions.shape)
    b = host.copy()
    b.numbers[5] = 34
    b.positions += rng.normal(scale=0.03, size=b.positions.shape)
    return [pair_record(x, None, host, 0.3, dtype=dtype) for x in (a, b)]


def _model(**kw) -> DefiNet:
    torch.manual_seed(0)
    m = DefiNet(DefiNetConfig(hidden=16, num_layers=2, num_rbf=12, max_neighbors=None, **kw)).double()
    # the coordinate heads start at zero (identity map); perturb them so the checks see real output
    with torch.no_grad():
        for layer in m.layers:
            layer.coord.vec2disp.weight.normal_(std=0.2)
            layer.coord.edge_mlp[2].weight.normal_(std=0.2)
    return m


def _fn(model):
    return lambda batch: model(batch)


def test_untrained_model_returns_its_input_positions():
    m = DefiNet(DefiNetConfig(hidden=16, num_layers=2, num_rbf=8))
    batch = collate(_records(torch.float32))
    out = m(batch, return_layers=True)
    torch.testing.assert_close(out[PRED_POSITIONS], batch[K.POSITIONS])
    assert out["layer_positions"].shape == (2, *batch[K.POSITIONS].shape)


def test_shipped_equivariance_checks_hold():
    m = _model()
    recs = _records()
    fn = _fn(m)
    out = fn(collate(recs))[PRED_POSITIONS]
    assert (out - collate(recs)[K.POSITIONS]).abs().max() > 1e-3  # the model really moves atoms
    assert_rotation_equivariant(fn, recs, positions=[PRED_POSITIONS], atol=1e-9)
    assert_translation_invariant(fn, recs, positions=[PRED_POSITIONS], atol=1e-9)
    assert_permutation_equivariant(fn, recs, node_outputs=[PRED_POSITIONS], atol=1e-9)
    assert_batch_matches_single(fn, recs, node_outputs=[PRED_POSITIONS], atol=1e-9)

    # per-atom displacements of a periodic supercell equal those of the cell (the global node averages)
    def disp(batch):
        return {"disp": m(batch)[PRED_POSITIONS] - batch[K.POSITIONS]}

    assert_supercell_consistent(disp, recs[1], reps=(2, 1, 1), node_outputs=["disp"], atol=1e-9)


def test_defect_labels_change_the_prediction_only_through_the_gates():
    m = _model()
    rec = _records()[1]
    base = m(collate([rec]))[PRED_POSITIONS]
    relabelled = dict(rec)
    relabelled[K.DEFECT] = torch.zeros_like(rec[K.DEFECT])
    other = m(collate([relabelled]))[PRED_POSITIONS]
    assert (base - other).abs().max() > 1e-4
    with pytest.raises(ValueError, match="defect labels"):
        m(collate([{**rec, K.DEFECT: torch.full_like(rec[K.DEFECT], 3)}]))


def test_defect_gate_is_symmetric_and_distinguishes_pairs():
    torch.manual_seed(0)
    gate = DefectEdgeGate(4, 6)
    emb = torch.nn.Embedding(3, 4)
    labels = torch.tensor([0, 1, 2, 0])
    edges = torch.tensor([[0, 1, 1, 2, 0], [1, 0, 2, 1, 3]])
    g = gate(emb(labels), edges)
    torch.testing.assert_close(g[0], g[1])  # (0,1) and (1,0)
    assert not torch.allclose(g[0], g[2])  # pristine–substitution vs substitution–vacancy
    assert not torch.allclose(g[0], g[4])  # pristine–substitution vs pristine–pristine


def test_gradients_reach_every_parameter_after_one_step():
    m = DefiNet(DefiNetConfig(hidden=8, num_layers=2, num_rbf=8))
    batch = collate(_records(torch.float32))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        pred = m(batch)[PRED_POSITIONS]
        loss = (pred - batch[K.POSITIONS] - 0.01).abs().mean()
        loss.backward()
        opt.step()
    # the virtual node starts from layer 0's initial embedding, and the last layer's atoms→node
    # update would feed nothing: those are the only parameters without a gradient
    unused = [n for n, p in m.named_parameters() if p.grad is None]
    assert unused and all(n.startswith("layers.1.global") and ("init" in n or "graph" in n) for n in unused)
    bad = [n for n, p in m.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    zero = [n for n, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() == 0]
    assert not bad
    # in layer 0 the atom vectors and the vector node are still zero, so W(v + G) has no gradient
    assert zero == ["layers.0.global_vector.atom_lin.weight"]


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        DefiNetConfig(hidden=0)
    with pytest.raises(ValueError):
        DefiNetConfig(cutoff=-1.0)
