"""Inference through ``torch.compile``, with a safe fall-back to eager execution.

On a CPU the message-passing layers are memory-bound chains of small element-wise ops over
(E, 3, H) edge tensors; TorchInductor fuses them into a few C++ loops. Measured on the DeepRelax
benchmark model (8-atom EMT cells, batches of 64, one thread): the forward pass runs about 2.5×
faster once compiled. Compiling costs tens of seconds on the first batch (less with inductor's
on-disk cache), so it pays for large prediction jobs only; see ``docs/deeprelax.md``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from quintet.atomistic import keys as K

__all__ = ["CompiledModel"]


class CompiledModel:
    """Call ``module`` through ``torch.compile(module, dynamic=True)``; run it eagerly if that fails.

    Attribute access (``cfg``, ``eval()``, ``state_dict()``…) goes to the wrapped module, which is
    left untouched (its parameters are shared, its state-dict keys unchanged). Dynamic shapes keep
    batches of other sizes from recompiling.

    A call that fails in the compiled path is repeated eagerly. When the eager call succeeds, the
    compiler was at fault (no C++ compiler, an unsupported op): a ``RuntimeWarning`` says why and
    every later call runs eagerly. When it fails too, its error (the input's fault) propagates.

    Args:
        module: the model (any ``nn.Module``).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._compiled: Any = torch.compile(module, dynamic=True)
        #: why the compiled path was given up (``None`` while it is used)
        self.fallback_reason: str | None = None

    @property
    def compiled(self) -> bool:
        """Whether calls still go through the compiled path."""
        return self._compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled is None:
            return self.module(*args, **kwargs)
        check = getattr(self.module, "check_elements", None)
        if check is not None and args and isinstance(args[0], dict) and K.ATOMIC_NUMBERS in args[0]:
            check(args[0][K.ATOMIC_NUMBERS])  # eagerly: the models skip this data-dependent check when compiled
        try:
            return self._compiled(*args, **kwargs)
        except Exception as exc:
            out = self.module(*args, **kwargs)  # raises when the input, not the compiler, is at fault
            self.fallback_reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
            warnings.warn(
                f"torch.compile failed ({self.fallback_reason}); running {type(self.module).__name__} eagerly",
                RuntimeWarning,
                stacklevel=2,
            )
            self._compiled = None
            return out

    def __getattr__(self, name: str) -> Any:
        if name == "module":  # not set yet (during unpickling): avoid recursing
            raise AttributeError(name)
        return getattr(self.module, name)
