"""Aggregation maths against numbers computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from quintet.fedaux.aggregation import (
    cosine_similarity_matrix,
    personalised_mix,
    similarity_weights,
    size_weights,
    weighted_average,
)
from quintet.fedaux.algorithms import AlgoConfig, server_aggregate


def test_size_weights_and_weighted_average_by_hand() -> None:
    w = size_weights([10, 30])
    assert w.tolist() == pytest.approx([0.25, 0.75])
    avg = weighted_average([{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}], w)
    assert avg["w"].tolist() == pytest.approx([2.5, 5.0])
    assert avg["w"].dtype == torch.float32


def test_size_weights_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="positive sum"):
        size_weights([0, 0])
    with pytest.raises(ValueError):
        size_weights([-1, 2])


def test_cosine_similarity_matrix_by_hand() -> None:
    sim = cosine_similarity_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]]))
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[1, r, 0], [r, 1, r], [0, r, 1]], dtype=torch.float64)
    assert torch.allclose(sim, expected, atol=1e-12)


def test_similarity_weights_row_softmax_self_included() -> None:
    w = similarity_weights(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), alpha=1.0)
    e = math.e
    assert w[0].tolist() == pytest.approx([e / (e + 1), 1 / (e + 1)])
    assert w.sum(1).tolist() == pytest.approx([1.0, 1.0])
    # α multiplies the similarity: α=0 gives the uniform average
    assert torch.allclose(
        similarity_weights(torch.rand(3, 3), 0.0), torch.full((3, 3), 1 / 3, dtype=torch.float64)
    )


def test_personalised_mix_by_hand() -> None:
    a = {"w": torch.tensor([1.0, 0.0]), "b": torch.tensor(2.0)}
    b = {"w": torch.tensor([0.0, 1.0]), "b": torch.tensor(4.0)}
    out = personalised_mix([a, b], torch.tensor([[0.7, 0.3], [0.2, 0.8]]))
    assert out[0]["w"].tolist() == pytest.approx([0.7, 0.3])
    assert out[1]["w"].tolist() == pytest.approx([0.2, 0.8])
    assert out[0]["b"].item() == pytest.approx(0.7 * 2 + 0.3 * 4)
    assert out[1]["b"].item() == pytest.approx(0.2 * 2 + 0.8 * 4)
    with pytest.raises(ValueError, match="weights must be"):
        personalised_mix([a, b], torch.ones(2, 3))


def test_fedaux_server_mixes_parameters_and_apv_with_apv_similarity() -> None:
    # orthogonal APVs: cos = 0 off the diagonal, so w_kk = e^α / (e^α + 1)
    uploads = {
        0: {"apv": torch.tensor([1.0, 0.0]), "w": torch.tensor([1.0])},
        1: {"apv": torch.tensor([0.0, 1.0]), "w": torch.tensor([3.0])},
    }
    down, diag = server_aggregate(AlgoConfig(name="fedaux", alpha=10.0), uploads, {0: 1, 1: 1})
    self_w = math.exp(10) / (math.exp(10) + 1)
    assert diag["weights"][0].tolist() == pytest.approx([self_w, 1 - self_w])
    assert down[0]["w"].item() == pytest.approx(self_w * 1 + (1 - self_w) * 3, rel=1e-6)
    assert down[1]["apv"].tolist() == pytest.approx([1 - self_w, self_w], rel=1e-6)


def test_fedavg_server_uses_train_sizes_and_local_sends_nothing() -> None:
    uploads = {0: {"w": torch.tensor([0.0])}, 1: {"w": torch.tensor([4.0])}}
    down, _ = server_aggregate(AlgoConfig(name="fedavg"), uploads, {0: 1, 1: 3})
    assert down[0]["w"].item() == pytest.approx(3.0) and down[1]["w"].item() == pytest.approx(3.0)
    assert server_aggregate(AlgoConfig(name="local"), uploads, {0: 1, 1: 3})[0] == {}


def test_fedpub_server_uses_functional_embeddings_and_does_not_send_them_back() -> None:
    fe = "functional_embedding"
    uploads = {
        0: {fe: torch.tensor([1.0, 0.0]), "w": torch.tensor([0.0])},
        1: {fe: torch.tensor([1.0, 0.0]), "w": torch.tensor([2.0])},
    }
    down, diag = server_aggregate(AlgoConfig(name="fedpub", fedpub_alpha=3.0), uploads, {0: 1, 1: 1})
    assert torch.allclose(
        diag["weights"], torch.full((2, 2), 0.5, dtype=torch.float64)
    )  # identical embeddings
    assert down[0]["w"].item() == pytest.approx(1.0)
    assert fe not in down[0]
