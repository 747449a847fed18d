"""MedAugment branch sampling: N branches of 2-3 operations plus the identity, seeded and replayable.

Each branch draws a combination ``(a, b)`` = (number of pixel ops, number of spatial ops) from
:data:`COMBINATIONS`; with ``N = 4`` the four combinations are used once each in random order,
otherwise each branch picks one uniformly with replacement. Within a branch ``a`` pixel and ``b``
spatial operations are chosen without replacement, shuffled together, and each one fires with
probability ``0.2 * level``; a fired op draws its parameters from the level map in :mod:`.ops`.

A sampled :class:`Branch` records every chosen op, whether it fired and its parameters; it is a
plain JSON-able structure (``to_dict`` / ``from_dict``) and :meth:`MedAugment.apply` replays it
exactly on any image (and mask).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quintet.medaugment import ops

__all__ = ["COMBINATIONS", "Branch", "MedAugment", "OpCall", "make_rng"]

#: (pixel ops, spatial ops) per branch, as published
COMBINATIONS: tuple[tuple[int, int], ...] = ((1, 2), (0, 3), (0, 2), (1, 1))


def make_rng(
    seed: int | Sequence[int] | np.random.SeedSequence | np.random.Generator | None,
) -> np.random.Generator:
    """A NumPy ``Generator`` from an int, a sequence of ints (e.g. ``(seed, index)``) or a generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


@dataclass(frozen=True)
class OpCall:
    """One chosen operation of a branch.

    Attributes:
        name: operation name (see :data:`quintet.medaugment.ops.OPS`).
        applied: whether its trigger (probability ``0.2 * level``) fired.
        params: the sampled parameters (empty when not applied or for flips).
    """

    name: str
    applied: bool
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {"name": self.name, "applied": self.applied, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpCall:
        """Inverse of :meth:`to_dict` (validates the op name)."""
        name = d["name"]
        if name not in ops.OPS:
            raise ValueError(f"unknown operation {name!r} in replay record; valid: {', '.join(ops.OPS)}")
        return cls(name=name, applied=bool(d["applied"]), params=dict(d.get("params", {})))


@dataclass(frozen=True)
class Branch:
    """One augmentation branch: the combination and the ordered op calls. ``combination=None`` is identity."""

    combination: tuple[int, int] | None
    calls: tuple[OpCall, ...] = ()

    @property
    def is_identity(self) -> bool:
        """True for the identity branch (the original image)."""
        return self.combination is None

    @property
    def applied(self) -> tuple[OpCall, ...]:
        """The calls whose trigger fired, in order."""
        return tuple(c for c in self.calls if c.applied)

    def describe(self) -> str:
        """Short human-readable form, e.g. ``rotate(angle=-3.1) > hflip``."""
        if self.is_identity:
            return "identity"
        parts = []
        for c in self.applied:
            args = ",".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in c.params.items()
                if k != "seed"  # the noise seed stays in the record
            )
            parts.append(f"{c.name}({args})" if args else c.name)
        return " > ".join(parts) if parts else "none fired"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        return {
            "combination": None if self.combination is None else list(self.combination),
            "calls": [c.to_dict() for c in self.calls],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Branch:
        """Inverse of :meth:`to_dict`."""
        comb = d.get("combination")
        return cls(
            combination=None if comb is None else (int(comb[0]), int(comb[1])),
            calls=tuple(OpCall.from_dict(c) for c in d.get("calls", [])),
        )


def _check_value_range(value_range: ops.ValueRange) -> ops.ValueRange:
    if value_range is None or value_range == "auto":
        return value_range
    if isinstance(value_range, str) or len(value_range) != 2:
        raise ValueError(f"value_range must be None, 'auto' or (lo, hi), got {value_range!r}")
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must have hi > lo, got {value_range}")
    return lo, hi


class MedAugment:
    """The MedAugment policy (sampling and application).

    Args:
        level: magnitude level 1..5 (default 5): trigger probability ``0.2 * level`` and parameter ranges.
        num_branches: number N of augmented branches per image (default 4).
        keep_original: keep the identity branch (the original image) as the (N+1)-th output.
        symmetric: draw shear/translation from ``[-max, max]`` instead of the paper's ``[0, max]``.
        volume: inputs are 3D volumes ``(D, H, W[, C])`` instead of 2D images.
        value_range: intensity window ``(lo, hi)``, ``"auto"`` (see :func:`.ops.auto_value_range`) or
            ``None`` (by dtype, see :mod:`.ops`); resolved once per call on the input image.
        mask_fill: label written where spatial ops move the mask outside the image.

    Example:
        >>> aug = MedAugment(level=5, num_branches=4)
        >>> outs = aug.expand(image, mask, rng=np.random.default_rng(8))  # N + 1 (image, mask, branch)
    """

    def __init__(
        self,
        level: int = 5,
        num_branches: int = 4,
        keep_original: bool = True,
        symmetric: bool = False,
        volume: bool = False,
        value_range: ops.ValueRange = None,
        mask_fill: int = 0,
    ) -> None:
        self.level = ops.check_level(level)
        if isinstance(num_branches, bool) or not isinstance(num_branches, int) or num_branches < 1:
            raise ValueError(f"num_branches must be a positive integer, got {num_branches!r}")
        self.num_branches = num_branches
        self.keep_original = bool(keep_original)
        self.symmetric = bool(symmetric)
        self.volume = bool(volume)
        self.value_range = _check_value_range(value_range)
        self.mask_fill = int(mask_fill)

    def __repr__(self) -> str:
        return (
            f"MedAugment(level={self.level}, num_branches={self.num_branches}, keep_original={self.keep_original},"
            f" symmetric={self.symmetric}, volume={self.volume})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The policy settings as a JSON-able dict (``MedAugment(**d)`` rebuilds it)."""
        return {
            "level": self.level,
            "num_branches": self.num_branches,
            "keep_original": self.keep_original,
            "symmetric": self.symmetric,
            "volume": self.volume,
            "value_range": self.value_range
            if not isinstance(self.value_range, tuple)
            else list(self.value_range),
            "mask_fill": self.mask_fill,
        }

    @property
    def num_outputs(self) -> int:
        """Outputs per source image: N, plus one when the original is kept."""
        return self.num_branches + int(self.keep_original)

    # ---------------------------------------------------------------- sampling
    def sample_combinations(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        """Combinations for the N branches: a permutation of all four when N = 4, else i.i.d. uniform."""
        if self.num_branches == len(COMBINATIONS):
            order = rng.permutation(len(COMBINATIONS))
        else:
            order = rng.integers(0, len(COMBINATIONS), size=self.num_branches)
        return [COMBINATIONS[int(i)] for i in order]

    def sample_branch(self, combination: tuple[int, int], rng: np.random.Generator) -> Branch:
        """Sample one branch with ``combination = (a, b)``: choose, shuffle, trigger and parametrise ops."""
        a, b = combination
        pix = [ops.PIXEL_OPS[int(i)] for i in rng.choice(len(ops.PIXEL_OPS), size=a, replace=False)]
        spa = [ops.SPATIAL_OPS[int(i)] for i in rng.choice(len(ops.SPATIAL_OPS), size=b, replace=False)]
        chosen = pix + spa
        order = rng.permutation(len(chosen))
        p = ops.probability(self.level)
        calls = []
        for i in order:
            name = chosen[int(i)]
            fired = bool(rng.random() < p)
            params = ops.sample_params(name, self.level, rng, symmetric=self.symmetric) if fired else {}
            calls.append(OpCall(name, fired, params))
        return Branch(combination=(a, b), calls=tuple(calls))

    def sample_branches(self, rng: np.random.Generator) -> list[Branch]:
        """The N augmented branches for one image (offline mode), in output order."""
        return [self.sample_branch(c, rng) for c in self.sample_combinations(rng)]

    def sample_online(self, rng: np.random.Generator) -> Branch:
        """One branch for online use: identity with probability 1/(N+1) (if kept), else a uniform combination.

        For a single draw this equals picking one of the N+1 offline outputs uniformly: with N = 4 a
        random permutation's k-th element is uniform, and with N != 4 combinations are i.i.d. uniform.
        """
        if self.keep_original and rng.integers(0, self.num_branches + 1) == self.num_branches:
            return Branch(None)
        comb = COMBINATIONS[int(rng.integers(0, len(COMBINATIONS)))]
        return self.sample_branch(comb, rng)

    # ---------------------------------------------------------------- applying
    def apply(
        self, branch: Branch, image: np.ndarray, mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Apply a (sampled or replayed) branch to an image and optional mask; inputs are not modified."""
        ops.check_image(image, self.volume)
        if mask is not None:
            ops.check_mask(mask, image, self.volume)
        window = ops.resolve_value_range(image, self.value_range)  # one window for the whole chain
        out_img = image
        for call in branch.applied:
            out_img = ops.apply_image(call.name, out_img, call.params, window, self.volume)
        if out_img is image:
            out_img = image.copy()
        return out_img, None if mask is None else self.apply_mask(branch, mask)

    def apply_mask(self, branch: Branch, mask: np.ndarray) -> np.ndarray:
        """Apply only the spatial ops of a branch to a label mask (nearest, ``mask_fill``); returns a new array."""
        out = mask
        for call in branch.applied:
            out = ops.apply_mask(call.name, out, call.params, self.volume, self.mask_fill)
        return out.copy() if out is mask else out

    def expand(
        self, image: np.ndarray, mask: np.ndarray | None = None, rng: np.random.Generator | int | None = None
    ) -> list[tuple[np.ndarray, np.ndarray | None, Branch]]:
        """Offline expansion of one image: N augmented outputs, then the original when kept."""
        rng = make_rng(rng)
        branches = self.sample_branches(rng)
        if self.keep_original:
            branches.append(Branch(None))
        return [(*self.apply(br, image, mask), br) for br in branches]

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None = None, rng: np.random.Generator | int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None, Branch]:
        """Online use: sample one branch (see :meth:`sample_online`) and apply it."""
        rng = make_rng(rng)
        branch = self.sample_online(rng)
        img, msk = self.apply(branch, image, mask)
        return img, msk, branch
