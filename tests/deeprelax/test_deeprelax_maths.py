"""DeepRelax pure maths: offset encoding, Laplace NLL, targets, label checks, metrics."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from quintet.deeprelax.maths import (
    cell_heights,
    check_displacements,
    coverage,
    displace_distances,
    edge_lengths,
    laplace_nll,
    offset_encoding,
    per_atom_uncertainty,
    per_graph_mean,
    spearman,
)


def _published_offset_id(o: tuple[int, int, int]) -> int:
    return (o[0] + 2) + 5 * (o[1] + 2) + 25 * (o[2] + 2)


def test_offset_encoding_has_no_collisions_where_the_published_one_does() -> None:
    offsets = torch.tensor(list(itertools.product(range(-6, 7), repeat=3)), dtype=torch.float32)
    enc = offset_encoding(offsets)
    dist = torch.cdist(enc, enc)
    dist.fill_diagonal_(float("inf"))
    assert float(dist.min()) > 0.05
    # the published single-id code maps (3, 0, 0) and (-2, 1, 0) to the same id
    assert _published_offset_id((3, 0, 0)) == _published_offset_id((-2, 1, 0))
    a = offset_encoding(torch.tensor([[3.0, 0, 0], [-2.0, 1, 0]]))
    assert float((a[0] - a[1]).abs().max()) > 0.1


def test_offset_encoding_separates_large_offsets() -> None:
    enc = offset_encoding(torch.tensor([[40.0, 0, 0], [41.0, 0, 0], [-40.0, 0, 0]]))
    assert float(torch.cdist(enc, enc).fill_diagonal_(9).min()) > 0.05


def test_laplace_nll_hand_value_and_clamp() -> None:
    mu, lb, y = torch.tensor([1.0]), torch.tensor([math.log(0.5)]), torch.tensor([2.0])
    assert laplace_nll(mu, lb, y).item() == pytest.approx(1.0 / 0.5 + math.log(0.5) + math.log(2.0))
    # log b below the clamp behaves as the clamp value
    low = laplace_nll(mu, torch.tensor([-20.0]), y, log_b_min=-3.0)
    assert low.item() == pytest.approx(1.0 / math.exp(-3) - 3 + math.log(2.0), rel=1e-5)


def test_displace_and_edge_distances_by_hand() -> None:
    cell = torch.eye(3) * 4.0
    unrel = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    rel = torch.tensor([[0.0, 0.5, 0], [1.2, 0, 0]])
    ei = torch.tensor([[0, 1], [1, 0]])
    shift = torch.zeros(2, 3)
    d = displace_distances(rel, unrel, cell, ei, shift)
    # |rel_0 - unrel_1| and |rel_1 - unrel_0|
    assert d.tolist() == pytest.approx([math.hypot(1.0, 0.5), 1.2])
    ei2 = torch.tensor([[0], [1]])
    assert edge_lengths(rel, cell, ei2, torch.tensor([[-1.0, 0, 0]])).item() == pytest.approx(
        math.hypot(1.2 - 4.0, 0.5)
    )


def test_check_displacements_rejects_ambiguous_labels() -> None:
    cell = np.eye(3) * 5.0
    up = np.zeros((2, 3))
    ok = up + np.array([[0.3, 0, 0], [0, 0.1, 0]])
    assert check_displacements(up, ok, cell, np.array([True] * 3)) == pytest.approx(0.3)
    bad = up + np.array([[2.6, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="ambiguous"):
        check_displacements(up, bad, cell, np.array([True] * 3))
    # along a non-periodic direction a large move is not ambiguous
    moved = up + np.array([[0, 0, 3.0], [0, 0, 0]])
    assert check_displacements(up, moved, cell, np.array([True, True, False])) == 3.0


def test_cell_heights() -> None:
    cell = np.array([[4.0, 0, 0], [2.0, 3.0, 0], [0, 0, 7.0]])
    assert cell_heights(cell).tolist() == pytest.approx([84 / np.hypot(21, 14), 3.0, 7.0])


def test_spearman_matches_scipy_and_coverage() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = x + rng.normal(size=50)
    y[3] = y[4]  # a tie
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    cov = coverage(torch.zeros(4), torch.ones(4), torch.tensor([0.5, -0.9, 1.5, -2.0]))
    assert cov == 0.5


def test_per_graph_mean_and_uncertainty() -> None:
    vals = torch.tensor([1.0, 3.0, 5.0])
    graph = torch.tensor([0, 0, 2])
    assert per_graph_mean(vals, graph, 3).tolist() == [2.0, 0.0, 5.0]
    unc = per_atom_uncertainty(torch.tensor([0.1, 0.3, 0.2]), torch.tensor([1, 1, 0]), 3)
    assert unc.tolist() == pytest.approx([0.2, 0.2, 0.0])


def test_calibration_factor_makes_the_coverage_nominal() -> None:
    """Bands that are 3x too narrow get a factor near 3; after it, the coverage equals the level."""
    from quintet.deeprelax.maths import LAPLACE_LEVEL, calibration_factor

    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.05, 0.5, 20_000)
    err = rng.laplace(0.0, 3.0 * sigma)  # true scale 3σ
    target, mu = torch.tensor(err), torch.zeros(len(err), dtype=torch.float64)
    before = coverage(mu, torch.tensor(sigma), target)
    s = calibration_factor(sigma, np.abs(err))
    assert before < 0.35 and abs(s - 3.0) < 0.1
    assert abs(coverage(mu, torch.tensor(s * sigma), target) - LAPLACE_LEVEL) < 1e-3
    assert abs(calibration_factor(sigma, np.abs(err), level=0.9) - 3.0 * np.log(10)) < 0.3  # Laplace 90 %
    assert np.isnan(calibration_factor(np.zeros(3), np.zeros(3)))
