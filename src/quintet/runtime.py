"""Process-wide CPU runtime settings: keep freed tensor memory in the process (glibc malloc).

Message passing on a CPU is memory-bound: every layer allocates and frees a few edge-sized tensors of
megabytes (E × 3 × H floats). With glibc's default heuristics, freed blocks that size go back to the
operating system (``munmap``, or trimming the top of the heap), and the next allocation page-faults on
every 4 KiB page again as it is first written. :func:`tune_cpu_allocator` sets two ``mallopt``
parameters so that those blocks stay in the process and are reused:

* ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's upper limit on 64-bit): blocks up to that size come from the
  heap instead of a fresh ``mmap``;
* ``M_TRIM_THRESHOLD`` = 2 GiB: the top of the heap is not handed back after every large free.

Measured here (``benchmarks/allocator.py``): inference of the materials models 1.1-1.6x faster (DeepRelax
1.50x, DefiNet 1.20x, LEIGNN MD 1.55x with direct and 1.14x with conservative forces); a training step
1.08x (autograd keeps its tensors alive anyway). Freed memory stays with the process, up to its peak use,
as with jemalloc or tcmalloc; the measured peak RSS stayed within 10 % of glibc's defaults. ``quintet``'s
command line applies it at start-up; set ``QUINTET_MALLOC_TUNING=0`` to keep glibc's defaults. It is skipped, untouched, when the C
library is not glibc, when ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``/``MALLOC_TOP_PAD_`` or a
``glibc.malloc`` tunable is set (the user's own choice wins) and when another allocator is preloaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "torch_threads", "tune_cpu_allocator"]

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc caps M_MMAP_THRESHOLD at 4 MiB * sizeof(long) = 32 MiB on 64-bit
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
_applied = False


def _glibc() -> Any | None:
    """The process's C library when it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc if version() else None


def _opted_out(env: dict[str, str]) -> bool:
    """True when the environment asks to keep glibc's defaults or configures malloc itself."""
    if env.get("QUINTET_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return True
    if not sys.platform.startswith("linux"):
        return True
    if any(k in env for k in _USER_SETTINGS) or "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
        return True
    return any(a in env.get("LD_PRELOAD", "") for a in _OTHER_ALLOCATORS)


def tune_cpu_allocator(env: dict[str, str] | None = None, libc: Any | None = None) -> bool:
    """Make glibc keep freed tensor memory for reuse (see the module docstring); idempotent.

    Args:
        env: environment to read the opt-outs from (default ``os.environ``).
        libc: the C library to configure (default: this process's, when it is glibc).

    Returns:
        True when the settings are in place (now or from an earlier call), False when skipped.
    """
    global _applied
    if _applied:
        return True
    if _opted_out(dict(os.environ if env is None else env)):
        return False
    libc = libc if libc is not None else _glibc()
    if libc is None:
        return False
    ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    _applied = ok
    return ok


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set ``torch.set_num_threads(n)`` for the ``with`` block, restored afterwards (``None`` or ``n <= 0``:
    unchanged)."""
    if n is None or n <= 0:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
