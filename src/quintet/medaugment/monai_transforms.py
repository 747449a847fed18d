"""MedAugment as a MONAI dictionary transform: ``RandomizableTransform`` + ``MapTransform`` + ``InvertibleTransform``.

``MedAugmentd(keys=["image", "label"], label_keys=["label"])`` draws one of the N+1 branches per
call from MONAI's random state (so ``Compose.set_random_state`` / ``set_determinism`` seed it) and
applies the same branch to every key: pixel ops to images only, spatial ops to all keys (nearest
interpolation for ``label_keys``). It is a thin adapter over :mod:`.policy` / :mod:`.ops`.

Conventions:
    * MONAI's channel-first layout: ``(C, H, W)`` is 2D, ``(C, H, W, D)`` is 3D (what ``LoadImaged``
      + ``EnsureChannelFirstd`` give for a NIfTI volume). Spatial ops act in the ``(H, W)`` plane,
      identically on every slice along ``D``, so axial slices are never mixed.
    * Intensities: ``value_range="auto"`` by default (:func:`.ops.auto_value_range`): uint8 / uint16
      by dtype, floats in [0, 1] -> (0, 1), floats in [0, 255] (a PNG through ``LoadImage``) ->
      (0, 255), anything else (Hounsfield units) -> the image's own [min, max]. Dtypes are kept.
    * Labels may be integer or integer-valued float tensors (as ``LoadImage`` returns them).
    * ``MetaTensor`` inputs: every spatial op is an affine map, so the ``affine`` is updated
      (``affine @ inv(T)``: a voxel keeps its world position) and the call is pushed on
      ``applied_operations``; :meth:`MedAugmentd.inverse` warps back with ``inv(T)`` (pixel ops are
      not inverted). The replay record goes to ``record_key`` as a JSON string, which MONAI's and
      PyTorch's default collate both batch (``None`` drops it).
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
from monai.utils import TraceKeys

from quintet.medaugment import ops
from quintet.medaugment.policy import Branch, MedAugment

__all__ = ["MedAugmentd", "index_matrix"]

_SWAP_XY = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def index_matrix(branch: Branch, h: int, w: int, rank: int) -> np.ndarray:
    """The ``(rank+1)^2`` forward map of a branch's spatial ops on MONAI voxel indices ``(i=H, j=W[, k=D])``."""
    xy = ops.branch_matrix([(c.name, c.params) for c in branch.applied], h, w)
    ij = _SWAP_XY @ xy @ _SWAP_XY  # (x, y) = (j, i)
    full = np.eye(rank + 1)
    full[:2, :2], full[:2, rank] = ij[:2, :2], ij[:2, 2]
    return full


def _channel_last(arr: np.ndarray, key: Hashable) -> tuple[np.ndarray, bool]:
    """``(C, H, W)`` -> ``(H, W, C)``; ``(C, H, W, D)`` -> ``(D, H, W, C)``, plus whether it is 3D."""
    if arr.ndim == 3:
        return np.ascontiguousarray(np.moveaxis(arr, 0, -1)), False
    if arr.ndim == 4:
        return np.ascontiguousarray(arr.transpose(3, 1, 2, 0)), True
    raise ValueError(
        f"MedAugmentd: {key!r} must be channel-first (C, H, W) or (C, H, W, D), got shape {tuple(arr.shape)}; "
        "add EnsureChannelFirstd before it"
    )


def _channel_first(arr: np.ndarray, volume: bool) -> np.ndarray:
    return np.ascontiguousarray(arr.transpose(3, 1, 2, 0) if volume else np.moveaxis(arr, -1, 0))


def _as_labels(arr: np.ndarray, key: Hashable) -> np.ndarray:
    if arr.dtype.kind in "biu":
        return arr
    labels = np.rint(arr)
    if not np.array_equal(labels, arr):
        raise ValueError(f"MedAugmentd: label key {key!r} holds non-integer values; labels must be class ids")
    return labels.astype(np.int32)


class MedAugmentd(RandomizableTransform, MapTransform, InvertibleTransform):
    """Online MedAugment for MONAI dictionaries (2D ``(C, H, W)`` or 3D ``(C, H, W, D)``, NumPy or torch).

    Args:
        keys: every key to transform (images and labels).
        label_keys: the keys among ``keys`` that hold labels (spatial ops only, nearest interpolation).
        level: magnitude level 1..5.
        num_branches: N; the identity is drawn with probability 1/(N+1) when ``keep_original``.
        keep_original: include the identity branch in the draw.
        symmetric: two-sided shear / translation.
        value_range: intensity window ``(lo, hi)``, ``"auto"`` (default) or ``None``.
        mask_fill: label written where spatial ops move a label outside the image.
        prob: probability of augmenting at all (else the data pass through unchanged).
        record_key: key for the JSON replay record (``None``: no record).
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: Sequence[Hashable] = (),
        level: int = 5,
        num_branches: int = 4,
        keep_original: bool = True,
        symmetric: bool = False,
        value_range: ops.ValueRange = "auto",
        mask_fill: int = 0,
        prob: float = 1.0,
        record_key: str | None = "medaugment_branch",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.label_keys = tuple(label_keys)
        extra = [k for k in self.label_keys if k not in self.keys]
        if extra:
            raise ValueError(
                f"MedAugmentd: label_keys {extra} are not in keys {list(self.keys)}; add them to keys"
            )
        self.policy = MedAugment(level, num_branches, keep_original, symmetric, False, value_range, mask_fill)
        self._volume_policy = MedAugment(**{**self.policy.to_dict(), "volume": True})
        self.record_key = record_key
        self.branch = Branch(None)

    def randomize(self, data: Any = None) -> None:
        """Decide whether to augment (``prob``) and sample the branch, both from ``self.R``."""
        super().randomize(None)
        if not self._do_transform:
            self.branch = Branch(None)
            return
        seed = self.R.randint(0, 2**31 - 1, size=4)
        self.branch = self.policy.sample_online(np.random.default_rng(seed.tolist()))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        self.randomize()
        return self.replay(self.branch, data)

    def replay(
        self, record: Mapping[str, Any] | Branch | str, data: Mapping[Hashable, Any]
    ) -> dict[Hashable, Any]:
        """Apply a recorded branch (a :class:`Branch`, its dict or its JSON string) to a data dict."""
        branch = _to_branch(record)
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self._apply_key(d[key], key, branch)
        if self.record_key is not None:
            d[self.record_key] = json.dumps(branch.to_dict(), separators=(",", ":"))
        return d

    def _apply_key(self, x: Any, key: Hashable, branch: Branch) -> Any:
        is_torch = isinstance(x, torch.Tensor)
        arr = x.detach().cpu().numpy() if is_torch else np.asarray(x)
        last, volume = _channel_last(arr, key)
        policy = self._volume_policy if volume else self.policy
        if key in self.label_keys:
            out = policy.apply_mask(branch, _as_labels(last, key)).astype(arr.dtype, copy=False)
        else:
            out = policy.apply(branch, last)[0]
        first = _channel_first(out, volume)
        if not is_torch:
            return first
        result = torch.as_tensor(first, device=x.device)
        if not isinstance(x, MetaTensor):
            return result
        meta = MetaTensor(result, meta=x.meta, applied_operations=list(x.applied_operations))
        t = index_matrix(branch, arr.shape[1], arr.shape[2], arr.ndim - 1)
        meta.affine = _update_affine(x.affine, np.linalg.inv(t))
        info = {"branch": json.dumps(branch.to_dict()), "volume": volume}
        self.push_transform(meta, orig_size=tuple(arr.shape[1:]), extra_info=info)
        return meta

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Undo the spatial ops on every ``MetaTensor`` key (labels nearest, images bilinear); pixel ops stay."""
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if not isinstance(x, MetaTensor):
                raise ValueError(f"MedAugmentd.inverse: {key!r} is not a MetaTensor, so it carries no record")
            op = self.pop_transform(x)
            info = op[TraceKeys.EXTRA_INFO]
            d[key] = self._invert_key(
                x, key, Branch.from_dict(json.loads(info["branch"])), bool(info["volume"])
            )
        return d

    def _invert_key(self, x: MetaTensor, key: Hashable, branch: Branch, volume: bool) -> MetaTensor:
        arr = x.detach().cpu().numpy()
        last, _ = _channel_last(arr, key)
        t = index_matrix(branch, arr.shape[1], arr.shape[2], arr.ndim - 1)
        back = np.linalg.inv(
            ops.branch_matrix([(c.name, c.params) for c in branch.applied], arr.shape[1], arr.shape[2])
        )
        label = key in self.label_keys
        work = _as_labels(last, key) if label else last
        fill = self.policy.mask_fill if label else ops.resolve_value_range(last, self.policy.value_range)[0]
        out = ops.warp(work, back[:2], nearest=label, fill=fill, volume=volume).astype(arr.dtype, copy=False)
        result = MetaTensor(
            torch.as_tensor(_channel_first(out, volume), device=x.device),
            meta=x.meta,
            applied_operations=list(x.applied_operations),
        )
        result.affine = _update_affine(x.affine, t)
        return result


def _to_branch(record: Mapping[str, Any] | Branch | str) -> Branch:
    if isinstance(record, Branch):
        return record
    if isinstance(record, str):
        record = json.loads(record)
    return Branch.from_dict(dict(record))


def _update_affine(affine: Any, voxel_map: np.ndarray) -> torch.Tensor:
    """``affine @ voxel_map`` on the affine's own size (MONAI keeps 4x4 affines for 2D data too)."""
    a = torch.as_tensor(affine, dtype=torch.float64)
    n = a.shape[-1]
    full = np.eye(n)
    r = voxel_map.shape[0] - 1
    full[:r, :r], full[:r, n - 1] = voxel_map[:r, :r], voxel_map[:r, r]
    return a @ torch.as_tensor(full, dtype=torch.float64)
