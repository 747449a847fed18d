"""LEIGNN benchmark: accuracy at equal training time, MD speed, scaling and NVE drift — one run.

    .venv/bin/python benchmarks/leignn.py            # full run (~80 min on 2 CPU cores)
    .venv/bin/python benchmarks/leignn.py --quick    # smoke test (~3 min)

1. Accuracy on GFN2-xTB aspirin (../shared/data/materials/md_xtb; MD17 protocol 1000/500/rest,
   seed 0): LEIGNN (direct and conservative forces), vanilla, vanilla+NMU, PyG SchNet and PyG
   ViSNet, each trained by the same trainer for the same wall-clock budget, same split, same loss
   (L1, 1·E + 50·F), same per-element energy reference.
2. MD speed: ASE velocity-Verlet steps/s through each model's calculator on periodic fcc Cu cells
   (~1,000 and ~10,000 atoms; 5 Å cutoff, 32 neighbours for every model), plus CHGNet at ~1,000
   atoms; LEIGNN's time per step from ~100 to ~10,000 atoms gives the scaling exponent.
3. NVE energy drift on ethanol (2.5 ps, 0.5 fs) with conservative and with direct forces.
4. ``--stages e3peers`` (added to the existing JSON): MACE (small, from scratch) and NequIP (preset S)
   trained by the same trainer for the same wall-clock on aspirin next to LEIGNN at the paper's
   default size and a speed size (64 x 3), tested on 1,000 test frames; MD atom-steps/s on Cu at ~100
   and ~1,000 atoms; the Pareto front (force MAE vs atom-steps/s); the exported TorchScript model's
   largest relative difference from the original. NequIP: ``pip install -c constraints.txt
   .[peers]``. MACE pins e3nn==0.4.4 (quintet has 0.6.0), so it goes into its own folder, which the
   benchmark appends to ``sys.path`` (it runs with e3nn 0.6.0)::

       pip install --no-deps --target benchmarks/work/mace_site mace-torch==0.3.16 torch-ema==0.3 \
           prettytable python-hostlist configargparse orjson opt_einsum h5py GitPython gitdb smmap wcwidth

Every stage caches its results under benchmarks/work/leignn, so an interrupted run resumes.
Writes benchmarks/results/leignn.json and leignn_{curves,parity,speed,nve}.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("QUINTET_SHARED_DATA", ROOT.parent / "shared" / "data")) / "materials" / "md_xtb"
WORK = ROOT / "benchmarks" / "work" / "leignn"
RESULTS = ROOT / "benchmarks" / "results"

from leignn_peers import PeerConfig, PeerPotential  # noqa: E402
from quintet.atomistic import keys as K  # noqa: E402
from quintet.atomistic.calculator import ModelCalculator  # noqa: E402
from quintet.io import atomic_open, atomic_save_json, load_json  # noqa: E402
from quintet.leignn.model import LEIGNN, LEIGNNModelConfig  # noqa: E402
from quintet.leignn.run import DataConfig, load_splits, parity_plot, predict_errors  # noqa: E402
from quintet.leignn.task import LossConfig, PotentialTask  # noqa: E402
from quintet.runtime import tune_cpu_allocator  # noqa: E402
from quintet.train import TrainConfig, fit, load_model_file  # noqa: E402

MODELS: dict[str, Any] = {
    "leignn_direct": lambda: LEIGNN(LEIGNNModelConfig(forces="direct", max_neighbors=32)),
    "leignn_conservative": lambda: LEIGNN(LEIGNNModelConfig(forces="conservative", max_neighbors=32)),
    "vanilla": lambda: LEIGNN(LEIGNNModelConfig(variant="vanilla", forces="direct", max_neighbors=32)),
    "vanilla_nmu": lambda: LEIGNN(
        LEIGNNModelConfig(variant="vanilla_nmu", forces="direct", max_neighbors=32)
    ),
    "schnet": lambda: PeerPotential(PeerConfig(kind="schnet")),
    "visnet": lambda: PeerPotential(PeerConfig(kind="visnet")),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


_SPLITS: dict[tuple, Any] = {}


def cached_splits(data: DataConfig, cutoff: float, max_neighbors: int | None) -> Any:
    """load_splits once per (data, graph) in this process: reading 5,000 frames takes a minute."""
    key = (data.path, data.seed, data.n_train, data.n_val, cutoff, max_neighbors)
    if key not in _SPLITS:
        _SPLITS[key] = load_splits(data, cutoff, max_neighbors, torch.float32)
    return _SPLITS[key]


def train_and_test(
    name: str, data: DataConfig, budget_s: float, work: Path, quick: bool, test_frames: int | None = None
) -> dict[str, Any]:
    """Train ``name`` for ``budget_s`` seconds of wall-clock and measure test errors (cached)."""
    out = work / name
    res_path = out / "test.json"
    if res_path.is_file():
        return load_json(res_path)
    torch.manual_seed(0)
    model = MODELS[name]()
    splits = cached_splits(data, model.config.cutoff, model.config.max_neighbors)
    task = PotentialTask(model, LossConfig(energy_weight=1.0, force_weight=50.0))
    cfg = TrainConfig(
        max_epochs=100_000,
        max_time_s=budget_s,
        batch_size=32,
        lr=5e-4,
        ema_decay=0.999,
        ema_warmup=True,
        plateau_patience=5,
        min_lr=5e-5,
        early_stop_patience=None,
        monitor="val/force_mae_meV_A",
        progress=False,
        seed=0,
    )
    log(
        f"train {name} ({n_params(model) / 1e6:.2f} M params) for {budget_s:.0f} s, load {os.getloadavg()[0]:.1f}"
    )
    result = fit(
        task,
        splits["train"],
        splits["val"],
        cfg,
        out,
        collate_fn=__import__("quintet.atomistic.batch", fromlist=["collate"]).collate,
    )
    model.load_state_dict(load_model_file(result.best_path)["state_dict"])
    test = splits["test"]
    if quick or test_frames:
        keep = test_frames or 200
        test = torch.utils.data.Subset(test, list(range(min(keep, len(test)))))
    metrics, arrays = predict_errors(model, test, 64, desc=f"test {name}")
    np.savez(out / "parity.npz", *arrays)
    history = [dict(r) for r in result.history]
    res = {
        **metrics,
        "params": n_params(model),
        "epochs": len(history),
        "steps": int(history[-1].get("step", 0)) if history else 0,
        "load_avg_start": os.getloadavg()[0],
        "curve": [
            {
                "time_s": float(r.get("time_s", 0)),
                "val_force_mae": float(r.get("val/force_mae_meV_A", np.nan)),
            }
            for r in history
        ],
    }
    atomic_save_json(res_path, res)
    log(
        f"{name}: force MAE {metrics['force_mae_meV_A']:.1f} meV/Å, energy MAE {metrics['energy_mae_meV_atom']:.2f} meV/atom"
    )
    return res


def cu_cell(n_target: int) -> Any:
    from ase.build import bulk

    reps = max(1, round((n_target / 4) ** (1 / 3)))
    dims = [reps, reps, reps]
    k = 0
    while 4 * np.prod(dims) < 0.9 * n_target:
        dims[k % 3] += 1
        k += 1
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(tuple(dims))
    atoms.rattle(0.05, seed=0)
    return atoms


def time_md(calc: Any, n_atoms: int, steps: int) -> float:
    """Seconds per velocity-Verlet step (after one warm-up step)."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = cu_cell(n_atoms)
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dyn.run(1)
    t0 = time.perf_counter()
    dyn.run(steps)
    return (time.perf_counter() - t0) / steps


def md_speed(quick: bool) -> dict[str, Any]:
    path = WORK / ("speed_quick.json" if quick else "speed.json")
    if path.is_file():
        return load_json(path)
    sizes = [108, 256, 500] if quick else [108, 256, 500, 1000, 2048, 4000, 10000]
    big = [256, 500] if quick else [1000, 10000]
    out: dict[str, Any] = {"sizes": {}, "at": {}}
    torch.manual_seed(0)
    calcs = {}
    for name in ("leignn_direct", "leignn_conservative", "schnet", "visnet"):
        model = MODELS[name]().eval()
        model.fit_normalisation([{K.ATOMIC_NUMBERS: torch.tensor([29]), K.ENERGY: torch.tensor(-3.5)}])
        calcs[name] = ModelCalculator(model, stress=False, check=model.check_elements)
    for n in sizes:
        steps = 5 if n <= 1000 else 2
        s = time_md(calcs["leignn_direct"], n, steps)
        out["sizes"][str(len(cu_cell(n)))] = {"leignn_direct": s}
        log(f"LEIGNN direct, {len(cu_cell(n))} atoms: {s * 1000:.1f} ms/step")
    for n in big:
        na = len(cu_cell(n))
        row: dict[str, float] = {}
        for name, calc in calcs.items():
            steps = 3 if na <= 1000 else 1
            try:
                row[name] = time_md(calc, n, steps)
            except RuntimeError as exc:  # out of memory on this machine
                row[name] = float("nan")
                log(f"{name} at {na} atoms failed: {exc}")
            log(f"{name}, {na} atoms: {row[name] * 1000:.1f} ms/step")
        out["at"][str(na)] = row
    try:
        from chgnet.model.dynamics import CHGNetCalculator

        chg = CHGNetCalculator(use_device="cpu")
        n = big[0]
        s = time_md(chg, n, 2)
        out["at"][str(len(cu_cell(n)))]["chgnet"] = s
        log(f"CHGNet, {len(cu_cell(n))} atoms: {s * 1000:.1f} ms/step")
    except ImportError as exc:
        log(f"CHGNet not available: {exc}")
    xs = np.array([int(k) for k in out["sizes"]], dtype=float)
    ys = np.array([v["leignn_direct"] for v in out["sizes"].values()])
    fit_from = xs >= 500 if (xs >= 500).sum() >= 3 else xs > 0
    out["scaling_exponent"] = float(np.polyfit(np.log(xs[fit_from]), np.log(ys[fit_from]), 1)[0])
    out["scaling_fit_sizes"] = xs[fit_from].astype(int).tolist()
    atomic_save_json(path, out)
    return out


def nve_drift(data: DataConfig, budget_s: float, quick: bool) -> dict[str, Any]:
    from quintet.atomistic.md import MDConfig, run_md
    from quintet.atomistic.structures import read_structures

    path = WORK / ("nve_quick.json" if quick else "nve.json")
    if path.is_file():
        return load_json(path)
    out: dict[str, Any] = {}
    frames = read_structures(data.path, index="-1:")
    for forces in ("conservative", "direct"):
        name = f"ethanol_{forces}"
        MODELS[name] = lambda f=forces: LEIGNN(LEIGNNModelConfig(forces=f))  # type: ignore[misc]
        res = train_and_test(name, data, budget_s, WORK / "nve_models", quick)
        model = MODELS[name]()
        model.load_state_dict(load_model_file(WORK / "nve_models" / name / "best.pt")["state_dict"])
        calc = ModelCalculator(model.double(), stress=False, check=model.check_elements)
        atoms = frames[0].copy()
        steps = 500 if quick else 5000
        md = run_md(
            atoms,
            calc,
            MDConfig(
                ensemble="nve",
                temperature_K=500,
                timestep_fs=0.5,
                steps=steps,
                write_every=20,
                out=str(WORK / f"nve_{forces}"),
            ),
            progress=False,
        )
        out[forces] = {
            "drift_meV_atom_ps": md.energy_drift_meV_atom_ps,
            "stopped_early": md.stopped_early,
            "reason": md.reason,
            "steps": md.steps_done,
            "force_mae_meV_A": res["force_mae_meV_A"],
        }
        log(f"NVE {forces}: drift {md.energy_drift_meV_atom_ps} meV/atom/ps ({md.reason})")
    atomic_save_json(path, out)
    return out


def at_common_steps(names: list[str], work: Path) -> dict[str, Any]:
    """Validation force MAE of every model at the same number of optimizer steps (the smallest final
    step count among them): a comparison that does not depend on how loaded the machine was."""
    import csv

    curves = {}
    for name in names:
        with open(work / name / "history.csv", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("val/force_mae_meV_A")]
        curves[name] = (
            np.array([float(r["step"]) for r in rows]),
            np.array([float(r["val/force_mae_meV_A"]) for r in rows]),
        )
    common = min(float(c[0][-1]) for c in curves.values())
    out = {}
    for name, (steps, mae) in curves.items():
        seen = mae[steps <= common]
        out[name] = (
            float(seen.min()) if len(seen) else float("nan")
        )  # best validation so far, as the trainer keeps
    return {"steps": int(common), "val_force_mae_meV_A": out}


def periodic(budget_s: float, quick: bool) -> dict[str, Any] | None:
    """LEIGNN (conservative) on the periodic EMT Cu-vacancy MD set made by `quintet data md` (docs/data.md)."""
    path = ROOT / "benchmarks" / "work" / "cu_vacancy_emt.extxyz"
    if not path.is_file():
        log(f"periodic set {path} not found: skipping (see docs/data.md to generate it)")
        return None
    data = DataConfig(path=str(path), n_train=1000, n_val=500, seed=0, split_dir=str(WORK / "splits_cu"))
    MODELS["cu_leignn_conservative"] = lambda: LEIGNN(
        LEIGNNModelConfig(forces="conservative", max_neighbors=32)
    )
    res = train_and_test("cu_leignn_conservative", data, budget_s, WORK / "periodic", quick)
    return {k: res[k] for k in ("energy_mae_meV_atom", "force_mae_meV_A", "n_structures", "epochs", "steps")}


def speed_from_cache_or_log(work: Path) -> dict[str, Any]:
    """speed.json, or — when the speed stage did not finish — the measurements its log recorded,
    plus a separately measured CHGNet point (chgnet_speed.json); missing entries are NaN."""
    import re

    if (work / "speed.json").is_file():
        speed = load_json(work / "speed.json")
    else:
        speed = {"sizes": {}, "at": {}, "incomplete": True}
        log_path = ROOT / "benchmarks" / "work" / "leignn_rest.log"
        in_sizes = True
        for line in log_path.read_text().splitlines():
            m = re.match(r"\[[\d:]+\] (LEIGNN direct|\w+), (\d+) atoms: ([\d.]+) ms/step", line)
            if not m:
                continue
            name, n, ms = m.group(1), m.group(2), float(m.group(3)) / 1000
            if name == "LEIGNN direct" and in_sizes:
                speed["sizes"][n] = {"leignn_direct": ms}
            else:
                in_sizes = False
                speed["at"].setdefault(n, {})[name.lower()] = ms
        xs = np.array([int(k) for k in speed["sizes"]], dtype=float)
        ys = np.array([v["leignn_direct"] for v in speed["sizes"].values()])
        sel = xs >= 500
        speed["scaling_exponent"] = float(np.polyfit(np.log(xs[sel]), np.log(ys[sel]), 1)[0])
        speed["scaling_fit_sizes"] = xs[sel].astype(int).tolist()
    chg = work / "chgnet_speed.json"
    if chg.is_file():
        c = load_json(chg)
        speed["at"].setdefault(str(c["atoms"]), {}).setdefault("chgnet", c["chgnet_s_per_step"])
    chg = work / "chgnet_speed_500.json"  # CHGNet at ~1,000 atoms needs > 17 GB here (OOM): measured at 500
    if chg.is_file():
        c = load_json(chg)
        row = speed["at"].setdefault(str(c.pop("atoms")), {})
        for k, v in c.items():
            row.setdefault(k, v)
    for row in speed["at"].values():
        for name in ("leignn_direct", "leignn_conservative", "schnet", "visnet"):
            row.setdefault(name, float("nan"))
    return speed


# ------------------------------------------------------------------------------------------------
# MACE and NequIP (stage "e3peers"): accuracy at equal budget, MD throughput, Pareto, export check
# ------------------------------------------------------------------------------------------------

MACE_SITE = ROOT / "benchmarks" / "work" / "mace_site"
MACE_INSTALL = (
    "pip install --no-deps --target benchmarks/work/mace_site mace-torch==0.3.16 torch-ema==0.3 prettytable "
    "python-hostlist configargparse orjson opt_einsum h5py GitPython gitdb smmap wcwidth"
)
E3_MODELS = ("leignn_direct", "leignn_conservative", "leignn_fast_direct", "mace_small", "nequip_s")


def e3_available() -> dict[str, str]:
    """Why MACE / NequIP can or cannot run here (an empty string: available)."""
    if MACE_SITE.is_dir() and str(MACE_SITE) not in sys.path:
        sys.path.append(str(MACE_SITE))  # appended: quintet's own e3nn 0.6.0 and torch stay first
    reasons = {}
    for kind, module, why in (
        ("mace", "mace.modules", "mace-torch 0.3.16 pins e3nn==0.4.4, which conflicts with quintet's e3nn 0.6.0 "
         f"(pip: ResolutionImpossible); install it apart with: {MACE_INSTALL}"),
        ("nequip", "nequip.model", "pip install -c constraints.txt nequip==0.19.1"),
    ):  # fmt: skip
        try:
            __import__(module)
            reasons[kind] = ""
        except ImportError as exc:
            reasons[kind] = f"{why} ({exc})"
    return reasons


def e3_model(name: str, elements: tuple[int, ...], avg_nbr: float) -> torch.nn.Module:
    from leignn_peers import E3PeerConfig, E3PeerPotential

    if name.startswith("mace") or name.startswith("nequip"):
        kind = "mace" if name.startswith("mace") else "nequip"
        return E3PeerPotential(E3PeerConfig(kind=kind, elements=elements, avg_num_neighbors=avg_nbr))
    forces = "conservative" if name.endswith("conservative") else "direct"
    size = {"hidden": 64, "num_layers": 3, "num_rbf": 32} if "fast" in name else {}
    return LEIGNN(LEIGNNModelConfig(forces=forces, max_neighbors=32, **size))


def _avg_neighbors(ds: Any, n: int = 100) -> float:
    return float(np.mean([ds[i][K.EDGE_INDEX].shape[1] / len(ds[i][K.ATOMIC_NUMBERS]) for i in range(n)]))


def e3_train(name: str, data: DataConfig, budget_s: float, work: Path, quick: bool) -> dict[str, Any]:
    """``name`` trained for ``budget_s`` on aspirin by the same trainer as the other models (cached)."""
    if (work / name / "test.json").is_file():
        return load_json(work / name / "test.json")
    splits = cached_splits(data, 5.0, 32)
    torch.manual_seed(0)
    MODELS[name] = lambda: e3_model(name, (1, 6, 8), _avg_neighbors(splits["train"]))
    return train_and_test(name, data, budget_s, work, quick, test_frames=200 if quick else 1000)


def e3_throughput(names: tuple[str, ...], sizes: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """Atom-steps/s of velocity-Verlet MD on periodic Cu (untrained models, same 5 Å / 32-neighbour graph)."""
    out: dict[str, dict[str, float]] = {}
    for name in names:
        torch.manual_seed(0)
        model = e3_model(name, (29,), 32.0).eval()
        model.fit_normalisation([{K.ATOMIC_NUMBERS: torch.tensor([29]), K.ENERGY: torch.tensor(-3.5)}])
        calc = ModelCalculator(model, stress=False, check=model.check_elements)
        for n in sizes:
            na = len(cu_cell(n))
            s = time_md(calc, n, 3 if na <= 1000 else 1)
            out.setdefault(name, {})[str(na)] = na / s
            log(f"{name}, {na} atoms: {s * 1000:.1f} ms/step, {na / s:.0f} atom-steps/s")
    return out


SCALING_SIZES = (108, 1008, 10976)


def scaling_one(name: str, n: int) -> dict[str, float]:
    """One (model, size) of the scaling stage, in this process: atom-steps/s and the process's peak RSS."""
    import resource

    e3_available()  # puts the separate MACE install on the path
    torch.manual_seed(0)
    model = e3_model(name, (29,), 32.0).eval()
    model.fit_normalisation([{K.ATOMIC_NUMBERS: torch.tensor([29]), K.ENERGY: torch.tensor(-3.5)}])
    calc = ModelCalculator(model, stress=False, check=model.check_elements)
    na = len(cu_cell(n))
    s = time_md(calc, n, 3 if na <= 1000 else 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"atoms": na, "atom_steps_per_s": na / s, "seconds_per_step": s, "peak_rss_mb": peak}


def md_scaling(names: tuple[str, ...] = E3_MODELS, sizes: tuple[int, ...] = SCALING_SIZES) -> dict[str, Any]:
    """MD throughput and peak memory of every model from ~100 to ~11,000 atoms, each (model, size) in its own
    process (so each peak RSS is that model's alone; the bare process with torch imported is ``baseline``).
    Resumable: finished (model, size) pairs are kept in ``md_scaling.json``."""
    import subprocess

    path = WORK / "md_scaling.json"
    out: dict[str, Any] = load_json(path) if path.is_file() else {}
    for name in ("baseline", *names):
        for n in (sizes[:1] if name == "baseline" else sizes):
            if str(n) in out.get(name, {}):
                continue
            cmd = [sys.executable, __file__, "--scaling-one", f"{name}:{n}", "--threads", "1"]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
            if proc.returncode != 0:
                raise RuntimeError(f"{name} at {n} atoms failed: {proc.stderr[-1500:]}")
            out.setdefault(name, {})[str(n)] = json.loads(proc.stdout.strip().splitlines()[-1])
            atomic_save_json(path, out)
            log(f"{name}, {n} atoms: {out[name][str(n)]}")
    return out


def merge_scaling(sc: dict[str, Any]) -> Path:
    """Add ``md_scaling`` (atom-steps/s and peak RSS per model and size) to leignn.json and plot it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = {k: v for k, v in sc.items() if k != "baseline"}
    table = {key: {m: {r["atoms"]: r[key] for r in v.values()} for m, v in models.items()}
             for key in ("atom_steps_per_s", "peak_rss_mb")}  # fmt: skip
    base = next(iter(sc.get("baseline", {}).values()), {}).get("peak_rss_mb")
    out = RESULTS / "leignn.json"
    result = load_json(out) if out.is_file() else {}
    result["md_scaling"] = {**table, "baseline_rss_mb": base, "note": "velocity Verlet, periodic fcc Cu, "
                            "untrained models, 5 Å / 32-neighbour graph, one thread; each point its own process"}  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m in models:
        xs = sorted(table["atom_steps_per_s"][m])
        axes[0].loglog(xs, [table["atom_steps_per_s"][m][x] for x in xs], "o-", label=m)
        axes[1].loglog(xs, [table["peak_rss_mb"][m][x] for x in xs], "o-", label=m)
    axes[0].set(xlabel="atoms", ylabel="atom-steps/s", title="MD throughput (1 CPU thread)")
    axes[1].set(xlabel="atoms", ylabel="peak RSS (MB)", title=f"peak memory (bare process: {base or 0:.0f} MB)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(RESULTS / "leignn_scaling.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    result["plots"] = sorted({*result.get("plots", []), "leignn_scaling.png"})
    atomic_save_json(out, result)
    return out


def export_rel_diff(model_path: Path, data: DataConfig) -> float:
    """Largest relative difference (energy, forces) between a model file and its TorchScript export."""
    from quintet.atomistic.batch import collate
    from quintet.leignn.export import ExportedPotential, export_model, load_exported

    model = e3_model("leignn_conservative", (1, 6, 8), 0.0)
    model.load_state_dict(load_model_file(model_path)["state_dict"])
    model.eval()
    exported = ExportedPotential(*load_exported(export_model(model, model_path.with_name("model_ts.pt"))))
    test = cached_splits(data, 5.0, 32)["test"]
    batch = collate([test[i] for i in range(20)])
    a, b = model(batch), exported(batch)
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max()) for k in (K.ENERGY, K.FORCES))


def e3_peers(data: DataConfig, budget_s: float, quick: bool) -> dict[str, Any]:
    """The e3peers stage: every model of E3_MODELS that can run, trained and timed in one run."""
    path = WORK / ("e3peers_quick.json" if quick else "e3peers.json")
    if path.is_file():
        return load_json(path)
    reasons = e3_available()
    names = tuple(n for n in E3_MODELS if not reasons.get(n.split("_")[0], ""))
    acc = {n: e3_train(n, data, budget_s, WORK / "e3acc", quick) for n in names}
    speed = e3_throughput(names, (108, 256) if quick else (108, 1000))
    rel = export_rel_diff(WORK / "e3acc" / "leignn_conservative" / "best.pt", data)
    out = {"unavailable": {k: v for k, v in reasons.items() if v}, "accuracy": acc, "atom_steps_per_s": speed,
           "export_max_rel_diff": rel, "budget_s_per_model": budget_s, "test_frames": 200 if quick else 1000}  # fmt: skip
    atomic_save_json(path, out)
    return out


def _pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Models not dominated in (lower force MAE, higher atom-steps/s)."""
    return [
        a for a, (ea, sa) in points.items()
        if not any(eb <= ea and sb >= sa and (eb, sb) != (ea, sa) for b, (eb, sb) in points.items() if b != a)
    ]  # fmt: skip


def e3_summary(e3: dict[str, Any]) -> dict[str, Any]:
    """The issue's keys: ratios vs MACE / NequIP, atom-steps/s, the Pareto front, the export check."""
    fm = {k: v["force_mae_meV_A"] for k, v in e3["accuracy"].items()}
    ref = max(next(iter(e3["atom_steps_per_s"].values())), key=int)  # ~1,000 atoms
    speed = {k: v[ref] for k, v in e3["atom_steps_per_s"].items()}
    leignn = {k: v for k, v in fm.items() if k.startswith("leignn")}
    out: dict[str, Any] = {
        "atom_steps_per_s": e3["atom_steps_per_s"],
        "export_max_rel_diff": e3["export_max_rel_diff"],
    }
    for peer in ("mace_small", "nequip_s"):
        kind = peer.split("_")[0]
        if peer not in fm:
            out[f"force_mae_ratio_vs_{kind}"] = None
            continue
        out[f"force_mae_ratio_vs_{kind}"] = min(leignn.values()) / fm[peer]
        good = [k for k, v in leignn.items() if v <= fm[peer]]
        pick = max(good, key=lambda k: speed[k]) if good else min(leignn, key=leignn.get)
        out[f"md_throughput_ratio_vs_{kind}"] = speed[pick] / speed[peer]
        out[f"md_throughput_ratio_vs_{kind}_model"] = pick
        out[f"leignn_at_least_as_accurate_as_{kind}"] = bool(good)
        if "leignn_conservative" in speed:  # like for like: both energy-conserving
            out[f"md_throughput_ratio_vs_{kind}_conservative"] = speed["leignn_conservative"] / speed[peer]
    points = {k: (fm[k], speed[k]) for k in fm}
    out["pareto"] = {"atoms": int(ref), "points": points, "front": _pareto_front(points)}
    out["unavailable_peers"] = e3["unavailable"]
    return out


def e3_plots(e3: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, (mae, sps) in summary["pareto"]["points"].items():
        ax1.scatter(sps, mae, s=40, marker="o" if name.startswith("leignn") else "s")
        ax1.annotate(name, (sps, mae), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax1.set_xscale("log")
    ax1.set_xlabel(f"MD atom-steps/s (Cu, {summary['pareto']['atoms']} atoms, 1 thread)")
    ax1.set_ylabel("aspirin test force MAE (meV/Å)")
    ax1.set_title(f"equal CPU budget ({e3['budget_s_per_model']:.0f} s each)")
    for name, res in e3["accuracy"].items():
        c = res["curve"]
        ax2.plot([r["time_s"] for r in c], [r["val_force_mae"] for r in c], "o-", ms=3, label=name)
    ax2.set_yscale("log")
    ax2.set_xlabel("training time (s)")
    ax2.set_ylabel("val force MAE (meV/Å)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(RESULTS / "leignn_pareto.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return ["leignn_pareto.png"]


def merge_e3(e3: dict[str, Any], quick: bool) -> Path:
    """Add the e3peers keys to the results JSON, keeping every existing key."""
    out = RESULTS / ("leignn_quick.json" if quick else "leignn.json")
    result = load_json(out) if out.is_file() else {}
    summary = e3_summary(e3)
    result.update(summary)
    result["plots"] = sorted({*result.get("plots", []), *e3_plots(e3, summary)})
    accuracy = {n: {k: v for k, v in res.items() if k != "curve"} for n, res in e3["accuracy"].items()}
    result["e3peers"] = {"accuracy": accuracy, "budget_s_per_model": e3["budget_s_per_model"],
                         "test_frames": e3["test_frames"]}  # fmt: skip
    atomic_save_json(out, result)
    log(json.dumps({k: v for k, v in summary.items() if k != "pareto"}, indent=1))
    return out


def plots(acc: dict[str, Any], speed: dict[str, Any], nve: dict[str, Any], work: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in acc.items():
        c = [p for p in r["curve"] if np.isfinite(p["val_force_mae"])]
        ax.plot([p["time_s"] / 60 for p in c], [p["val_force_mae"] for p in c], label=name)
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("validation force MAE (meV/Å)")
    ax.set_yscale("log")
    ax.set_title("aspirin (GFN2-xTB), equal wall-clock budget")
    ax.legend()
    fig.tight_layout()
    with atomic_open(RESULTS / "leignn_curves.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    files.append("leignn_curves.png")
    for name in acc:
        z = np.load(work / name / "parity.npz")
        parity_plot(work / name / "parity.png", *(z[f"arr_{k}"] for k in range(4)))
    fig, axes = plt.subplots(1, len(acc), figsize=(3 * len(acc), 3))
    for ax, name in zip(np.atleast_1d(axes), acc, strict=False):
        z = np.load(work / name / "parity.npz")
        ft, fp = z["arr_2"], z["arr_3"]
        ax.scatter(ft, fp, s=1, alpha=0.2)
        lim = [float(ft.min()), float(ft.max())]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_title(f"{name}\nMAE {acc[name]['force_mae_meV_A']:.0f} meV/Å", fontsize=8)
        ax.set_xlabel("xTB force (eV/Å)", fontsize=8)
    fig.tight_layout()
    with atomic_open(RESULTS / "leignn_parity.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    files.append("leignn_parity.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [int(k) for k in speed["sizes"]]
    ax.loglog(xs, [v["leignn_direct"] * 1000 for v in speed["sizes"].values()], "o-", label="LEIGNN direct")
    for name in ("leignn_conservative", "schnet", "visnet", "chgnet"):
        pts = [
            (int(n), row[name] * 1000)
            for n, row in speed["at"].items()
            if name in row and np.isfinite(row[name])
        ]
        if pts:
            ax.loglog(*zip(*pts, strict=True), "s--", label=name)
    ax.set_xlabel("atoms (periodic fcc Cu)")
    ax.set_ylabel("ms per MD step")
    ax.set_title(f"MD speed; LEIGNN exponent {speed['scaling_exponent']:.2f}")
    ax.legend()
    fig.tight_layout()
    with atomic_open(RESULTS / "leignn_speed.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    files.append("leignn_speed.png")
    if nve:
        import csv

        fig, ax = plt.subplots(figsize=(6, 4))
        for forces in nve:
            with open(WORK / f"nve_{forces}" / "thermo.csv", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            t = [float(r["time_fs"]) / 1000 for r in rows]
            e = np.array([float(r["E_tot_eV"]) for r in rows])
            ax.plot(t, (e - e[0]) * 1000 / 9, label=f"{forces} forces")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("E_tot − E_tot(0) (meV/atom)")
        ax.set_title("NVE ethanol, 0.5 fs")
        ax.legend()
        fig.tight_layout()
        with atomic_open(RESULTS / "leignn_nve.png", "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)
        files.append("leignn_nve.png")
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=600.0, help="training wall-clock per model (aspirin)")
    ap.add_argument("--nve-budget-s", type=float, default=300.0, help="training wall-clock per ethanol model")
    ap.add_argument("--quick", action="store_true", help="tiny budgets and sizes (smoke test)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--assemble", action="store_true", help="only write the JSON and plots from cached results"
    )
    ap.add_argument(
        "--models", default=None, help="comma-separated subset of the accuracy models to train now"
    )
    ap.add_argument(
        "--stages",
        default="acc,speed,nve,periodic",
        help="comma-separated stages to run now (results are cached; the JSON is written when all are cached); "
        "e3peers alone adds MACE / NequIP to the existing JSON; scaling alone adds md_scaling (throughput and "
        "peak memory per model at 108 / 1,008 / 10,976 atoms)",
    )
    ap.add_argument("--scaling-one", default=None, help=argparse.SUPPRESS)  # "model:atoms", one process
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()  # as the quintet command line does (quintet.runtime)
    if args.scaling_one:
        name, n = args.scaling_one.split(":")
        if name == "baseline":  # torch and the package imported, nothing else
            import resource

            print(json.dumps({"atoms": 0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        else:
            print(json.dumps(scaling_one(name, int(n))))
        return 0
    if not DATA.is_dir():
        print(f"data not found at {DATA} (set QUINTET_SHARED_DATA)", file=sys.stderr)
        return 2
    global WORK
    if args.quick:
        WORK = WORK / "quick"
        args.budget_s, args.nve_budget_s = 20.0, 15.0
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    aspirin = DataConfig(
        path=str(DATA / "aspirin_500K.extxyz"),
        n_train=1000,
        n_val=500,
        seed=0,
        split_dir=str(WORK / "splits_aspirin"),
    )
    ethanol = DataConfig(
        path=str(DATA / "ethanol_500K.extxyz"),
        n_train=1000,
        n_val=500,
        seed=0,
        split_dir=str(WORK / "splits_ethanol"),
    )
    stages = set() if args.assemble else set(args.stages.split(","))
    if "e3peers" in stages:  # MACE / NequIP: added to the existing results JSON
        merge_e3(e3_peers(aspirin, args.budget_s, args.quick), args.quick)
        return 0
    if "scaling" in stages:  # throughput and peak memory per model, ~100 to ~11,000 atoms
        print(f"wrote {merge_scaling(md_scaling())}")
        return 0
    if "acc" in stages:
        todo = args.models.split(",") if args.models else list(MODELS)
        acc = {n: train_and_test(n, aspirin, args.budget_s, WORK / "acc", args.quick) for n in todo}
    if "speed" in stages:
        speed = md_speed(args.quick)
    if "nve" in stages:
        nve = nve_drift(ethanol, args.nve_budget_s, args.quick)
    if "periodic" in stages:
        per = periodic(args.nve_budget_s, args.quick)
    if args.assemble:  # write the JSON from what is cached; stages not finished are reported as missing
        acc = {
            n: load_json(WORK / "acc" / n / "test.json")
            for n in MODELS
            if (WORK / "acc" / n / "test.json").is_file()
        }
        speed = speed_from_cache_or_log(WORK)
        nve = load_json(WORK / "nve.json") if (WORK / "nve.json").is_file() else {}
        per_path = WORK / "periodic" / "cu_leignn_conservative" / "test.json"
        per = (
            {
                k: load_json(per_path)[k]
                for k in ("energy_mae_meV_atom", "force_mae_meV_A", "n_structures", "epochs", "steps")
            }
            if per_path.is_file()
            else None
        )
    elif stages != {"acc", "speed", "nve", "periodic"}:
        log(
            f"stages {sorted(stages)} done; run again with all stages to write the JSON (everything is cached)"
        )
        return 0
    ref_at = min(speed["at"], key=lambda k: abs(int(k) - 1000))
    row = speed["at"][ref_at]
    chg_at = next((a for a, r in speed["at"].items() if np.isfinite(r.get("chgnet", float("nan")))), None)
    chg_row = speed["at"][chg_at] if chg_at else row
    fm = {k: v["force_mae_meV_A"] for k, v in acc.items()}
    best_leignn = min(fm["leignn_direct"], fm["leignn_conservative"])
    result = {
        "dataset": "aspirin GFN2-xTB 500 K, 1000 train / 500 val / 3500 test, seed 0",
        "budget_s_per_model": args.budget_s,
        "threads": args.threads,
        "force_mae_meV_A": fm,
        "energy_mae_meV_atom": {k: v["energy_mae_meV_atom"] for k, v in acc.items()},
        "params": {k: v["params"] for k, v in acc.items()},
        "epochs": {k: v["epochs"] for k, v in acc.items()},
        "steps": {k: v["steps"] for k, v in acc.items()},
        "force_mae_ratio_vs_schnet": best_leignn / fm.get("schnet", float("nan")),
        "force_mae_ratio_vs_visnet": best_leignn / fm.get("visnet", float("nan")),
        "equal_steps": at_common_steps(list(acc), WORK / "acc"),
        "load_avg_at_start": {k: v.get("load_avg_start") for k, v in acc.items()},
        "force_mae_ratio_vs_schnet_by_mode": {
            m: fm[f"leignn_{m}"] / fm.get("schnet", float("nan")) for m in ("direct", "conservative")
        },
        "force_mae_ratio_vs_visnet_by_mode": {
            m: fm[f"leignn_{m}"] / fm.get("visnet", float("nan")) for m in ("direct", "conservative")
        },
        "md_seconds_per_step": speed["at"],
        "md_atoms_reference": int(ref_at),
        "md_speed_ratio_vs_visnet": row["visnet"] / row["leignn_direct"],
        "md_speed_ratio_vs_visnet_conservative": row["visnet"] / row["leignn_conservative"],
        "md_speed_ratio_vs_schnet": row["schnet"] / row["leignn_direct"],
        "md_speed_ratio_vs_chgnet": chg_row.get("chgnet", float("nan")) / chg_row["leignn_direct"],
        "md_speed_ratio_vs_chgnet_conservative": chg_row.get("chgnet", float("nan"))
        / chg_row["leignn_conservative"],
        "md_chgnet_atoms": int(chg_at) if chg_at else None,
        "scaling_exponent": speed["scaling_exponent"],
        "scaling_seconds_per_step": speed["sizes"],
        "nve_drift_meV_atom_ps": {k: v["drift_meV_atom_ps"] for k, v in nve.items()},
        "nve": nve,
        "periodic_cu_vacancy_emt": per,
        "quick": args.quick,
        "wall_s": time.perf_counter() - t0,
    }
    result["plots"] = plots(acc, speed, nve, WORK / "acc")
    out = RESULTS / ("leignn_quick.json" if args.quick else "leignn.json")
    atomic_save_json(out, result)
    print(
        json.dumps(
            {
                k: v
                for k, v in result.items()
                if "ratio" in k or k in ("scaling_exponent", "nve_drift_meV_atom_ps")
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
