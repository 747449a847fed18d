"""MedAugment's classification claim, trained to convergence: brain-tumour MRI at 128 px, every policy until
its validation accuracy stops improving (the same patience for all), 3 seeds, against no augmentation and
every peer, with the spread.

    nice .venv/bin/python benchmarks/medaugment_converged.py --shard 1/2 &   # the runs, split over 2 cores
    nice .venv/bin/python benchmarks/medaugment_converged.py --shard 2/2 &
    .venv/bin/python benchmarks/medaugment_converged.py --summary-only        # table, plot, JSON

Same data, split, pools, network and optimiser as ``benchmarks/medaugment.py`` (the harness
``medaugment_harness.py``: ``make_pool``, ``train_and_test``); what changes is the image size
(128 px instead of 64) and the budget: validation every ``--steps-per-epoch`` steps, early stopping after
``--patience`` validations without a better accuracy, ``--max-steps`` only as a cap; the test accuracy
is that of the best-validation checkpoint. Each shard resumes from its own runs file.

Writes ``benchmarks/results/medaugment_converged.json`` + ``.png`` and adds the summary to
``medaugment.json`` under ``classification_converged``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import torch

from quintet.io import atomic_save_json, atomic_write_bytes, load_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from medaugment import CLS_METHODS, DATA, ROOT, _splits
from medaugment_harness import RunConfig, load_brain_tumor, make_pool, summarize, train_and_test

PEERS = [m for m in CLS_METHODS if m not in ("none", "medaugment")]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--patience", type=int, default=4, help="validations without improvement before stopping")
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=3000, help="cap per run")
    ap.add_argument("--shard", default="1/1", help="K/N: run every N-th run starting at the K-th")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "medaugment_converged")
    return ap.parse_args(argv)


def run_shard(args: argparse.Namespace) -> None:
    """Train this shard's runs (resumable: finished runs are kept in its runs file)."""
    k, n = (int(x) for x in args.shard.split("/"))
    path = args.out / f"medaugment_converged_runs_{k}of{n}.json"
    runs: dict[str, dict] = load_json(path) if path.exists() else {}
    cls = load_brain_tumor(DATA / "brain_tumor_mri", args.size)
    sp = _splits(cls, {"x": np.empty(30)}, False)  # only the classification split is used here
    keys = [f"classification/{m}/{s}" for s in range(args.seeds) for m in CLS_METHODS][k - 1 :: n]
    t0 = time.perf_counter()
    for i, key in enumerate(keys):
        if key in runs:
            continue
        _, method, seed_s = key.split("/")
        seed = int(seed_s)
        px, _, src = make_pool(method, cls["train_x"][sp["tr"]], None, seed)
        cfg = RunConfig(
            kind="classification", steps=args.max_steps, steps_per_epoch=args.steps_per_epoch, batch_size=32,
            lr=2e-3, width=16, seed=seed, patience=args.patience,
        )  # fmt: skip
        res = train_and_test(
            cfg, (px, cls["train_y"][sp["tr"]][src]), (cls["train_x"][sp["val"]], cls["train_y"][sp["val"]]),
            (cls["test_x"], cls["test_y"]), args.work / key, num_classes=len(cls["classes"]),
        )  # fmt: skip
        runs[key] = res
        atomic_save_json(path, runs)
        print(f"[{i + 1}/{len(keys)}] {key}: {res} (elapsed {time.perf_counter() - t0:.0f} s)", flush=True)


def summary(args: argparse.Namespace) -> dict:
    """Per method: mean ± std of test accuracy and macro-F1, steps to convergence; MedAugment's paired
    (same-seed) differences against no augmentation and each peer."""
    runs: dict[str, dict] = {}
    for p in sorted(args.out.glob("medaugment_converged_runs_*.json")):
        runs |= load_json(p)
    by = {m: [runs[f"classification/{m}/{s}"] for s in range(args.seeds) if f"classification/{m}/{s}" in runs]
          for m in CLS_METHODS}  # fmt: skip
    out: dict = {"methods": {m: summarize(rs, ("acc", "f1")) | _steps(rs) for m, rs in by.items() if rs}}
    out["per_seed_acc"] = {m: [r["acc"] for r in rs] for m, rs in by.items()}
    med = out["per_seed_acc"]["medaugment"]
    out["medaugment_minus_points"] = {
        other: _paired(med, out["per_seed_acc"][other]) for other in ("none", *PEERS) if out["per_seed_acc"][other]
    }
    best_peer = max(PEERS, key=lambda m: out["methods"].get(m, {}).get("acc", -1.0))
    out["best_peer"] = best_peer
    out["setup"] = {
        "data": "brain_tumor_mri: 1200 Training images, 15% per class held out for validation; all 394 Testing",
        "size": args.size, "seeds": args.seeds, "patience_validations": args.patience,
        "steps_per_validation": args.steps_per_epoch, "max_steps": args.max_steps, "batch_size": 32, "lr": 2e-3,
        "net": "MONAI ResNet basic [1,1,1,1], widths 16-128, from scratch, 1 channel",
        "selection": "best validation accuracy; test accuracy of that checkpoint",
        "hardware": "CPU, one torch thread per run, 2 runs side by side on a shared 2-core machine",
    }  # fmt: skip
    return out


def _steps(rs: list[dict]) -> dict:
    return {
        "steps_run_mean": float(np.mean([r["steps_run"] for r in rs])),
        "early_stopped": int(sum(r["early_stopped"] for r in rs)),
        "minutes_mean": float(np.mean([r["seconds"] for r in rs]) / 60),
    }


def _paired(a: list[float], b: list[float]) -> dict:
    d = 100 * (np.array(a[: len(b)]) - np.array(b[: len(a)]))
    return {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0, "n": len(d)}


def plot(res: dict, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    names = list(res["methods"])
    vals = [100 * res["methods"][m]["acc"] for m in names]
    errs = [100 * res["methods"][m]["std"] for m in names]
    colors = ["tab:red" if m == "medaugment" else "tab:gray" if m == "none" else "tab:blue" for m in names]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.bar(range(len(names)), vals, yerr=errs, color=colors, capsize=3, alpha=0.8)
    for i, m in enumerate(names):
        ax.plot([i] * len(res["per_seed_acc"][m]), [100 * v for v in res["per_seed_acc"][m]], "k.", ms=5)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20)
    ax.set_ylim(max(0.0, min(vals) - 12), min(100.0, max(vals) + 8))
    ax.set_ylabel("test accuracy, %")
    s = res["setup"]
    ax.set_title(f"brain MRI {s['size']} px, early stopping (patience {s['patience_validations']}), "
                 f"{s['seeds']} seeds: mean ± std, dots = seeds", fontsize=9)  # fmt: skip
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(1)
    if not args.summary_only:
        if not DATA.is_dir():
            print(f"shared data not found at {DATA} (set QUINTET_SHARED_DATA)", file=sys.stderr)
            return 2
        run_shard(args)
        return 0
    res = summary(args)
    atomic_save_json(args.out / "medaugment_converged.json", res)
    plot(res, args.out / "medaugment_converged.png")
    main_json = args.out / "medaugment.json"
    if main_json.is_file():
        data = json.loads(main_json.read_text())
        data["classification_converged"] = {k: res[k] for k in ("methods", "medaugment_minus_points", "best_peer")}
        atomic_save_json(main_json, data)
    print(json.dumps(res["medaugment_minus_points"], indent=1))
    print(f"outputs: {args.out / 'medaugment_converged.json'}, {args.out / 'medaugment_converged.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
