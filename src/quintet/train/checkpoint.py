"""Model files and training checkpoints: plain types + tensors, written atomically, read with
``torch.load(weights_only=True)``.

* The **model file** (``best.pt``, :func:`save_model` / :func:`load_model_file`) is what users keep:
  the model's ``state_dict`` (EMA weights when the EMA is on), the resolved config, free-form
  ``extra`` metadata (e.g. the model hyper-parameters needed to rebuild it), the metrics of the
  saved epoch and the quintet version.
* The **training checkpoint** (``last.ckpt``, :func:`save_checkpoint` / :func:`load_checkpoint`)
  holds everything needed to continue a run exactly: raw weights, EMA, optimizer, LR scheduler,
  early-stopping counters and the metric history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import quintet
from quintet.io import atomic_torch_save

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODEL_FORMAT",
    "load_checkpoint",
    "load_model_file",
    "migrate",
    "save_checkpoint",
    "save_model",
    "state_sha256",
    "to_plain",
]

MODEL_FORMAT = "quintet.model/1"
CHECKPOINT_FORMAT = "quintet.train.checkpoint/1"


def to_plain(obj: Any, where: str = "value") -> Any:
    """Convert ``obj`` into types ``torch.load(weights_only=True)`` accepts.

    Dataclasses become dicts, paths strings, NumPy scalars/arrays Python numbers/tensors; dicts,
    lists, tuples, str, int, float, bool, None and tensors pass through.

    Raises:
        TypeError: for any other object, naming where it was found.
    """
    import numpy as np

    if obj is None or isinstance(obj, str | bool | int | float):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: dictionary keys must be str or int, got {type(k).__name__}")
            out[k] = to_plain(v, f"{where}.{k}")
        return out
    if isinstance(obj, list | tuple):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise TypeError(
        f"{where}: objects of type {type(obj).__name__} cannot be stored in a model file "
        "(use plain types: dict, list, str, numbers, bool, None, tensors)"
    )


def save_model(
    path: str | Path,
    model: nn.Module | Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | Any,
    extra: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
) -> Path:
    """Write a user-facing model file atomically.

    Args:
        path: destination (e.g. ``run/best.pt``).
        model: the network or its ``state_dict``.
        config: the resolved config (dict or dataclass) that produced the model.
        extra: plain-typed metadata (e.g. ``{"model": {...hyper-parameters...}}``).
        metrics: metrics of the saved state (e.g. ``{"val/loss": 0.1, "epoch": 12}``).

    Returns:
        The path written.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    payload = {
        "format": MODEL_FORMAT,
        "quintet_version": quintet.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "config": to_plain(config, "config"),
        "extra": to_plain(dict(extra or {}), "extra"),
        "metrics": to_plain(dict(metrics or {}), "metrics"),
        "state_dict": {str(k): v.detach().cpu().clone() for k, v in state.items()},
    }
    payload["state_sha256"] = state_sha256(payload["state_dict"])
    path = Path(path)
    atomic_torch_save(path, payload)
    return path


def state_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A content hash of a state dict: every key, dtype, shape and byte, in key order."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


#: metadata of files written by earlier versions -> today's (the one place old files migrate)
def migrate(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Today's ``extra`` of a model file: ``{"system": ..., "model": {...}, ...}``.

    DeepRelax files before the shared loader kept the architecture under ``deeprelax_model`` and
    predate the cell scale and the detached base cell (both off in them); DeepRelax files without
    ``canonical_cell`` were trained on cells as written (off).
    """
    out = dict(extra)
    if "deeprelax_model" in out:
        model = dict(out.pop("deeprelax_model"))
        model.setdefault("cell_uncertainty", False)
        model.setdefault("detach_base_cell", False)
        out.update(system="deeprelax", model=model)
    if out.get("system") == "deeprelax" and isinstance(out.get("model"), dict):
        out["model"] = {"canonical_cell": False, **out["model"]}  # trained on cells as written
    return out


def _load(path: str | Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ValueError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or "format" not in obj:
        raise ValueError(f"{path}: not a quintet {what} (no 'format' field)")
    return obj


def load_model_file(path: str | Path) -> dict[str, Any]:
    """Read a model file written by :func:`save_model` (with ``weights_only=True``).

    Returns:
        ``{"format", "quintet_version", "torch_version", "config", "extra", "metrics", "state_dict"}``;
        rebuild the network from ``config``/``extra`` and call ``model.load_state_dict(d["state_dict"])``.

    The weights are checked against the content hash stored at save time (files written before the
    hash existed load without the check), and the metadata of older files is migrated (:func:`migrate`).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is truncated, not a torch file, not a quintet model file, or its weights do not
            match its content hash (a flipped byte).
    """
    obj = _load(path, "model file")
    if obj["format"] != MODEL_FORMAT:
        raise ValueError(f"{path}: format {obj['format']!r} is not a model file ({MODEL_FORMAT!r})")
    state = obj.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: the model file has no state_dict of tensors")
    if "state_sha256" in obj and state_sha256(state) != obj["state_sha256"]:
        raise ValueError(
            f"{path}: the weights do not match the file's content hash: the file is corrupted or was edited; "
            "use an intact copy or retrain"
        )
    obj["extra"] = migrate(obj.get("extra") or {})
    return obj


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write a training checkpoint (plain types + tensors) atomically."""
    payload = {"format": CHECKPOINT_FORMAT, "quintet_version": quintet.__version__}
    payload.update(to_plain(dict(state), "checkpoint"))
    path = Path(path)
    atomic_torch_save(path, payload)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    obj = _load(path, "training checkpoint")
    if obj["format"] != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: format {obj['format']!r} is not a training checkpoint")
    return obj
