"""Allocator benchmark: glibc defaults vs :func:`quintet.runtime.tune_cpu_allocator`, side by side.

Each workload runs in fresh child processes, alternately with ``QUINTET_MALLOC_TUNING=0`` (glibc's
defaults, the trivial baseline) and with the tuning that the ``quintet`` command line applies, one torch
thread, random weights (speed does not depend on them), the sizes of the other benchmarks:

* ``deeprelax_predict``: graph + forward + 40-step solve, 64 strained 8-atom fcc alloy cells (EMT rows);
* ``deeprelax_train_step``: forward + backward + Adam on the same batch;
* ``definet_predict``: DefiNet forward, 8 MoS2 5×5×1 supercells with a vacancy;
* ``leignn_md_conservative`` / ``leignn_md_direct``: ASE velocity-Verlet steps through
  :class:`~quintet.atomistic.calculator.ModelCalculator`, fcc Cu, 500 atoms.

Reports the median seconds per call of every repeat, the ratio default / tuned (> 1: the tuning is
faster) and each child's peak RSS (the memory the tuning keeps). Writes
``benchmarks/results/allocator.json`` and ``allocator.png``.
Run: ``.venv/bin/python benchmarks/allocator.py [--repeats 3] [--only deeprelax_predict,...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORKLOADS = (
    "deeprelax_predict",
    "deeprelax_train_step",
    "definet_predict",
    "leignn_md_conservative",
    "leignn_md_direct",
)


def _deeprelax_batch():
    import numpy as np
    from ase.build import bulk

    from quintet.atomistic.batch import collate
    from quintet.atomistic.structures import from_ase

    rng = np.random.default_rng(0)
    recs = []
    for k in range(64):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        a.numbers[rng.random(len(a)) < 0.4] = 28
        a.rattle(0.05, seed=k)
        a.set_cell(a.cell * (1 + 0.03 * rng.standard_normal((3, 3))), scale_atoms=True)
        recs.append(from_ase(a))
    return collate(recs)


def _workload(name: str) -> tuple[Callable[[], object], int]:
    """(one call, calls per timing) of workload ``name``."""
    import torch

    from quintet.deeprelax.model import DeepRelax, ModelConfig

    torch.manual_seed(0)
    if name.startswith("deeprelax"):
        from quintet.atomistic import keys as K
        from quintet.deeprelax.inference import SolveConfig, relax_batch

        batch = _deeprelax_batch()
        model = DeepRelax(ModelConfig(hidden=64, num_layers=3, num_rbf=32))
        if name == "deeprelax_predict":
            model.eval()
            strip = {k: v for k, v in batch.items() if k != K.EDGE_INDEX}

            def predict():
                with torch.no_grad():
                    return relax_batch(model, dict(strip), SolveConfig(steps=40))

            return predict, 5
        opt = torch.optim.Adam(model.parameters(), 1e-3)

        def step():
            out = model(batch)
            loss = out["mu_relaxed"].sum() + out["mu_displace"].sum() + out["pred_cell"].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step, 3
    if name == "definet_predict":
        from ase.build import mx2

        from quintet.atomistic.datasets import pair_record
        from quintet.definet.model import DefiNet, DefiNetConfig
        from quintet.definet.predict import predict_batches

        pristine = mx2("MoS2", size=(5, 5, 1), vacuum=10.0)
        pristine.pbc = (True, True, False)
        records = []
        for k in range(8):
            defect = pristine.copy()
            del defect[k]
            defect.rattle(0.02, seed=k)
            records.append(pair_record(defect, None, pristine, 0.3, source=f"defect {k}"))
        model = DefiNet(DefiNetConfig()).eval()
        return lambda: predict_batches(model, records, batch_size=8), 5
    from ase.build import bulk
    from ase.md.verlet import VelocityVerlet

    from quintet.atomistic.calculator import ModelCalculator
    from quintet.leignn.model import LEIGNN, LEIGNNModelConfig

    forces = name.rsplit("_", 1)[1]
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((5, 5, 5))
    atoms.rattle(0.05, seed=0)
    model = LEIGNN(LEIGNNModelConfig(max_neighbors=32, forces=forces))
    for w in model.parameters():  # zero-initialised heads (the energy readout) would give F = 0: no motion
        if w.dim() > 1 and not w.any():
            torch.nn.init.normal_(w, std=0.01)
    atoms.calc = ModelCalculator(model, stress=False)
    dyn = VelocityVerlet(atoms, timestep=1.0 * 0.09822694788464063)  # 1 fs in ASE units
    return lambda: dyn.run(1), 3


def child(name: str) -> None:
    """Time workload ``name`` in this process (tuned unless QUINTET_MALLOC_TUNING=0); print JSON."""
    import torch

    from quintet.runtime import tune_cpu_allocator

    tuned = tune_cpu_allocator()
    torch.set_num_threads(1)
    call, n = _workload(name)
    for _ in range(2):
        call()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        times.append((time.perf_counter() - t0) / n)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tuned": tuned, "s_per_call": statistics.median(times), "peak_rss_mb": peak_mb}))


def run_child(name: str, tuned: bool) -> dict:
    env = dict(os.environ, QUINTET_MALLOC_TUNING="1" if tuned else "0", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, __file__, "--child", name], env=env, capture_output=True, text=True, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    if res["tuned"] != tuned:
        raise RuntimeError(f"{name}: child reports tuned={res['tuned']}, expected {tuned}")
    return res


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    ratios = [results[n]["speedup"] for n in names]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(names, ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios])
    ax.axvline(1.0, color="k", lw=1)
    for k, r in enumerate(ratios):
        ax.text(r, k, f" {r:.2f}x", va="center")
    ax.set_xlabel("time with glibc defaults / time tuned (>1: tuning faster)")
    ax.set_xlim(0, max(ratios) * 1.25)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=3, help="child processes per setting, alternating")
    ap.add_argument("--only", default=None, help="comma-separated workloads")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    names = args.only.split(",") if args.only else list(WORKLOADS)
    from quintet.io import atomic_save_json

    out = RESULTS / "allocator.json"
    results = {}
    if args.only and out.is_file():  # keep the other workloads' rows
        results = {k: v for k, v in json.loads(out.read_text()).items() if not k.startswith("_")}
    for name in names:
        runs: dict[str, list[dict]] = {"default": [], "tuned": []}
        for _ in range(args.repeats):  # alternate, so that machine load drifts hit both alike
            runs["default"].append(run_child(name, False))
            runs["tuned"].append(run_child(name, True))
        row = {
            key: {
                "s_per_call": statistics.median(r["s_per_call"] for r in rs),
                "s_per_call_all": [r["s_per_call"] for r in rs],
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
            }
            for key, rs in runs.items()
        }
        row["speedup"] = row["default"]["s_per_call"] / row["tuned"]["s_per_call"]
        row["peak_rss_ratio"] = row["tuned"]["peak_rss_mb"] / row["default"]["peak_rss_mb"]
        results[name] = row
        print(f"{name}: {row['speedup']:.2f}x faster tuned, peak RSS x{row['peak_rss_ratio']:.2f}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"torch_threads": 1, "repeats": args.repeats, "cpu": "shared 2-core CPU", "python": sys.version.split()[0]}
    atomic_save_json(out, {**results, "_meta": meta})
    plot(results, RESULTS / "allocator.png")


if __name__ == "__main__":
    main()
