"""Backbone blocks: hand-checked radial functions, equivariance of every block, and that the
shipped checks catch a model that is *not* equivariant."""

from __future__ import annotations

import pytest
import torch

from quintet.atomistic import keys as K
from quintet.atomistic.nn import (
    GaussianRBF,
    PolynomialEnvelope,
    RadialBasis,
    VectorActivation,
    scatter_mean,
    scatter_sum,
)
from quintet.atomistic.testing import (
    assert_forces_match_fd,
    assert_rotation_equivariant,
    example_records,
    random_rotation,
)


def test_envelope_values_and_smoothness() -> None:
    env = PolynomialEnvelope(cutoff=2.0, p=5)
    d = torch.tensor([0.0, 1.0, 2.0, 2.5], dtype=torch.float64, requires_grad=True)
    u = env(d)
    x = 0.5
    assert torch.allclose(
        u[:2], torch.tensor([1.0, 1 - 21 * x**5 + 35 * x**6 - 15 * x**7], dtype=torch.float64)
    )
    assert u[2] == 0 and u[3] == 0
    (g,) = torch.autograd.grad(u.sum(), d)
    assert abs(float(g[2])) < 1e-12  # zero slope at the cutoff


def test_gaussian_rbf_centres() -> None:
    rbf = GaussianRBF(num_rbf=5, cutoff=4.0)
    out = rbf(torch.tensor([0.0, 2.0, 4.0]))
    assert out.shape == (3, 5)
    assert torch.argmax(out, dim=1).tolist() == [0, 2, 4]
    assert torch.allclose(out.max(dim=1).values, torch.ones(3))
    rb = RadialBasis(5, cutoff=4.0, rbf_cutoff=30.0)
    assert float(rb(torch.tensor([4.5])).abs().max()) == 0.0


def test_scatter_by_hand() -> None:
    src = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    idx = torch.tensor([0, 2, 0, 2])
    assert scatter_sum(src, idx, 3).flatten().tolist() == [4.0, 0.0, 6.0]
    assert scatter_mean(src, idx, 3).flatten().tolist() == [2.0, 0.0, 3.0]


def test_vector_activation_is_equivariant() -> None:
    act = VectorActivation(8).double()
    v = torch.randn(5, 3, 8, dtype=torch.float64)
    r = random_rotation(3)
    rotated = act(torch.einsum("ij,njh->nih", r, v))
    assert torch.allclose(rotated, torch.einsum("ij,njh->nih", r, act(v)), atol=1e-12)


def _broken_model(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # depends on raw x coordinates: not rotation invariant, and "forces" are not −∇E
    e = (batch[K.POSITIONS][:, 0] ** 2).sum().reshape(1)
    return {K.ENERGY: e, K.FORCES: batch[K.POSITIONS] * 0.5}


def test_shipped_checks_catch_broken_models() -> None:
    rec = example_records()["molecule"]
    with pytest.raises(AssertionError, match="rotation"):
        assert_rotation_equivariant(_broken_model, [rec], invariant=[K.ENERGY])
    with pytest.raises(AssertionError, match="FD"):
        assert_forces_match_fd(_broken_model, rec)


def test_backbone_message_scale_multiplies_the_aggregated_messages_and_rejects_bad_values() -> None:
    """One PaiNN layer by hand: x1 = (x + s Δx)/√2, v1 = s Δv, then the update on (x1, v1)."""
    from quintet.atomistic.nn.backbone import ScalarVectorBackbone

    torch.manual_seed(0)
    n, h, e_dim = 4, 8, 5
    ei = torch.tensor([[0, 1, 2, 3, 0, 2], [1, 0, 3, 2, 2, 0]])
    unit = torch.nn.functional.normalize(torch.randn(ei.shape[1], 3, dtype=torch.float64), dim=-1)
    ea = torch.randn(ei.shape[1], e_dim, dtype=torch.float64)
    x = torch.randn(n, h, dtype=torch.float64)
    v0 = torch.zeros(n, 3, h, dtype=torch.float64)
    batch = torch.zeros(n, dtype=torch.long)
    outs = {}
    for s in (1.0, 0.25):
        torch.manual_seed(1)
        bb = ScalarVectorBackbone(h, 1, e_dim, update="painn", global_node=False, message_scale=s).double()
        dx, dv = bb.messages[0](x, None, ei, ea, unit)
        x1, v1 = (x + s * dx) / 2**0.5, s * dv
        ux, uv = bb.updates[0](x1, v1)
        outs[s] = bb(x, v0, ei, ea, unit, batch, 1)
        torch.testing.assert_close(outs[s][0], x1 + ux, rtol=0, atol=1e-12)
        torch.testing.assert_close(outs[s][1], v1 + uv, rtol=0, atol=1e-12)
    assert not torch.allclose(outs[1.0][0], outs[0.25][0])
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="message_scale"):
            ScalarVectorBackbone(h, 1, e_dim, message_scale=bad)
