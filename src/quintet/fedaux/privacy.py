"""Client-level differential privacy of the uploads: clip each round's update, add Gaussian noise, account.

Pure functions (no I/O, no models), like :mod:`quintet.fedaux.aggregation`.

Each round a client releases ``start + clip(Δ) + N(0, (z·C)² I)`` where Δ is its update of every uploaded
tensor (shared parameters, and FedAux's APV) stacked into one vector, ``clip`` scales Δ to L2 norm at most
``C`` and ``z`` is the noise multiplier. Replacing the client's whole subgraph changes the clipped update
by at most ``C`` in L2 (the sensitivity, measured in the "replace one client's data" sense), so one round is
a Gaussian mechanism, ρ = 1 / (2 z²) zero-concentrated DP (Bun & Steinke 2016, Prop. 1.6). Every client
takes part in every round (no subsampling, hence no amplification), so T rounds compose to ρ = T / (2 z²),
and (ε, δ)-DP follows with ε = ρ + 2 √(ρ ln(1/δ)) (ibid., Prop. 1.3). The guarantee is per client,
against the server and anyone who sees the uploads or the personalised mixes (post-processing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

__all__ = ["clip_and_noise", "gaussian_epsilon"]


def clip_and_noise(
    start: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor],
    clip: float,
    noise_multiplier: float,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], float]:
    """``start + clip(end − start) + N(0, (z·C)²)`` per key, and the update's L2 norm before clipping.

    Args:
        start / end: the client's tensors before and after local training (same keys and shapes).
        clip: C > 0, the largest L2 norm of the whole update (all keys together).
        noise_multiplier: z >= 0; the noise std is z·C.
        generator: a seeded generator (the noise is reproducible under the run seed).
    """
    if clip <= 0 or noise_multiplier < 0:
        raise ValueError(f"clip must be > 0 and noise_multiplier >= 0, got {clip} and {noise_multiplier}")
    keys = sorted(end)
    delta = {k: end[k].double() - start[k].double() for k in keys}
    norm = math.sqrt(sum(float(d.pow(2).sum()) for d in delta.values()))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    out = {}
    for k in keys:
        noise = torch.randn(delta[k].shape, generator=generator, dtype=torch.float64) * (
            noise_multiplier * clip
        )
        out[k] = (start[k].double() + delta[k] * scale + noise).to(end[k].dtype)
    return out, norm


def gaussian_epsilon(noise_multiplier: float, rounds: int, delta: float = 1e-5) -> float:
    """ε of ``rounds`` Gaussian releases with noise multiplier z at the given δ (zCDP; ``inf`` if z = 0)."""
    if not 0 < delta < 1 or rounds < 1:
        raise ValueError(f"delta must be in (0, 1) and rounds >= 1, got {delta} and {rounds}")
    if noise_multiplier <= 0:
        return math.inf
    rho = rounds / (2.0 * noise_multiplier**2)
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))
