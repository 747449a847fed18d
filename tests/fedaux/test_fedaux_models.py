"""FedAux model maths: scores, the Gaussian kernel (chunked == dense, σ→0 limit), hard sort + Conv1D."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from quintet.fedaux.models import FedAuxNet, MaskedLinear, hard_sort_conv, kernel_smooth, projection_scores


def test_projection_scores_by_hand() -> None:
    h = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    a = torch.tensor([1.0, 1.0])
    # paper: <h_i / max_j |h_j|, a> with max norm 5
    assert projection_scores(h, a, "paper").tolist() == pytest.approx([1.4, 0.2])
    # official code: cosine
    assert projection_scores(h, a, "cosine").tolist() == pytest.approx(
        [7 / (5 * math.sqrt(2)), 1 / math.sqrt(2)]
    )
    with pytest.raises(ValueError, match="score mode"):
        projection_scores(h, a, "bogus")  # type: ignore[arg-type]


def test_kernel_smooth_by_hand() -> None:
    h = torch.tensor([[1.0], [3.0]])
    s = torch.tensor([0.0, 1.0])
    k = math.exp(-1.0)
    z = kernel_smooth(h, s, sigma=1.0)
    assert z[:, 0].tolist() == pytest.approx([(1 + 3 * k) / (1 + k), (k + 3) / (1 + k)], rel=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        kernel_smooth(h, s, sigma=0.0)


def test_chunked_kernel_matches_dense_values_and_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(53, 6, generator=g, requires_grad=True)
    s = torch.randn(53, generator=g, requires_grad=True)
    dense = kernel_smooth(h, s, 0.7, chunk_size=1000)
    gh, gs = torch.autograd.grad((dense**2).sum(), (h, s))
    chunked = kernel_smooth(h, s, 0.7, chunk_size=8)
    ch, cs = torch.autograd.grad((chunked**2).sum(), (h, s))
    assert torch.allclose(dense, chunked, atol=1e-6)
    assert torch.allclose(gh, ch, atol=1e-5) and torch.allclose(gs, cs, atol=1e-5)


def test_sigma_to_zero_approaches_hard_sort_then_conv() -> None:
    """Theorem 3.2: Conv1D over the sorted kernel output → Conv1D over the sorted embeddings as σ → 0."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(40, 5, generator=g)
    s = torch.linspace(-1, 1, 40)[torch.randperm(40, generator=g)]  # distinct scores, spacing 0.05
    conv = nn.Conv1d(5, 5, 3, padding=1)
    with torch.no_grad():
        hard = hard_sort_conv(h, s, conv)
        errs = []
        for sigma in (0.5, 0.1, 0.02, 0.005):
            z = kernel_smooth(h, s, sigma)
            errs.append(float((hard_sort_conv(z, s, conv) - hard).abs().max()))
    assert errs == sorted(errs, reverse=True)
    assert errs[0] > 0.1 and errs[-1] < 1e-6


def test_hard_sort_conv_by_hand() -> None:
    conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, 0.0, 0.0]]]))  # out[t] = x[t-1] along the sorted order
    h = torch.tensor([[10.0], [20.0], [30.0]])
    s = torch.tensor([0.5, -1.0, 2.0])  # sorted order: node 1 (20), node 0 (10), node 2 (30)
    z = hard_sort_conv(h, s, conv)
    assert z[:, 0].tolist() == pytest.approx([20.0, 0.0, 10.0])


def test_apv_gets_gradient_from_the_kernel_but_not_from_hard_sort() -> None:
    x = torch.rand(30, 8)
    idx = torch.arange(30)
    adj = torch.sparse_coo_tensor(torch.stack([idx, idx]), torch.ones(30), (30, 30)).to_sparse_csr()
    for kernel, expect in (("gaussian", True), ("hard", False)):
        torch.manual_seed(0)
        net = FedAuxNet(8, 6, 3, kernel=kernel, dropout=0.0)  # type: ignore[arg-type]
        net(x, adj).logsumexp(1).sum().backward()
        got = net.apv.grad is not None and float(net.apv.grad.abs().sum()) > 0
        assert got is expect, kernel


def test_apv_init_variants() -> None:
    torch.manual_seed(0)
    uni = FedAuxNet(4, 64, 2, apv_init="uniform").apv.detach()
    gau = FedAuxNet(4, 64, 2, apv_init="gaussian").apv.detach()
    assert float(uni.min()) >= 0 and float(uni.max()) < 1
    assert float(gau.min()) < 0 < float(gau.max())
    with pytest.raises(ValueError, match="kernel"):
        FedAuxNet(4, 8, 2, kernel="sinkhorn")  # type: ignore[arg-type]


@pytest.mark.integration
def test_kernel_on_20000_nodes_trains_in_under_2_gb() -> None:
    """The chunked, checkpointed kernel keeps forward+backward memory O(chunk·N)."""
    code = textwrap.dedent(
        """
        import resource, torch
        torch.set_num_threads(1)
        from quintet.fedaux.models import kernel_smooth, projection_scores
        h = torch.randn(20000, 32, requires_grad=True)
        a = torch.randn(32, requires_grad=True)
        z = kernel_smooth(h, projection_scores(h, a), 1.0, chunk_size=1024)
        z.square().mean().backward()
        assert torch.isfinite(a.grad).all()
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
    )
    peak_gb = int(out.stdout.strip().splitlines()[-1]) / 1024**2
    assert peak_gb < 2.0, f"peak RSS {peak_gb:.2f} GB"


def test_head_init_fedpub_draws_glorot_weight_and_bias() -> None:
    """``fedpub``: Glorot-uniform weight U(±√(6/(in+out))) and a bias drawn Glorot-uniform as a 1 × out
    matrix, U(±√(6/(1+out))); ``kaiming`` keeps torch's U(±1/√in) weight and a zero bias."""
    torch.manual_seed(0)
    fed = MaskedLinear(256, 7, masked=True, init="fedpub").requires_grad_(False)
    w_bound, b_bound = math.sqrt(6 / (256 + 7)), math.sqrt(6 / (1 + 7))
    assert float(fed.weight.abs().max()) <= w_bound
    assert float(fed.weight.abs().max()) > 0.9 * w_bound  # 1,792 draws reach the edge of the range
    assert float(fed.bias.abs().max()) <= b_bound
    assert float(fed.bias.abs().max()) > 0.2  # a real draw, not zeros (0.87 bound, 7 draws)
    assert torch.equal(fed.mask, torch.ones(7, 256))
    kai = MaskedLinear(256, 7, masked=True, init="kaiming").requires_grad_(False)
    assert float(kai.weight.abs().max()) <= 1 / math.sqrt(256) + 1e-7
    assert torch.equal(kai.bias, torch.zeros(7))
    with pytest.raises(ValueError, match="unknown init"):
        MaskedLinear(4, 2, init="xavier")


def test_head_init_reaches_the_classifiers_of_fedpub_and_fedaux_only() -> None:
    from quintet.fedaux.algorithms import AlgoConfig, build_model

    torch.manual_seed(0)
    for name in ("fedpub", "fedaux"):
        model = build_model(AlgoConfig(name=name, hidden=16, head_init="fedpub"), 20, 7)
        assert float(model.head.bias.detach().abs().max()) > 0  # type: ignore[union-attr]
        assert model.gnn.convs[0].lin.init == "glorot"  # type: ignore[union-attr]
    # the plain GCN baselines keep nn.Linear's init whatever head_init says (the official GCN uses nn.Linear)
    plain = build_model(AlgoConfig(name="fedavg", hidden=16, head_init="fedpub"), 20, 7)
    assert torch.equal(plain.head.bias, torch.zeros(7))  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="head_init"):
        AlgoConfig(head_init="xavier")  # type: ignore[arg-type]
