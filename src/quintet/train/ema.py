"""Exponential moving average (EMA) of weights and the Lightning callback that keeps it.

After every optimizer step ``ema <- d * ema + (1 - d) * weight`` for every trainable parameter
(buffers such as normalisation statistics are taken as they are). The average starts from the
weights at the start of training. Validation runs with the EMA weights swapped in, and the saved
"best" model holds them, as in the LEIGNN / DeepRelax / DefiNet training scripts.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import Callback
from torch import nn

__all__ = ["EMACallback", "ExponentialMovingAverage", "ema_decay_at", "ema_update_"]


def ema_decay_at(decay: float, num_updates: int, warmup: bool) -> float:
    """The decay used for update number ``num_updates`` (1-based).

    With ``warmup`` the decay is ``min(decay, (1 + n) / (10 + n))`` (the ``torch_ema`` rule), which
    lets the average follow the fast early changes of the weights.
    """
    if not warmup:
        return decay
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates))


@torch.no_grad()
def ema_update_(shadow: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    """In place: ``shadow[k] = decay * shadow[k] + (1 - decay) * params[k]`` for every k."""
    if not shadow:
        return
    torch._foreach_mul_(shadow, decay)
    torch._foreach_add_(
        shadow, [p.detach().to(s.dtype) for s, p in zip(shadow, params, strict=True)], alpha=1.0 - decay
    )


def _shadow_copy(p: torch.Tensor) -> torch.Tensor:
    t = p.detach().clone()
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class ExponentialMovingAverage:
    """EMA of the trainable parameters of ``module`` (a shadow copy, same names as ``named_parameters``).

    Args:
        module: the module whose parameters are averaged; the shadow starts as a copy of them.
        decay: the EMA decay in (0, 1).
        warmup: use the ``torch_ema`` warm-up rule (see :func:`ema_decay_at`).
    """

    def __init__(self, module: nn.Module, decay: float, warmup: bool = False) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        params = dict(module.named_parameters())
        # half-precision weights are averaged in float32: 0.001 * update vanishes in bf16/fp16
        self.shadow = {n: _shadow_copy(params[n]) for n in self.names}
        self._backup: dict[str, torch.Tensor] | None = None

    def _params(self, module: nn.Module) -> list[torch.Tensor]:
        params = dict(module.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"EMA: the module lost parameters {missing[:5]}")
        return [params[n] for n in self.names]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One EMA step from the current parameters of ``module``."""
        self.num_updates += 1
        d = ema_decay_at(self.decay, self.num_updates, self.warmup)
        ema_update_([self.shadow[n] for n in self.names], self._params(module), d)

    @torch.no_grad()
    def swap_in(self, module: nn.Module) -> None:
        """Put the EMA weights into ``module`` (remember the raw ones for :meth:`swap_out`)."""
        if self._backup is not None:
            return
        params = self._params(module)
        self._backup = {n: p.detach().clone() for n, p in zip(self.names, params, strict=True)}
        for n, p in zip(self.names, params, strict=True):
            p.copy_(self.shadow[n])

    @torch.no_grad()
    def swap_out(self, module: nn.Module) -> None:
        """Restore the raw weights saved by :meth:`swap_in`."""
        if self._backup is None:
            return
        for n, p in zip(self.names, self._params(module), strict=True):
            p.copy_(self._backup[n])
        self._backup = None

    def averaged_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """``module.state_dict()`` (detached copies) with every averaged parameter replaced by its EMA
        value; ``module`` is the one the EMA was built on. Tied parameters get the same average."""
        by_id = {id(p): n for n, p in module.named_parameters() if n in self.shadow}
        alias = {
            n: by_id[id(p)] for n, p in module.named_parameters(remove_duplicate=False) if id(p) in by_id
        }
        out: dict[str, torch.Tensor] = {}
        for k, v in module.state_dict().items():
            out[k] = (self.shadow[alias[k]] if k in alias else v).detach().clone()
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain-typed state (decay, number of updates, shadow tensors) for checkpoints."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": {n: t.detach().clone() for n, t in self.shadow.items()},
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (tensors are copied onto the current shadow's device)."""
        shadow = state["shadow"]
        if set(shadow) != set(self.shadow):
            extra, missing = sorted(set(shadow) - set(self.shadow)), sorted(set(self.shadow) - set(shadow))
            raise ValueError(
                f"EMA state does not match the model (unexpected {extra[:5]}, missing {missing[:5]})"
            )
        for n, t in shadow.items():
            self.shadow[n].copy_(t)
        self.num_updates = int(state["num_updates"])


class EMACallback(Callback):
    """Lightning callback: EMA of ``pl_module.task`` updated after each optimizer step, swapped in
    for validation. Its state is part of the training checkpoint, so a resumed run is exact.

    Args:
        decay: EMA decay in (0, 1).
        warmup: use the ``torch_ema`` warm-up rule.
    """

    def __init__(self, decay: float, warmup: bool = False) -> None:
        self.decay = decay
        self.warmup = warmup
        self.ema: ExponentialMovingAverage | None = None

    @staticmethod
    def _target(pl_module: Any) -> nn.Module:
        return pl_module.task if hasattr(pl_module, "task") else pl_module

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.ema = ExponentialMovingAverage(self._target(pl_module), self.decay, self.warmup)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.ema is not None:
            self.ema.update(self._target(pl_module))

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self.ema is not None and trainer.state.fn == "fit":
            self.ema.swap_in(self._target(pl_module))

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self.ema is not None:
            self.ema.swap_out(self._target(pl_module))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.ema is not None:
            self.ema.swap_out(self._target(pl_module))

    def state_dict(self) -> dict[str, Any]:
        return self.ema.state_dict() if self.ema is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.ema is not None and state_dict:
            self.ema.load_state_dict(state_dict)
