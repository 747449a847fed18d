"""CompiledModel: the torch.compile wrapper falls back to eager only when the compiler is at fault."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from quintet.atomistic.nn import compile as C


class _Doubler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))
        self.cfg = {"name": "doubler"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.int64:
            raise ValueError("integer input")
        return self.scale * x


def _broken_compile(module: nn.Module, **kwargs: object):
    def run(*args: object, **kw: object) -> torch.Tensor:
        raise RuntimeError("InductorError: no working C++ compiler\nmore detail")

    return run


def test_a_compiler_failure_warns_once_and_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C.torch, "compile", _broken_compile)
    m = _Doubler()
    wrapped = C.CompiledModel(m)
    assert wrapped.compiled and wrapped.cfg == {"name": "doubler"}  # attributes of the module
    x = torch.arange(3.0)
    with pytest.warns(RuntimeWarning, match="no working C\\+\\+ compiler"):
        out = wrapped(x)
    assert torch.equal(out, m(x))
    assert not wrapped.compiled and wrapped.fallback_reason.startswith("RuntimeError: InductorError")
    assert "more detail" not in wrapped.fallback_reason  # first line only
    assert torch.equal(wrapped(x), 2 * x)  # later calls go straight to the module


def test_an_input_error_propagates_and_keeps_the_compiled_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_compile(module: nn.Module, **kwargs: object):
        return module  # "compiled" = the module itself: its own errors are the input's

    monkeypatch.setattr(C.torch, "compile", fake_compile)
    wrapped = C.CompiledModel(_Doubler())
    with pytest.raises(ValueError, match="integer input"):
        wrapped(torch.arange(3))
    assert wrapped.compiled and wrapped.fallback_reason is None


def test_the_wrapped_module_and_its_state_dict_are_untouched() -> None:
    m = _Doubler()
    keys = list(m.state_dict())
    wrapped = C.CompiledModel(m)
    assert wrapped.module is m and list(wrapped.state_dict()) == keys
    assert wrapped.eval() is m and not m.training
