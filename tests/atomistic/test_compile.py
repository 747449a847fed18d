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


def _leignn(forces: str = "conservative"):
    from quintet.leignn.model import LEIGNN, LEIGNNModelConfig

    torch.manual_seed(0)
    m = LEIGNN(LEIGNNModelConfig(hidden=16, num_layers=2, num_rbf=8, forces=forces)).double().eval()
    with torch.no_grad():  # non-trivial readouts (some start at zero)
        for p in m.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return m


def test_calculator_compile_falls_back_to_the_same_energies_and_forces(monkeypatch: pytest.MonkeyPatch) -> None:
    from ase.build import bulk

    from quintet.leignn.calc import LEIGNNCalculator

    monkeypatch.setattr(C.torch, "compile", _broken_compile)
    m = _leignn()
    atoms = bulk("Cu", cubic=True).repeat(2)
    atoms.rattle(0.05, seed=0)
    ref = atoms.copy()
    ref.calc = LEIGNNCalculator(m)
    atoms.calc = LEIGNNCalculator(m, compile=True)
    assert isinstance(atoms.calc.model, C.CompiledModel)
    with pytest.warns(RuntimeWarning, match="running LEIGNN eagerly"):
        forces = atoms.get_forces()
    assert forces == pytest.approx(ref.get_forces(), abs=1e-12)
    assert atoms.get_stress() == pytest.approx(ref.get_stress(), abs=1e-12)
