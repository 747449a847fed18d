"""``algo.apv_norm="unit"``: the APV stays on the unit sphere, and the server's APV similarity then varies.

With ``none`` every client starts from the same a⁽⁰⁾ ~ N(0, I) (norm ≈ √d') and one Adam step moves each
coordinate by about lr, so cos(a_k, a_l) ≈ 1 and the mixing weights are 1/K to a few decimals. On the unit
sphere the same step is a large relative move, so the cosine (and the weights) follow the clients' data.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from quintet.fedaux.algorithms import AlgoConfig, client_round, initial_state, server_aggregate
from quintet.fedaux.data import synthetic_clients
from quintet.fedaux.models import APV_KEY, FedAuxNet
from quintet.fedaux.simulate import simulate


@pytest.fixture(scope="module")
def clients():
    return synthetic_clients(seed=0)


def test_unit_apv_at_init_and_after_every_client_round(clients) -> None:
    cl, info = clients
    unit = AlgoConfig(name="fedaux", hidden=32, apv_norm="unit", local_epochs=3)
    free = AlgoConfig(name="fedaux", hidden=32, apv_norm="none", local_epochs=3)
    f, c = cl[0].x.shape[1], info["num_classes"]
    init_u, init_n = initial_state(unit, f, c, 0), initial_state(free, f, c, 0)
    assert float(init_u[APV_KEY].norm()) == pytest.approx(1.0, abs=1e-6)
    # the same Gaussian draw, only rescaled
    assert torch.allclose(init_u[APV_KEY], init_n[APV_KEY] / init_n[APV_KEY].norm(), atol=1e-7)
    assert float(init_n[APV_KEY].norm()) > 3.0  # ≈ √32 without the option
    local = None
    received = init_u
    for rnd in (1, 2):
        res = client_round(unit, cl[1], c, received, local, rnd, 0)
        assert float(res.upload[APV_KEY].norm()) == pytest.approx(1.0, abs=1e-6)
        assert float(res.local_state[f"model/{APV_KEY}"].norm()) == pytest.approx(1.0, abs=1e-6)
        assert not torch.equal(res.upload[APV_KEY], received[APV_KEY])  # it did train
        local, received = res.local_state, {k: v for k, v in res.upload.items()}
    res_n = client_round(free, cl[1], c, init_n, None, 1, 0)
    assert float(res_n.upload[APV_KEY].norm()) > 3.0


def test_a_received_mix_is_put_back_on_the_sphere_before_training(clients) -> None:
    """The server's mix of unit vectors is shorter than 1; the client re-projects it first, so a
    received 0.5·a trains exactly like a (and differs without the option)."""
    cl, info = clients
    f, c = cl[0].x.shape[1], info["num_classes"]
    for norm, same in (("unit", True), ("none", False)):
        cfg = AlgoConfig(name="fedaux", hidden=16, apv_norm=norm)
        init = initial_state(cfg, f, c, 3)
        half = {**init, APV_KEY: 0.5 * init[APV_KEY]}
        a = client_round(cfg, cl[2], c, init, None, 1, 3)
        b = client_round(cfg, cl[2], c, half, None, 1, 3)
        assert torch.equal(a.upload[APV_KEY], b.upload[APV_KEY]) is same, norm
        assert (a.metrics["train_loss"] == b.metrics["train_loss"]) is same, norm


def test_apv_norm_is_validated() -> None:
    with pytest.raises(ValueError, match="apv_norm"):
        AlgoConfig(name="fedaux", apv_norm="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="apv_norm"):
        FedAuxNet(4, 8, 2, apv_norm="sphere")  # type: ignore[arg-type]
    net = FedAuxNet(4, 8, 2, apv_norm="unit")
    with torch.no_grad():
        net.apv.zero_()
    net.project_apv()  # a zero vector stays zero (no NaN)
    assert torch.equal(net.apv.detach(), torch.zeros(8))


def test_unit_apvs_give_non_uniform_weights_that_group_same_data_clients(clients) -> None:
    """Two copies of a group-0 client and two of a group-1 client (dropout 0, so copies train identically).

    A copy's APV equals its twin's, so W[0,1] = W[0,0] exactly; the cross-group weight is lower. Without the
    option the gap is < 2e-4 (weights 1/4 to three decimals); on the unit sphere it is over 10× larger.
    """
    cl, info = clients
    twins = [dataclasses.replace(cl[src], client_id=i) for i, src in enumerate((0, 0, 2, 2))]
    gaps = {}
    for norm in ("none", "unit"):
        algo = AlgoConfig(name="fedaux", hidden=64, dropout=0.0, apv_norm=norm)
        res = simulate(algo, twins, info["num_classes"], 5, 0, progress=False)
        w = res.weights
        assert w is not None and np.allclose(w.sum(1), 1.0)
        assert np.array_equal(res.test_acc[:, 0], res.test_acc[:, 1])  # the twins really are twins
        assert w[0, 1] == pytest.approx(w[0, 0], abs=1e-9) and w[2, 3] == pytest.approx(w[2, 2], abs=1e-9)
        same = np.array([w[0, 1], w[1, 0], w[2, 3], w[3, 2]])
        cross = np.array([w[0, 2], w[0, 3], w[1, 2], w[1, 3], w[2, 0], w[2, 1], w[3, 0], w[3, 1]])
        gaps[norm] = float(same.min() - cross.max())
        assert res.mix_max is not None and res.mix_max.shape == (5,)
    assert 0 <= gaps["none"] < 2e-4
    assert gaps["unit"] > 2e-3 and gaps["unit"] > 10 * gaps["none"]


def test_server_weights_are_softmax_of_the_uploaded_unit_apvs(clients) -> None:
    """One round from the common a⁽⁰⁾: the server's weights are Eq. 7 applied to the unit uploads."""
    cl, info = clients
    cfg = AlgoConfig(name="fedaux", hidden=64, apv_norm="unit")
    init = initial_state(cfg, cl[0].x.shape[1], info["num_classes"], 0)
    ups = {c.client_id: client_round(cfg, c, info["num_classes"], init, None, 1, 0).upload for c in cl}
    down, diag = server_aggregate(cfg, ups, {c.client_id: 1.0 for c in cl})
    a = torch.stack([ups[i][APV_KEY] for i in sorted(ups)]).double()
    expect = torch.softmax(cfg.alpha * (a @ a.t()), dim=1)  # unit rows: a·aᵀ is the cosine
    assert torch.allclose(diag["weights"], expect, atol=1e-6)
    assert float(diag["weights"].max() - diag["weights"].min()) > 1e-3
    for i, d in down.items():  # the mix itself is not unit (the client re-projects it)
        assert float(d[APV_KEY].norm()) < 1.0
        assert torch.allclose(d[APV_KEY].double(), diag["weights"][i] @ a, atol=1e-6)
