"""Screening at scale: ``quintet deeprelax predict`` over a folder of tens of thousands of CIFs.

One run, three ways over the same generated folder (``--n`` CIFs, default 20,000, of 2-16-atom
strained and rattled fcc/bcc/hcp/rocksalt cells built with ASE, seeded):

1. the trivial baseline: read every CIF and write it back unchanged (the I/O floor of the job);
2. ``quintet deeprelax predict`` as one process (the package's own CLI, in a subprocess, so its peak
   RSS is measured on its own);
3. the same as 2 shards side by side (``--shard 1/2`` and ``--shard 2/2``, then ``merge``).

The CHGNet relaxation of a sample of the same structures (``--oracle-sample``, FIRE, cell + positions,
fmax 0.05) gives the speed ratio against the iterative route. Numbers are per core and as ratios: the
machine is shared, so absolute times move with its load.

Writes ``benchmarks/results/screening.json`` + ``screening.png`` and merges it into ``models.json`` under ``screening``.

Run: ``nice -n 10 .venv/bin/python benchmarks/screening.py --model deeprelax-bulk``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROTOTYPES = (("Cu", "fcc", 3.61), ("Fe", "bcc", 2.87), ("Mg", "hcp", 3.21), ("NaCl", "rocksalt", 5.64))


def make_folder(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` seeded CIFs (resumable: existing files are kept)."""
    from ase.build import bulk

    from quintet.atomistic.structures import write_structure

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        sym, kind, a = PROTOTYPES[k % len(PROTOTYPES)]
        reps = tuple(int(r) for r in rng.integers(1, 3, size=3))
        path = folder / f"s{k:06d}.cif"
        if path.exists():
            rng.normal(size=(64, 3))  # keep the stream aligned with a fresh run
            continue
        atoms = bulk(sym, kind, a=a * (1 + rng.normal(0, 0.02)), cubic=kind != "hcp").repeat(reps)
        atoms.positions += rng.normal(0, 0.05, size=(64, 3))[: len(atoms)]
        write_structure(path, atoms)
    return folder


def copy_floor(folder: Path, out: Path) -> float:
    """Seconds to read and write back every structure (the job's I/O floor)."""
    from quintet.atomistic.pipeline import discover, iter_structures, write_output

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for item in iter_structures(discover([folder])):
        write_output(out, item.id, item.atoms, "cif")
    return time.perf_counter() - t0


def _predict_cmd(folder: Path, out: Path, model: str, shard: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "quintet.cli", "deeprelax", "predict", str(folder), "-m", model, "-o", str(out)]
    return [*cmd, "--threads", "1", *(["--shard", shard] if shard else [])]


def run_procs(cmds: list[list[str]]) -> tuple[float, list[float]]:
    """Wall seconds of the commands run side by side, and each one's peak RSS in MB."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()) for c in cmds]
    rss = []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        if status != 0:
            raise RuntimeError(f"{' '.join(cmds[0][:6])}... failed with status {status}")
        rss.append(usage.ru_maxrss / 1024)
    return time.perf_counter() - t0, rss


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def oracle_sample(folder: Path, k: int) -> dict[str, float]:
    """CHGNet relaxation (cell + positions, FIRE, fmax 0.05) of the first ``k`` inputs: seconds each."""
    from quintet.atomistic.pipeline import Finisher, discover, iter_structures

    fin = Finisher("chgnet", fmax=0.05, steps=500, cell=True)
    times, steps = [], []
    for item in list(iter_structures(discover([folder])))[:k]:
        res = fin(item.atoms)
        times.append(res.seconds)
        steps.append(res.steps)
    return {"n": k, "median_s": float(np.median(times)), "median_steps": float(np.median(steps))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--model", default="deeprelax-bulk", help="model file or pretrained name")
    ap.add_argument("--oracle-sample", type=int, default=10)
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "screening"))
    ap.add_argument("--plot-only", action="store_true", help="redraw screening.png from screening.json")
    args = ap.parse_args()
    if args.plot_only:
        print(plot(json.loads((RESULTS / "screening.json").read_text())))
        return
    work = Path(args.work)
    folder = make_folder(work / "cifs", args.n)
    floor = copy_floor(folder, work / "copy")
    one_s, one_rss = run_procs([_predict_cmd(folder, work / "one", args.model, None)])
    two_s, two_rss = run_procs([_predict_cmd(folder, work / "two", args.model, f"{k}/2") for k in (1, 2)])
    subprocess.run([sys.executable, "-m", "quintet.cli", "deeprelax", "merge", "-o", str(work / "two")],
                   check=True, env=_env(), stdout=subprocess.DEVNULL)  # fmt: skip
    oracle = oracle_sample(folder, args.oracle_sample) if args.oracle_sample else None
    result: dict[str, Any] = {
        "n_files": args.n, "model": args.model, "io_floor_s_per_structure": floor / args.n,
        "structures_per_s_per_core": args.n / one_s, "peak_rss_mb": max(one_rss),
        "one_process_s": one_s, "two_shards_s": two_s, "shard_speedup": one_s / two_s,
        "two_shards_peak_rss_mb": two_rss, "oracle_chgnet": oracle,
        "speedup_vs_oracle": (oracle["median_s"] * args.n / one_s) if oracle else None,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "note": "shared 2-core machine: absolute times move with its load; the ratios are the result",
    }  # fmt: skip
    _save(result)
    print(json.dumps(result, indent=2))


def plot(result: dict[str, Any]) -> Path:
    """Structures per second: the read/write floor, one process, two shards, and CHGNet on the same cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = result["n_files"]
    rates = {
        "read + write\n(floor)": 1 / result["io_floor_s_per_structure"],
        "predict,\n1 process": n / result["one_process_s"],
        "predict,\n2 shards": n / result["two_shards_s"],
    }
    if result.get("oracle_chgnet"):
        rates["CHGNet\nrelaxation"] = 1 / result["oracle_chgnet"]["median_s"]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar(list(rates), list(rates.values()), color=["0.6", "C0", "C1", "C3"][: len(rates)])
    ax.set_yscale("log")
    ax.set_ylabel("structures / s")
    ax.set_title(f"deeprelax predict over {n:,} CIFs ({result['model']})")
    fig.tight_layout()
    path = RESULTS / "screening.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _save(result: dict[str, Any]) -> None:
    from quintet.io import atomic_save_json

    atomic_save_json(RESULTS / "screening.json", result)
    plot(result)
    models = RESULTS / "models.json"
    data = json.loads(models.read_text()) if models.is_file() else {}
    data["screening"] = result
    atomic_save_json(models, data)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
