"""quintet.runtime: the glibc malloc settings, their opt-outs, and that they are really applied."""

from __future__ import annotations

import subprocess
import sys

import pytest

from quintet import runtime


class FakeLibc:
    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(runtime, "_applied", False)
    monkeypatch.setattr(sys, "platform", "linux")


def test_sets_mmap_and_trim_thresholds_once():
    libc = FakeLibc()
    assert runtime.tune_cpu_allocator(env={}, libc=libc)
    assert libc.calls == [(-3, 32 * 1024 * 1024), (-1, 2**31 - 1)]
    assert runtime.tune_cpu_allocator(env={}, libc=libc)  # idempotent: nothing set twice
    assert len(libc.calls) == 2


@pytest.mark.parametrize(
    "env",
    [
        {"QUINTET_MALLOC_TUNING": "0"},
        {"QUINTET_MALLOC_TUNING": "off"},
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"MALLOC_MMAP_THRESHOLD_": "65536"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"},
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
    ],
)
def test_opt_outs_leave_malloc_alone(env):
    libc = FakeLibc()
    assert not runtime.tune_cpu_allocator(env=env, libc=libc)
    assert libc.calls == []


def test_not_linux_is_skipped(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    libc = FakeLibc()
    assert not runtime.tune_cpu_allocator(env={}, libc=libc)
    assert libc.calls == []


def test_a_refused_setting_is_reported_and_retried():
    assert not runtime.tune_cpu_allocator(env={}, libc=FakeLibc(result=0))
    libc = FakeLibc()
    assert runtime.tune_cpu_allocator(env={}, libc=libc)
    assert len(libc.calls) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_real_glibc_accepts_the_settings():
    if runtime._glibc() is None:
        pytest.skip("the C library is not glibc")
    code = (
        "import os; os.environ.pop('QUINTET_MALLOC_TUNING', None)\n"
        "from quintet.runtime import tune_cpu_allocator\n"
        "print(tune_cpu_allocator(env={}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
