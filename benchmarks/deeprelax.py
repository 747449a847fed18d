"""DeepRelax benchmark: one-shot relaxation vs the dummy baseline and vs iterative oracle relaxation.

For each dataset (EMT fcc alloys generated here, CHGNet bulk oxides, CHGNet 2D defects):
1. train DeepRelax with the shared trainer under a budget of process CPU time (``--clock wall`` for
   wall-clock; CPU time keeps runs comparable on a shared, unevenly loaded machine);
2. on the held-out test split: coordinate / cell / distance errors next to the dummy (unrelaxed input),
   uncertainty calibration, and the time per structure of graph + forward + solve (batches of up to 64
   structures / 2,048 atoms, 1 CPU thread), eager and through ``torch.compile`` (``--compile``);
3. on a subset of the test split: iterative relaxation with the oracle (FIRE, fmax 0.05) from the
   unrelaxed input (steps and time) and from the DeepRelax prediction (steps: "predict, then finish");
4. EMT only: the finish-step floor, FIRE from starts placed on the relaxation path at t × the dummy's
   error (:func:`finish_floor`), i.e. how accurate a prediction must be for the finish-step target;
5. model-free references (``--bounds-only``, ``--oracle-studies``): the exact-cell bound, a composition
   ridge baseline for the cell, the oracle re-relaxing its own test inputs as they are and with small
   noise (:func:`oracle_sensitivity`: how much of the label the input fixes), the floor on any test split.

Writes ``benchmarks/results/deeprelax.json`` (updated after every dataset) and PNG plots.
Run: ``nice -n 10 .venv/bin/python benchmarks/deeprelax.py [--quick] [--only emt_alloys,bulk_oxides,defects2d]
[--budget-scale 2] [--position-weight 1]``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from quintet.atomistic import keys as K
from quintet.atomistic.batch import collate
from quintet.atomistic.oracle import RelaxPairsConfig, get_calculator, make_relax_pairs
from quintet.atomistic.pipeline import Finisher
from quintet.atomistic.structures import to_ase
from quintet.config import from_dict, parse_overrides
from quintet.deeprelax.inference import SolveConfig, relax_ensemble
from quintet.deeprelax.jobs import (
    DataConfig,
    compiled,
    evaluate_model,
    load_dataset,
    load_deeprelax,
)
from quintet.deeprelax.model import DeepRelax, ModelConfig
from quintet.deeprelax.task import DeepRelaxTask, LossConfig
from quintet.io import atomic_save_json
from quintet.runtime import tune_cpu_allocator
from quintet.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "materials"
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / "work" / "deeprelax"
# per-structure rows and oracle runs behind the plots, committed so that a later run can redraw every panel
ROWS = RESULTS / "deeprelax_rows"


def datasets(quick: bool) -> dict[str, dict]:
    return {
        "emt_alloys": {
            "data": DataConfig(
                root=str(WORK / ("emt_pairs_quick" if quick else "emt_pairs")), layout="custom"
            ),
            "oracle": "emt",
            "filter": "unitcell",
            "cell": True,
            "budget_s": 60 if quick else 540,
            "oracle_subset": 10 if quick else 40,
            "relax_cell": True,
            "finish_floor": True,  # cheap with EMT: FIRE steps from interpolated starts (finish_floor())
        },
        "bulk_oxides": {
            "data": DataConfig(
                root=str(SHARED / "bulk_oxides"), layout="custom", seed=0, fractions=(0.7, 0.1, 0.2)
            ),
            "oracle": "chgnet",
            "filter": "frechet",
            "cell": True,
            "budget_s": 60 if quick else 240,
            "oracle_subset": 1 if quick else 2,
            "relax_cell": True,
        },
        "defects2d": {
            "data": DataConfig(root=str(SHARED / "defects2d"), layout="2dmd", seed=0),
            "oracle": "chgnet",
            "filter": "frechet",
            "cell": False,
            "budget_s": 60 if quick else 540,
            "oracle_subset": 2 if quick else 8,
            "relax_cell": False,
        },
    }


def emt_recipe(out: Path, n: int, seed: int) -> RelaxPairsConfig:
    """The EMT alloy pairs: substituted, strained, rattled fcc 2×1×1 cells relaxed with the cell."""
    return RelaxPairsConfig(
        out=out, n=n, supercell=(2, 1, 1), cell_filter="unitcell", rattle=0.08, strain=0.04, fmax=0.05,
        max_steps=300, oracle="emt", seed=seed, substitute_fraction=0.4,
    )  # fmt: skip


def train_one(
    name: str,
    spec: dict,
    quick: bool,
    clock: str = "cpu",
    position_weight: float = 1.0,
    lr_schedule: str = "plateau",
    seed: int = 0,
    workdir: Path | None = None,
) -> tuple[DeepRelax, dict]:
    """Train one DeepRelax on ``spec``'s data; ``seed`` sets its initial weights and data order
    (ensemble members differ only in it)."""
    base = {"hidden": 64, "num_layers": 3, "num_rbf": 32, "relax_cell": spec["relax_cell"]}
    mcfg = from_dict(ModelConfig, {**base, **spec.get("model_set", {})})
    tr = load_dataset(spec["data"], "train", mcfg)
    va = load_dataset(spec["data"], "val", mcfg)
    torch.manual_seed(seed)
    model = DeepRelax(mcfg)
    cfg = TrainConfig(
        max_epochs=10_000,
        max_time_s=spec["budget_s"],
        time_budget_clock=clock,
        batch_size=8,
        lr=1e-3,
        ema_decay=0.99,
        lr_schedule=lr_schedule,  # type: ignore[arg-type]
        min_lr=1e-5,
        grad_clip=150.0,
        early_stop_patience=None,
        plateau_patience=5,
        monitor="val/coord_mae",
        accelerator="cpu",
        progress=False,
        seed=seed,
    )
    t0 = time.perf_counter()
    res = fit(
        DeepRelaxTask(model, LossConfig(position_weight=position_weight)),
        tr,
        va,
        cfg,
        workdir or WORK / name,
        collate_fn=collate,
        resume=False,
        extra={"system": "deeprelax", "model": model.config_dict()},
    )
    model, _ = load_deeprelax(res.best_path)
    info = {
        "train_pairs": len(tr),
        "extra_train": [
            str(Path(d).relative_to(ROOT)) if Path(d).is_relative_to(ROOT) else d for d in spec["data"].extra_train
        ],
        "val_pairs": len(va),
        "epochs": len(res.history),
        "train_time_s": round(time.perf_counter() - t0, 1),
        "budget_s": spec["budget_s"],
        "budget_clock": clock,
        "steps": res.history[-1]["step"],
        "position_weight": position_weight,
        "lr_schedule": lr_schedule,
        "seed": seed,
        "best_val_coord_mae_A": res.best_metric,
        "model": mcfg.__dict__,
    }
    return model, info


SOLVE_STEPS = (20, 30, 40, 60, 100)


def pick_solve_steps(
    model: DeepRelax | list[DeepRelax], val, choice: str, tol: float = 0.005
) -> tuple[int, dict, dict | None]:
    """Adam steps of the coordinate solve: ``choice`` as a number, or with ``"auto"`` the fewest of
    :data:`SOLVE_STEPS` whose validation coordinate MAE is within ``tol`` (relative) of the best one.

    The solve is an inference-time knob (100 steps published); its cost is most of the time per
    structure on small cells. Returns ``(steps, {steps: validation coordinate MAE, Å}, validation
    summary at the chosen steps, or None when ``choice`` is a number)``.
    """
    if choice != "auto":
        return int(choice), {}, None
    on_val = {st: evaluate_model(model, val, solve=SolveConfig(steps=st), progress=False)[0] for st in SOLVE_STEPS}
    sweep = {st: v["coord_mae_A"] for st, v in on_val.items()}
    best = min(sweep.values())
    steps = min(st for st, v in sweep.items() if v <= best * (1 + tol))
    return steps, sweep, on_val[steps]


def trained_elsewhere(model_file: Path) -> dict:
    """Training facts of a model trained by another run, from the ``history.csv`` beside its file."""
    import csv

    with open(model_file.parent / "history.csv", newline="", encoding="utf-8") as fh:
        hist = list(csv.DictReader(fh))
    vals = [float(r["val/coord_mae"]) for r in hist if r.get("val/coord_mae")]
    return {
        "trained_by": str(model_file),
        "epochs": len(hist),
        "steps": int(hist[-1]["step"]),
        "train_time_s": float(hist[-1]["time_s"]),
        "best_val_coord_mae_A": min(vals) if vals else None,
    }


def _finisher(spec: dict, calc, optimizer: str = "fire") -> Finisher:
    """The predict verb's finish (fmax 0.05, 1,000 steps) with the dataset's oracle settings."""
    return Finisher(spec["oracle"], 0.05, 1000, spec["cell"], spec["filter"], optimizer, calc=calc)


def from_unrelaxed(
    unrel, pid: str | None, spec: dict, calc, bfgs: bool, stored: dict, cache: Path | None
) -> dict:
    """Oracle relaxation of one unrelaxed input (FIRE steps and seconds, BFGS steps), from ``stored``
    when there (keyed by id and oracle settings), else run and, with an id and a ``cache``, saved."""
    key = f"{pid}|{spec['oracle']}|{spec['filter']}|cell{int(spec['cell'])}|fmax0.05"
    got = stored.get(key, {}) if pid else {}
    if "fire_steps" not in got or (bfgs and "bfgs_steps" not in got):
        ru = _finisher(spec, calc)(unrel)
        got = {"fire_steps": ru.steps, "fire_s": ru.seconds}
        if bfgs:
            got["bfgs_steps"] = _finisher(spec, calc, "bfgs")(unrel).steps
        if cache is not None and pid:
            stored[key] = got
            atomic_save_json(cache, stored)
    return got


def oracle_compare(
    models: list[DeepRelax],
    ds,
    spec: dict,
    k: int,
    calc,
    bfgs: bool = True,
    solve: SolveConfig | None = None,
    cache: Path | None = None,
) -> dict:
    """Iterative relaxation from the unrelaxed input and from the prediction, on k test structures
    (FIRE, the issue's measure; BFGS too when ``bfgs``: quasi-Newton, like DFT ionic relaxations).

    The relaxations from the unrelaxed input depend on no model: with ``cache`` (a JSON file) they are
    kept per structure id and oracle settings (steps and seconds, measured on this CPU) and reused."""
    stored: dict[str, dict] = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    steps_u, steps_f, t_u, n_atoms = [], [], [], []
    bfgs_u: list[int] = []
    bfgs_f: list[int] = []
    ids = getattr(ds, "ids", None)
    for idx in range(min(k, len(ds))):
        rec = ds[idx]
        unrel = to_ase({kk: rec[kk] for kk in (K.POSITIONS, K.ATOMIC_NUMBERS, K.CELL, K.PBC)})
        got = from_unrelaxed(unrel, ids[idx] if ids else None, spec, calc, bfgs, stored, cache)
        su, tu = got["fire_steps"], got["fire_s"]
        res = relax_ensemble(models, collate([rec]), solve or SolveConfig())
        pred = to_ase(
            {
                K.POSITIONS: res["positions"],
                K.ATOMIC_NUMBERS: rec[K.ATOMIC_NUMBERS],
                K.CELL: res["cell"][0],
                K.PBC: rec[K.PBC],
            }
        )
        sf = _finisher(spec, calc)(pred).steps
        if bfgs:
            bfgs_u.append(got["bfgs_steps"])
            bfgs_f.append(_finisher(spec, calc, "bfgs")(pred).steps)
        steps_u.append(su)
        steps_f.append(sf)
        t_u.append(tu)
        n_atoms.append(len(unrel))
        print(
            f"  oracle {idx}: {len(unrel)} atoms, from unrelaxed {su} steps {tu:.1f}s, from DeepRelax {sf} steps"
        )
    out = {"steps_unrelaxed": steps_u, "steps_finish": steps_f, "oracle_time_s": t_u, "n_atoms": n_atoms}
    if bfgs:
        out.update(bfgs_steps_unrelaxed=bfgs_u, bfgs_steps_finish=bfgs_f)
    return out


FLOOR_T = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)


def finish_floor(ds, spec: dict, k: int, calc) -> dict:
    """FIRE steps to fmax from ``relaxed + t (unrelaxed - relaxed)`` (cell and fractional coordinates
    interpolated) for t in :data:`FLOOR_T`, on the first k test structures.

    A start at t has an error t times the dummy's, along the relaxation path. The median steps at t over
    those at t = 1 is the finish-step ratio that a prediction with coordinate error t × dummy can expect,
    so the curve says how accurate a prediction must be to meet the finish-step target.
    """
    steps: dict[float, list[int]] = {t: [] for t in FLOOR_T}
    for idx in range(min(k, len(ds))):
        rec = ds[idx]
        cu, cr = rec[K.CELL].double().reshape(3, 3), rec[K.RELAXED_CELL].double().reshape(3, 3)
        fu = torch.linalg.solve(cu.T, rec[K.POSITIONS].double().T).T  # fractional coordinates
        fr = torch.linalg.solve(cr.T, rec[K.RELAXED_POSITIONS].double().T).T
        df = fu - fr
        df -= torch.round(df)
        for t in FLOOR_T:
            cell = cr + t * (cu - cr)
            start = to_ase(
                {
                    K.POSITIONS: (fr + t * df) @ cell,
                    K.ATOMIC_NUMBERS: rec[K.ATOMIC_NUMBERS],
                    K.CELL: cell,
                    K.PBC: rec[K.PBC],
                }
            )
            steps[t].append(_finisher(spec, calc)(start).steps)
    med = {t: float(np.median(v)) for t, v in steps.items()}
    return {
        "t": list(FLOOR_T),
        "median_steps": [med[t] for t in FLOOR_T],
        "steps_ratio": [med[t] / med[1.0] if med[1.0] > 0 else float("nan") for t in FLOOR_T],
        "structures": min(k, len(ds)),
    }


def _floor_t_for(floor: dict, ratio: float) -> float:
    """Where the floor curve first reaches the step ratio ``ratio``: the error (× dummy) a prediction
    may have to meet it (linear between grid points, from (0, 0))."""
    t, r = [0.0, *floor["t"]], [0.0, *floor["steps_ratio"]]
    for a in range(1, len(t)):
        if r[a] > ratio:
            return float(np.interp(ratio, [r[a - 1], r[a]], [t[a - 1], t[a]]))
    return 1.0


def _finish_summary(orc: dict, optimizer: str = "fire") -> dict:
    """Median oracle steps from the prediction and from the input, and their ratio (``{}`` when
    ``optimizer`` was not run). FIRE keys carry no suffix (the issue's measure), BFGS ones ``_bfgs``."""
    pre, suf = ("", "") if optimizer == "fire" else (f"{optimizer}_", f"_{optimizer}")
    if f"{pre}steps_finish" not in orc:
        return {}
    med_f = float(np.median(orc[f"{pre}steps_finish"]))
    med_u = float(np.median(orc[f"{pre}steps_unrelaxed"]))
    return {
        f"median_finish_steps{suf}": med_f,
        f"median_unrelaxed_steps{suf}": med_u,
        f"finish_steps_ratio{suf}": med_f / med_u if med_u > 0 else float("nan"),
    }


def plots(results: dict, out: Path, suffix: str = "") -> None:
    """Error vs dummy, σ vs error and finish-step histograms, one panel per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [results[n]["dummy_coord_mae_A"] for n in names], 0.4, label="dummy (unrelaxed)")
    ax.bar(x + 0.2, [results[n]["coord_mae_A"] for n in names], 0.4, label="DeepRelax")
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylabel("coordinate MAE (Å)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"deeprelax_error_vs_dummy{suffix}.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
    for ax, n in zip(axes[0], names, strict=True):
        rows = results[n]["_rows"]
        ax.scatter([r["uncertainty_A"] for r in rows], [r["coord_mae_A"] for r in rows], s=8)
        ax.set_xlabel("mean σ (Å)")
        ax.set_ylabel("coordinate MAE (Å)")
        ax.set_title(f"{n}: Spearman {results[n]['uncertainty_spearman']:.2f}")
    fig.tight_layout()
    fig.savefig(out / f"deeprelax_sigma_vs_error{suffix}.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(2, len(names), figsize=(4 * len(names), 6.5), squeeze=False)
    for col, n in enumerate(names):
        o = results[n]["_oracle"]
        for row, (opt, pre) in enumerate((("FIRE", ""), ("BFGS", "bfgs_"))):
            ax = axes[row][col]
            if pre + "steps_finish" not in o:
                ax.set_axis_off()
                continue
            su, sf = o[pre + "steps_unrelaxed"], o[pre + "steps_finish"]
            bins = np.linspace(0, max(su + sf + [1]), 15)
            ax.hist(su, bins=bins, alpha=0.6, label="from unrelaxed")
            ax.hist(sf, bins=bins, alpha=0.6, label="from DeepRelax")
            ax.set_xlabel(f"oracle {opt} steps to fmax 0.05")
            ax.set_title(n)
            ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"deeprelax_finish_steps{suffix}.png", dpi=120)
    plt.close(fig)


def evaluate_run(
    models: list[DeepRelax], name: str, spec: dict, args: argparse.Namespace, calcs: dict
) -> tuple[dict, list, dict]:
    """Test-split errors, timings and the oracle comparison of one model or an ensemble of them.

    For an ensemble, the structure-level uncertainty compared with the errors is chosen on the
    validation split: the distances' σ (members' Laplace scales with their disagreement) or the
    members' spread. Returns ``(results row, per-structure rows, oracle runs)``."""
    test = load_dataset(spec["data"], "test", models[0].cfg)
    val = load_dataset(spec["data"], "val", models[0].cfg)
    steps, sweep, on_val = pick_solve_steps(models, val, args.solve_steps)
    solve = SolveConfig(steps=steps)
    # batches of at most 64 structures / 2,048 atoms (the predict defaults); batch 16 and the
    # published 100-step solve timed for comparison
    summary, rows = evaluate_model(models, test, solve=solve, progress=False)
    summary["solve_steps"] = steps
    summary.update(exact_cell_bound(test))
    summary["malloc_tuned"] = args.malloc_tuned  # timings with quintet.runtime's malloc settings
    summary["solve_steps_val_sweep"] = sweep
    summary["time_per_structure_s_batch16"] = evaluate_model(
        models, test, batch_size=16, solve=solve, progress=False
    )[0]["time_per_structure_s"]
    # the published solve: the main evaluation itself when the sweep picked 100 steps
    s100 = (
        summary
        if steps == 100
        else evaluate_model(models, test, solve=SolveConfig(steps=100), progress=False)[0]
    )
    summary["time_per_structure_s_solve100"] = s100["time_per_structure_s"]
    summary["coord_mae_ratio_vs_dummy_solve100"] = s100["coord_mae_ratio_vs_dummy"]
    if not args.no_compile:  # predict/eval --compile: one-off compile on the first batch, then faster
        fast = compiled(models)
        t0 = time.perf_counter()
        evaluate_model(fast, test, solve=solve, progress=False)  # compiles (dynamic shapes: once)
        first = time.perf_counter() - t0
        comp = evaluate_model(fast, test, solve=solve, progress=False)[0]
        summary["time_per_structure_s_compiled"] = comp["time_per_structure_s"]
        summary["compile_s"] = first - comp["time_per_structure_s"] * len(test)
        summary["coord_mae_A_compiled"] = comp["coord_mae_A"]
        summary["compiled"] = all(f.compiled for f in fast)  # False: fell back to eager (warned)
    measure = "uncertainty"
    if len(models) > 1:
        on_val = on_val or evaluate_model(models, val, solve=solve, progress=False)[0]
        summary["val_uncertainty_spearman"] = on_val["uncertainty_spearman"]
        summary["val_spread_spearman"] = on_val["spread_spearman"]
        measure = "spread" if on_val["spread_spearman"] > on_val["uncertainty_spearman"] else "uncertainty"
        summary["uncertainty_measure_selected_on_val"] = measure
    print(f"  test: {summary}")
    if spec["oracle"] not in calcs:
        calcs[spec["oracle"]] = get_calculator(spec["oracle"])
        # warm-up call so the first timed relaxation does not pay the model load
        rec = test[0]
        warm = to_ase({kk: rec[kk] for kk in (K.POSITIONS, K.ATOMIC_NUMBERS, K.CELL, K.PBC)})
        warm.calc = calcs[spec["oracle"]]
        warm.get_forces()
    orc = oracle_compare(
        models,
        test,
        spec,
        spec["oracle_subset"],
        calcs[spec["oracle"]],
        bfgs=not args.no_bfgs,
        solve=solve,
        cache=WORK / f"oracle_unrelaxed_{name}{quick_suffix(args)}.json",
    )
    oracle_t = float(np.mean(orc["oracle_time_s"]))
    fire = _finish_summary(orc)
    if spec.get("finish_floor"):  # depends on no model: measured once per dataset, kept in the work folder
        cache = WORK / f"finish_floor_{name}{quick_suffix(args)}.json"
        if cache.is_file():
            floor = json.loads(cache.read_text())
        else:
            floor = finish_floor(test, spec, spec["oracle_subset"], calcs[spec["oracle"]])
            atomic_save_json(cache, floor)
        floor["error_ratio_needed_for_steps_ratio_0.3"] = _floor_t_for(floor, 0.3)
        floor["steps_ratio_at_this_error"] = float(
            np.interp(summary["coord_mae_ratio_vs_dummy"], [0.0, *floor["t"]], [0.0, *floor["steps_ratio"]])
        )
        fire["finish_floor"] = floor
    speed_c = oracle_t / summary["time_per_structure_s_compiled"] if "compile_s" in summary else None
    res = {
        **summary,
        "oracle": spec["oracle"],
        "oracle_time_per_structure_s": oracle_t,
        "speedup_vs_oracle": oracle_t / summary["time_per_structure_s"],
        **({"speedup_vs_oracle_compiled": speed_c} if speed_c else {}),
        **fire,
        "oracle_subset_size": len(orc["steps_unrelaxed"]),
        **_finish_summary(orc, "bfgs"),
        "targets": {
            "coord_mae_ratio_vs_dummy<=0.35": summary["coord_mae_ratio_vs_dummy"] <= 0.35,
            "speedup_vs_oracle>=50": oracle_t / summary["time_per_structure_s"] >= 50,
            **({"speedup_vs_oracle_compiled>=50": speed_c >= 50} if speed_c else {}),
            "finish_steps_ratio<=0.3": fire["finish_steps_ratio"] <= 0.3,
            "uncertainty_spearman>=0.3": summary[f"{measure}_spearman"] >= 0.3,
        },
    }
    return res, rows, orc


def exact_cell_bound(ds) -> dict[str, float]:
    """Coordinate MAE of a perfect cell-only prediction: the relaxed cell, exactly, with the unrelaxed
    fractional coordinates (``u·F`` with the true deformation F). It depends on no model; a ratio to the
    dummy above the target means no cell head alone can meet it, the internal relaxation must be
    predicted too."""
    err, dummy = [], []
    for k in range(len(ds)):
        r = ds[k]
        pos, rel = r[K.POSITIONS].double(), r[K.RELAXED_POSITIONS].double()
        cell_u, cell_r = r[K.CELL].double().reshape(3, 3), r[K.RELAXED_CELL].double().reshape(3, 3)
        affine = pos @ torch.linalg.solve(cell_u, cell_r)  # frac_u @ cell_r, frac_u = pos @ cell_u^-1
        err.append(float((affine - rel).abs().mean()))
        dummy.append(float((pos - rel).abs().mean()))
    e, d = float(np.mean(err)), float(np.mean(dummy))
    return {"exact_cell_coord_mae_A": e, "exact_cell_coord_mae_ratio_vs_dummy": e / d}


RIDGE_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)


def composition_cell_baseline(train, val, test) -> dict[str, float]:
    """A model-free reference for the cell head: ridge regression from composition (element fractions)
    to the cell deformation ``F - I`` (relaxed cell = unrelaxed cell · F), its strength chosen on the
    validation cells. Returns its test cell MAE (Å, the 9 entries, like ``cell_mae_A``)."""

    def arrays(ds, elements: list[int]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        x, y, cu, cr = [], [], [], []
        for k in range(len(ds)):
            r = ds[k]
            z = r[K.ATOMIC_NUMBERS].numpy()
            x.append([*(np.mean(z == e) for e in elements), 1.0])
            cu.append(r[K.CELL].double().reshape(3, 3).numpy())
            cr.append(r[K.RELAXED_CELL].double().reshape(3, 3).numpy())
            y.append((np.linalg.solve(cu[-1], cr[-1]) - np.eye(3)).ravel())
        return np.asarray(x), np.asarray(y), cu, cr

    elements = sorted({int(e) for k in range(len(train)) for e in train[k][K.ATOMIC_NUMBERS].tolist()})
    xt, yt, _, _ = arrays(train, elements)
    on_val, on_test = arrays(val, elements), arrays(test, elements)

    def cell_mae(split: tuple, lam: float) -> float:
        w = np.linalg.solve(xt.T @ xt + lam * np.eye(xt.shape[1]), xt.T @ yt)
        x, _, cu, cr = split
        errs = [np.abs(c @ (np.eye(3) + p.reshape(3, 3)) - t).mean() for c, p, t in zip(cu, x @ w, cr, strict=True)]
        return float(np.mean(errs))

    lam = min(RIDGE_LAMBDAS, key=lambda v: cell_mae(on_val, v))
    return {"ridge_cell_mae_A": cell_mae(on_test, lam), "ridge_cell_lambda": lam}


SENSITIVITY_NOISE = (0.001, 0.01)  # Å, Gaussian per Cartesian component; the shared oxides' rattle is 0.03 Å


def _oracle_outcome(start, unrel, spec: dict, calc) -> tuple[np.ndarray, int]:
    """The oracle's relaxed positions from ``start`` (FIRE, fmax 0.05, the labels' cell mode), unwrapped
    like the labels to the images nearest ``unrel``'s atoms, and its step count."""
    from quintet.atomistic.datasets import pair_record

    res = _finisher(spec, calc)(start)
    return pair_record(unrel, res.atoms, dtype=torch.float64)[K.RELAXED_POSITIONS].numpy(), res.steps


def oracle_sensitivity(ds, spec: dict, calc, draws: int = 3, seed: int = 0) -> dict:
    """How much of a test split's relaxation is fixed by its input: re-relax each unrelaxed input with
    the oracle as it is and after adding Gaussian noise of :data:`SENSITIVITY_NOISE` Å to its positions
    (``draws`` draws each), and measure every outcome against the label, like a prediction.

    The unperturbed re-relaxation checks that the oracle reproduces its labels. A perturbed outcome is
    what the oracle itself would predict from an input known to that precision: where it lands far from
    the label, the relaxed structure depends on input details below the noise (a symmetry-breaking
    instability choosing a variant), and no one-shot model that does not resolve them can do better than
    the typical outcome. ``median_outcome`` is that best guess from the perturbed outcomes and the label
    (per coordinate), scored against each of them.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for idx in range(len(ds)):
        rec = ds[idx]
        unrel = to_ase({kk: rec[kk] for kk in (K.POSITIONS, K.ATOMIC_NUMBERS, K.CELL, K.PBC)})
        label = rec[K.RELAXED_POSITIONS].double().numpy()
        dummy = float(np.abs(rec[K.POSITIONS].double().numpy() - label).mean())

        same, steps0 = _oracle_outcome(unrel.copy(), unrel, spec, calc)
        row = {"n_atoms": len(unrel), "dummy_coord_mae_A": dummy, "steps": steps0,
               "rerelax_coord_mae_A": float(np.abs(same - label).mean())}  # fmt: skip
        for noise in SENSITIVITY_NOISE:
            outs = []
            for _ in range(draws):
                start = unrel.copy()
                start.positions = start.positions + rng.normal(0.0, noise, start.positions.shape)
                outs.append(_oracle_outcome(start, unrel, spec, calc)[0])
            errs = [float(np.abs(o - label).mean()) for o in outs]
            med = np.median(np.stack([label, *outs]), axis=0)
            row[f"noise{noise:g}_coord_mae_A"] = errs
            row[f"noise{noise:g}_median_outcome_mae_A"] = float(
                np.mean([np.abs(med - y).mean() for y in [label, *outs]])
            )
        rows.append(row)
        print(f"  sensitivity {idx}: {json.dumps(row)}")
    d = float(np.mean([r["dummy_coord_mae_A"] for r in rows]))
    out: dict = {"draws": draws, "noise_A": list(SENSITIVITY_NOISE), "rows": rows,
                 "rerelax_ratio_vs_dummy": float(np.mean([r["rerelax_coord_mae_A"] for r in rows])) / d}  # fmt: skip
    for noise in SENSITIVITY_NOISE:
        out[f"noise{noise:g}_ratio_vs_dummy"] = float(
            np.mean([np.mean(r[f"noise{noise:g}_coord_mae_A"]) for r in rows]) / d
        )
        out[f"noise{noise:g}_median_outcome_ratio_vs_dummy"] = float(
            np.mean([r[f"noise{noise:g}_median_outcome_mae_A"] for r in rows]) / d
        )
    return out


def quick_suffix(args: argparse.Namespace) -> str:
    """Suffix of every work/result file of a ``--quick`` run (kept apart from the full run's)."""
    return "_quick" if args.quick else ""


def member_dir(run: str, m: int, suffix: str = "") -> Path:
    """Work folder of ensemble member ``m`` (member 0 is the single model of earlier runs); ``suffix``
    (:func:`quick_suffix`) keeps ``--quick`` runs apart."""
    top = WORK / (run + suffix)
    return top if m == 0 else top / f"member{m}"


def member(run: str, m: int, spec: dict, args: argparse.Namespace, info: dict | None = None) -> tuple[DeepRelax, dict]:
    """Ensemble member ``m`` of ``run`` (seed ``m``): its trained model when ``--reuse`` finds one, else
    trained now. Training facts come from ``train_info.json`` beside the model (or ``info``)."""
    d = member_dir(run, m, quick_suffix(args))
    facts = d / "train_info.json"
    if args.reuse and (d / "best.pt").is_file() and (facts.is_file() or info):
        print(f"== {run} member {m}: re-evaluating the trained model {d / 'best.pt'}")
        model, _ = load_deeprelax(d / "best.pt")
        return model, json.loads(facts.read_text()) if facts.is_file() else dict(info or {})
    print(f"== {run} member {m}: training (budget {spec['budget_s']} s, seed {m})")
    model, info = train_one(
        run, spec, args.quick, args.clock, args.position_weight, args.lr_schedule, seed=m, workdir=d
    )
    atomic_save_json(facts, info)
    return model, info


def plot_ensembles(ensembles: dict, full: dict, out: Path, suffix: str = "") -> None:
    """Per structure: coordinate error vs the single model's σ, the ensemble's σ and its spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(ensembles), 3, figsize=(12, 3.5 * len(ensembles)), squeeze=False)
    for row, (key, ens) in enumerate(ensembles.items()):
        base = key.split("_ensemble")[0]
        panels = [
            (base, "single model: mean σ (Å)", full.get(base), "uncertainty_A", "uncertainty_spearman"),
            (key, "ensemble: mean σ (Å)", ens, "uncertainty_A", "uncertainty_spearman"),
            (key, "ensemble: spread of members (Å)", ens, "spread_A", "spread_spearman"),
        ]
        for ax, (title, label, res, col, rho) in zip(axes[row], panels, strict=True):
            if res is None:
                ax.set_axis_off()
                continue
            rows = res["_rows"]
            ax.scatter([r[col] for r in rows], [r["coord_mae_A"] for r in rows], s=8)
            ax.set_xlabel(label)
            ax.set_ylabel("coordinate MAE (Å)")
            ax.set_title(f"{title}: Spearman {res[rho]:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / f"deeprelax_ensemble{suffix}.png", dpi=120)
    plt.close(fig)


def plot_finish_floor(full: dict, out: Path, suffix: str = "") -> None:
    """FIRE finish-step ratio vs the start's error (× dummy) along the relaxation path, with the
    rows measured from DeepRelax predictions (single models and ensembles) and the 0.3 target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bases = [k for k, v in full.items() if "finish_floor" in v and "_ensemble" not in k]
    if not bases:
        return
    fig, axes = plt.subplots(1, len(bases), figsize=(5 * len(bases), 3.8), squeeze=False)
    for ax, base in zip(axes[0], bases, strict=True):
        fl = full[base]["finish_floor"]
        ax.plot([0, *fl["t"]], [0, *fl["steps_ratio"]], "o-", label="start = relaxed + t (unrelaxed − relaxed)")
        for key, row in full.items():
            if key == base or key.startswith(base + "_ensemble"):
                ax.plot(row["coord_mae_ratio_vs_dummy"], row["finish_steps_ratio"], "s", ms=8, label=f"{key} prediction")
        ax.axhline(0.3, color="grey", ls="--", label="target 0.3")
        ax.set_xlabel("coordinate error of the start (× dummy)")
        ax.set_ylabel("median FIRE steps (× from unrelaxed)")
        ax.set_title(f"{base}: target needs ≈ {fl['error_ratio_needed_for_steps_ratio_0.3']:.2f}× dummy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"deeprelax_finish_floor{suffix}.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=None)
    parser.add_argument("--emt-pairs", type=int, default=1500, help="EMT alloy pairs to generate (resumable)")
    parser.add_argument(
        "--emt-extra",
        type=int,
        default=4800,
        help="more EMT pairs for training only (same recipe, seed 1; resumable, about 16 min on one core); "
        "validation and test stay those of the --emt-pairs set. 0: train on the --emt-pairs training split "
        "only (1,200 pairs; the rows before this default, and --tag _1200_pairs)",
    )
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every training budget")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="what the budgets measure")
    parser.add_argument(
        "--position-weight", type=float, default=1.0, help="loss.position_weight (0: published)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="re-evaluate models trained by an earlier run (with --only)"
    )
    parser.add_argument(
        "--lr-schedule",
        choices=("cosine", "plateau"),
        default="plateau",
        help="plateau: ReduceLROnPlateau (patience 5 epochs); cosine: anneal to 1e-5 over the budget "
        "(worse here: EMT alloys 0.44x vs 0.30x dummy at 900 CPU-s, benchmarks/results/lr_schedule_ab.json)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="evaluate this trained model file for dataset NAME instead of training one (repeatable), e.g. "
        "defects2d=benchmarks/work/definet/deeprelax_all/best.pt (the DeepRelax of benchmarks/definet.py)",
    )
    parser.add_argument(
        "--solve-steps",
        default="auto",
        help="Adam steps of the coordinate solve, or 'auto': the fewest of 20/30/40/60/100 within 0.5%% "
        "of the best validation coordinate MAE (100 is published; timed as well)",
    )
    parser.add_argument(
        "--oxide-extra",
        action="append",
        default=[],
        metavar="DIR",
        help="more oxide pairs for training only (repeatable; DataConfig.extra_train), e.g. folders made by "
        "'quintet data relax-pairs' with the double-perovskite recipe (docs/deeprelax.md); compositions "
        "of validation/test pairs are left out",
    )
    parser.add_argument(
        "--tag",
        default="",
        help="suffix of the work folder and results key (a variant kept beside the main row, not plotted), "
        "e.g. --tag _shared_only",
    )
    parser.add_argument(
        "--members",
        type=int,
        default=1,
        help="ensemble size: members differ in their seed (initial weights, data order); the ensemble "
        "is evaluated beside member 0",
    )
    parser.add_argument(
        "--train-only", action="store_true", help="train the members (see --member) of --only, evaluate nothing"
    )
    parser.add_argument(
        "--member", type=int, action="append", default=[], help="with --train-only: this member only (repeatable)"
    )
    parser.add_argument(
        "--bounds-only",
        action="store_true",
        help="only add the exact-cell bound (exact_cell_bound; no model) to every row of the --only datasets",
    )
    parser.add_argument(
        "--model-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a ModelConfig field of the trained models (repeatable; use with --tag), "
        "e.g. detach_base_cell=true",
    )
    parser.add_argument(
        "--oracle-studies",
        default="",
        metavar="sensitivity,floor",
        help="only run these model-free studies of the --only datasets' test splits (comma list) and add them "
        "to deeprelax.json as <name>_oracle_studies: 'sensitivity' re-relaxes the inputs as they are and with "
        "0.001 / 0.01 A of noise (oracle_sensitivity); 'floor' is the finish-step floor on the whole test split "
        "(finish_floor)",
    )
    parser.add_argument("--no-bfgs", action="store_true", help="FIRE finish only")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile timing")
    parser.add_argument("--oracle-scale", type=float, default=1.0, help="multiply every oracle subset size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.malloc_tuned = tune_cpu_allocator()  # as the quintet command line does (quintet.runtime)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_json = RESULTS / ("deeprelax_quick.json" if args.quick else "deeprelax.json")
    results: dict = {}
    if out_json.is_file() and args.only:  # keep the other datasets' results
        results = {k: v for k, v in json.loads(out_json.read_text()).items() if not k.startswith("_")}
    specs = datasets(args.quick)
    model_set = parse_overrides(args.model_set)  # the command line's key=value parsing
    from_dict(ModelConfig, model_set)  # an unknown key or a bad value fails here, before any work
    for spec in specs.values():
        spec["budget_s"] = spec["budget_s"] * args.budget_scale
        spec["oracle_subset"] = max(1, round(spec["oracle_subset"] * args.oracle_scale))
        spec["model_set"] = model_set
    specs["bulk_oxides"]["data"].extra_train = [str(Path(d).resolve()) for d in args.oxide_extra]
    names = args.only.split(",") if args.only else list(specs)
    calcs: dict = {}
    full: dict = {}
    if "emt_alloys" in names:  # resumable: pairs already in meta.csv are kept
        t0 = time.perf_counter()
        make_relax_pairs(emt_recipe(WORK / ("emt_pairs_quick" if args.quick else "emt_pairs"),
                                    120 if args.quick else args.emt_pairs, seed=0))  # fmt: skip
        if args.emt_extra:  # another seed: other pairs, while validation and test stay those of emt_pairs
            extra = WORK / ("emt_pairs_extra_quick" if args.quick else "emt_pairs_extra")
            make_relax_pairs(emt_recipe(extra, min(args.emt_extra, 120) if args.quick else args.emt_extra, seed=1))
            specs["emt_alloys"]["data"].extra_train = [str(extra)]
            # one composition in one 8-atom prototype is no near-duplicate here (strain, rattle and
            # site order are drawn per pair), and the main split shares compositions too
            specs["emt_alloys"]["data"].exclude_eval_formulas = False
        print(f"EMT pairs ready ({time.perf_counter() - t0:.0f} s)")
    if args.bounds_only:  # a property of each test split: every row of that dataset gets it
        for name in names:
            mc = ModelConfig(relax_cell=specs[name]["relax_cell"])
            split = {sp: load_dataset(specs[name]["data"], sp, mc) for sp in ("train", "val", "test")}
            bound = exact_cell_bound(split["test"])
            if specs[name]["cell"]:
                bound.update(composition_cell_baseline(split["train"], split["val"], split["test"]))
            print(f"== {name}: {bound}")
            for key in results:
                if (key == name or key.startswith(name + "_")) and not key.endswith("_oracle_studies"):
                    results[key].update(bound)
        atomic_save_json(out_json, {**json.loads(out_json.read_text()), **results})
        return
    if args.oracle_studies:  # properties of a test split and its oracle, not of any model
        studies = args.oracle_studies.split(",")
        if unknown := set(studies) - {"sensitivity", "floor"}:
            parser.error(f"unknown --oracle-studies {sorted(unknown)}; use sensitivity and/or floor")
        for name in names:
            spec = specs[name]
            test = load_dataset(spec["data"], "test", ModelConfig(relax_cell=spec["relax_cell"]))
            if spec["oracle"] not in calcs:
                calcs[spec["oracle"]] = get_calculator(spec["oracle"])
            calc = calcs[spec["oracle"]]
            key = f"{name}_oracle_studies"
            got: dict = {}
            if "sensitivity" in studies:
                sens = oracle_sensitivity(test, spec, calc)
                atomic_save_json(ROWS / f"{name}_sensitivity{quick_suffix(args)}.json", sens)
                got["sensitivity"] = {k: v for k, v in sens.items() if k != "rows"}
            if "floor" in studies:
                floor = finish_floor(test, spec, len(test), calc)
                floor["error_ratio_needed_for_steps_ratio_0.3"] = _floor_t_for(floor, 0.3)
                if name in results:  # where the main row's coordinate error sits on the curve
                    floor["steps_ratio_at_main_row_error"] = float(np.interp(
                        results[name]["coord_mae_ratio_vs_dummy"], [0.0, *floor["t"]], [0.0, *floor["steps_ratio"]]
                    ))  # fmt: skip
                got["finish_floor"] = floor
            print(f"== {key}: {json.dumps(got)}")
            on_disk = json.loads(out_json.read_text()) if out_json.is_file() else {}  # re-read: concurrent runs
            got = {**on_disk.get(key, {}), **got}  # a study run on its own keeps the other's results
            atomic_save_json(out_json, {**on_disk, key: got})
            results[key] = got
        redraw(results, {}, list(specs), quick_suffix(args))
        return
    given = dict(m.split("=", 1) for m in args.model)
    if args.train_only:  # train (or find) the chosen members, no evaluation: one process per core
        for name in names:
            for m in args.member or range(args.members):
                member(name + args.tag, m, specs[name], args)
        return
    for name in names:
        spec = specs[name]
        run = name + args.tag  # work folder and results key
        if name in given:
            print(f"== {name}: evaluating the given model {given[name]}")
            model, _ = load_deeprelax(given[name])
            info = {**trained_elsewhere(Path(given[name])), "model": model.cfg.__dict__}
        else:
            model, info = member(run, 0, spec, args, results.get(run, {}).get("training"))
        runs = {run: [model]}
        if args.members > 1:
            runs[f"{run}_ensemble{args.members}"] = [model] + [
                member(run, m, spec, args)[0] for m in range(1, args.members)
            ]
        for key, models in runs.items():
            res, rows, orc = evaluate_run(models, name, spec, args, calcs)
            res["training"] = info if len(models) == 1 else {"members": len(models), "member0": info}
            results[key] = res
            full[key] = {**res, "_rows": rows, "_oracle": orc}
            atomic_save_json(ROWS / f"{key}{quick_suffix(args)}.json", full[key])
            if out_json.is_file() and args.only:  # re-read: rows a concurrent --only run wrote meanwhile stay
                on_disk = {k: v for k, v in json.loads(out_json.read_text()).items() if not k.startswith("_")}
                results = {**on_disk, **{k: results[k] for k in full}}
            atomic_save_json(
                out_json,
                {**results, "_meta": {"torch_threads": 1, "cpu": "shared 2-core CPU", "quick": args.quick}},
            )
            print(f"== {key}: {json.dumps({k: v for k, v in res.items() if k != 'training'}, default=str)}")
    redraw(results, full, list(specs), quick_suffix(args))


def redraw(results: dict, full: dict, names: list[str], sfx: str) -> None:
    """Redraw every plot from the rows measured so far (``full``, plus the per-structure files of
    earlier ``--only`` runs) and the model-free oracle studies kept in ``results``."""
    for key in results:
        f = ROWS / f"{key}{sfx}.json"
        if key not in full and f.is_file():
            full[key] = json.loads(f.read_text())
    missing = [k for k in names if k not in full]
    if missing:  # a dataset has no per-structure rows (not run yet, or a fresh checkout): keep the plots whole
        print(f"plots kept: no per-structure rows for {missing} in {ROWS} (a run over all datasets redraws them)")
    else:
        plots({k: full[k] for k in names if k in full}, RESULTS, sfx)
    # the plots show the main rows (a dataset's name, optionally with _ensembleN); --tag variants stay in the JSON
    main_rows = {k: v for k, v in full.items() if re.fullmatch(rf"({'|'.join(names)})(_ensemble\d+)?", k)}
    for name in names:  # a floor measured by --oracle-studies (whole test split) joins its dataset's panel
        floor = results.get(f"{name}_oracle_studies", {}).get("finish_floor")
        if name in main_rows and floor and "finish_floor" not in main_rows[name]:
            main_rows[name] = {**main_rows[name], "finish_floor": floor}
    plot_finish_floor(main_rows, RESULTS, sfx)
    ensembles = {k: v for k, v in main_rows.items() if "_ensemble" in k}
    if ensembles:
        plot_ensembles(ensembles, main_rows, RESULTS, sfx)
    for name in names:
        sens = ROWS / f"{name}_sensitivity{sfx}.json"
        if name in full and sens.is_file():
            plot_sensitivity(name, full[name], json.loads(sens.read_text()), RESULTS, sfx)


def plot_sensitivity(name: str, row: dict, sens: dict, out: Path, suffix: str = "") -> None:
    """Per test structure, coordinate error × its dummy: DeepRelax next to the oracle re-relaxing the
    same input as it is and with 0.001 / 0.01 Å of noise (mean of the draws, bars from min to max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    srows = sens["rows"]
    x = np.arange(len(srows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(srows) + 2), 3.8))
    series = [("DeepRelax", [r["coord_mae_A"] for r in row["_rows"]], None),
              ("oracle, same input", [r["rerelax_coord_mae_A"] for r in srows], None)]  # fmt: skip
    for noise in sens["noise_A"]:
        draws = [np.asarray(r[f"noise{noise:g}_coord_mae_A"]) for r in srows]
        series.append((f"oracle, input ± {noise:g} Å", [d.mean() for d in draws], draws))
    w = 0.8 / len(series)
    dummy = np.asarray([r["dummy_coord_mae_A"] for r in srows])
    for k, (label, vals, draws) in enumerate(series):
        y = np.asarray(vals) / dummy
        err = None
        if draws is not None:
            lo = np.asarray([d.min() for d in draws]) / dummy
            hi = np.asarray([d.max() for d in draws]) / dummy
            err = np.stack([y - lo, hi - y])
        ax.bar(x + (k - (len(series) - 1) / 2) * w, y, w, yerr=err, capsize=2, label=label)
    ax.axhline(0.35, color="grey", ls="--", label="target 0.35")
    ax.set_xticks(x, [f"{k}\n{r['steps']} st" for k, r in enumerate(srows)], fontsize=7)
    ax.set_xlabel("test structure (oracle FIRE steps)")
    ax.set_ylabel("coordinate MAE (× dummy)")
    ax.set_title(f"{name}: how far the oracle's own relaxation moves when its input moves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"deeprelax_{name}_sensitivity{suffix}.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
