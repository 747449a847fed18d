"""Pure aggregation maths (no I/O, no models): averages, similarity weights, personalised mixing.

All functions take and return plain tensors / ``dict[str, Tensor]``; the in-process simulation and the
Flower server both call them, and the tests check them against numbers computed by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

__all__ = [
    "cosine_similarity_matrix",
    "personalised_mix",
    "similarity_weights",
    "size_weights",
    "stack_states",
    "weighted_average",
]

State = Mapping[str, torch.Tensor]


def size_weights(sizes: Sequence[float]) -> torch.Tensor:
    """Normalised weights proportional to ``sizes`` (e.g. training-node counts)."""
    w = torch.as_tensor(list(sizes), dtype=torch.float64)
    if w.numel() == 0 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"sizes must be non-negative with a positive sum, got {list(sizes)}")
    return w / w.sum()


def stack_states(states: Sequence[State], keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``{key: (K, *shape)}`` from K states with identical keys and shapes."""
    if not states:
        raise ValueError("no states to stack")
    keys = list(keys) if keys is not None else sorted(states[0])
    for i, st in enumerate(states):
        missing = set(keys) - set(st)
        if missing:
            raise ValueError(f"state {i} lacks key(s) {sorted(missing)}")
    return {k: torch.stack([st[k].detach() for st in states]) for k in keys}


def weighted_average(
    states: Sequence[State], weights: Sequence[float] | torch.Tensor
) -> dict[str, torch.Tensor]:
    """Σ_k w_k state_k for every key (weights are used as given: normalise them first)."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.numel() != len(states):
        raise ValueError(f"{len(states)} states but {w.numel()} weights")
    out = personalised_mix(states, w.reshape(1, -1))
    return out[0]


def cosine_similarity_matrix(vectors: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(K, K) cosine similarities of the rows of a (K, d) matrix (a zero row has similarity 0)."""
    v = vectors.to(torch.float64)
    unit = v / v.norm(dim=1, keepdim=True).clamp(min=eps)
    return unit @ unit.t()


def similarity_weights(sim: torch.Tensor, alpha: float) -> torch.Tensor:
    """Row softmax of α·sim, self included (FedAux Eq. 7; FED-PUB's exp-normalised weights)."""
    return torch.softmax(alpha * sim.to(torch.float64), dim=1)


def personalised_mix(states: Sequence[State], weights: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """One mixture per row of ``weights``: out_k = Σ_l W_kl state_l (FedAux Eq. 8).

    Args:
        states: L states with the same keys and shapes.
        weights: (K, L) mixing matrix.

    Returns:
        K states in the dtype of the inputs.
    """
    if not states:
        raise ValueError("no states to mix")
    w = weights.to(torch.float64)
    if w.ndim != 2 or w.shape[1] != len(states):
        raise ValueError(f"weights must be (K, {len(states)}), got {tuple(w.shape)}")
    stacked = stack_states(states)
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(w.shape[0])]
    for key, s in stacked.items():
        flat = s.reshape(s.shape[0], -1)
        mixed = (w.to(flat.dtype) @ flat).reshape(w.shape[0], *s.shape[1:])
        dtype = states[0][key].dtype
        for k in range(w.shape[0]):
            out[k][key] = mixed[k].to(dtype)
    return out
