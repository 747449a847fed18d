"""Client-level DP of the uploads: clipping, seeded Gaussian noise, accounting, and its effect on a run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from quintet.fedaux.algorithms import AlgoConfig, client_round, initial_state
from quintet.fedaux.data import synthetic_clients
from quintet.fedaux.privacy import clip_and_noise, gaussian_epsilon
from quintet.fedaux.simulate import simulate


def test_clip_scales_the_whole_update_to_the_bound_and_noise_is_seeded() -> None:
    start = {"a": torch.zeros(3), "b": torch.zeros(1)}
    end = {"a": torch.tensor([3.0, 0.0, 0.0]), "b": torch.tensor([4.0])}  # ‖Δ‖ = 5
    out, norm = clip_and_noise(start, end, 1.0, 0.0, torch.Generator().manual_seed(0))
    assert (
        norm == 5.0
        and torch.allclose(out["a"], torch.tensor([0.6, 0.0, 0.0]))
        and torch.allclose(out["b"], torch.tensor([0.8]))
    )
    small, _ = clip_and_noise(
        start, {"a": torch.tensor([0.3, 0, 0]), "b": torch.tensor([0.4])}, 1.0, 0.0, torch.Generator()
    )
    assert torch.allclose(small["b"], torch.tensor([0.4]))  # inside the bound: unchanged
    big = {"a": torch.zeros(20000), "b": torch.zeros(1)}
    n1, _ = clip_and_noise(big, big, 0.5, 2.0, torch.Generator().manual_seed(3))
    n2, _ = clip_and_noise(big, big, 0.5, 2.0, torch.Generator().manual_seed(3))
    assert torch.equal(n1["a"], n2["a"]) and abs(float(n1["a"].std()) - 1.0) < 0.03  # std = z·C = 1


def test_epsilon_follows_zcdp_composition() -> None:
    rho = 100 / (2 * 4.0**2)
    assert gaussian_epsilon(4.0, 100, 1e-5) == pytest.approx(rho + 2 * math.sqrt(rho * math.log(1e5)))
    assert gaussian_epsilon(8.0, 100) < gaussian_epsilon(4.0, 100) < gaussian_epsilon(4.0, 200)
    assert gaussian_epsilon(0.0, 10) == math.inf


def test_dp_run_clips_every_upload_reports_epsilon_and_changes_the_run() -> None:
    clients, info = synthetic_clients(seed=0)
    algo = AlgoConfig(name="fedaux", hidden=16, dp_clip=0.5, dp_noise=1.0)
    init = initial_state(algo, info["num_features"], info["num_classes"], 0)
    res = client_round(algo, clients[0], info["num_classes"], init, None, 1, 0)
    assert res.metrics["update_norm"] > 0 and set(res.upload) >= {"apv"}
    plain = AlgoConfig(name="fedaux", hidden=16, local_epochs=3)
    noisy = AlgoConfig(name="fedaux", hidden=16, local_epochs=3, dp_clip=0.1, dp_noise=5.0)
    a = simulate(plain, clients, info["num_classes"], 5, 0, progress=False)
    b = simulate(noisy, clients, info["num_classes"], 5, 0, progress=False)
    assert a.dp_epsilon is None and b.dp_epsilon == pytest.approx(gaussian_epsilon(5.0, 5, 1e-5))
    assert not np.array_equal(a.test_acc, b.test_acc) and b.summary()["dp_epsilon"] == b.dp_epsilon
    with pytest.raises(ValueError, match="not available for fedpub"):
        AlgoConfig(name="fedpub", dp_clip=1.0)
