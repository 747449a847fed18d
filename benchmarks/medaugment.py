"""MedAugment benchmark: classification, segmentation and throughput against peers, in one run.

    nice -n 10 .venv/bin/python benchmarks/medaugment.py            # full (reduced-scale) run, ~45-60 min on 2 slow cores
    .venv/bin/python benchmarks/medaugment.py --quick               # smoke run, a few minutes

* Classification on ``../shared/data/medical/brain_tumor_mri`` (4 classes; the given Testing split is
  held out; 15% of Training is the validation split): none vs MedAugment vs kornia RandAugment,
  TrivialAugment, AutoAugment (AugMix: not available), each with a 5x offline pool and the same number
  of optimizer steps, a small MONAI ResNet trained from scratch; accuracy and macro-F1.
* Segmentation on ``../shared/data/medical/isbi2012_em_membrane`` (membrane = positive class): none vs
  MedAugment vs the paper's flip/rotate policies vs kornia TrivialAugment / RandAugment on image+mask,
  a small MONAI UNet with Dice loss; Dice and IoU.
* Throughput: augmented images per second on 256x256 gray uint8 images, MedAugment vs the same op
  chains in albumentations 2.0.8 interleaved in this process over many repetitions (median ratio with
  quartiles, ``peers.interleaved_throughput``, the function the demo uses too), and kornia 0.9 once
  (one thread each), plus the ratio of each op alone. ``--throughput-only`` runs just this and writes
  ``medaugment_throughput.json``.

Writes ``benchmarks/results/medaugment.json`` (+ ``medaugment_runs.json``, resumable) and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import cv2
import numpy as np
import torch

from medaugment_harness import (
    RunConfig,
    load_brain_tumor,
    load_isbi,
    make_pool,
    summarize,
    train_and_test,
)
from medaugment_peers import KorniaChains
from quintet.io import atomic_save_json, atomic_write_bytes, load_json
from quintet.medaugment.peers import interleaved_throughput, per_op_throughput
from quintet.medaugment.policy import MedAugment
from quintet.medaugment.viz import augmentation_grid

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("QUINTET_SHARED_DATA", ROOT.parent / "shared" / "data")) / "medical"
CLS_METHODS = ("none", "medaugment", "randaugment", "trivialaugment", "autoaugment")
SEG_METHODS = (
    "none",
    "medaugment",
    "oneaugment",
    "twoaugment",
    "threeaugment",
    "trivialaugment",
    "randaugment",
)


def throughput(quick: bool = False) -> dict[str, float]:
    """quintet vs albumentations interleaved (:func:`interleaved_throughput`, median ratio with spread,
    without and with a mask) and kornia once, 256x256 gray uint8, one thread."""
    n, reps = (30, 5) if quick else (100, 31)
    plain = interleaved_throughput(256, n, reps)
    masked = interleaved_throughput(256, n, reps, with_mask=True)
    rng = np.random.default_rng(0)
    aug = MedAugment()
    branches = [b for b in (aug.sample_online(rng) for _ in range(2 * n)) if not b.is_identity][:n]
    kor = KorniaChains(5)
    x = torch.from_numpy(rng.random((256, 256), dtype=np.float32))[None, None]
    t = time.perf_counter()
    for b in branches:
        kor.run(b, x)
    kornia_img_s = len(branches) / (time.perf_counter() - t)
    return {
        **plain,
        "ratio_vs_albumentations": plain["ratio_median"],
        "with_mask": masked,
        "per_op_ratio_median": per_op_throughput(256, 20 if quick else 100, 3 if quick else 9),
        "kornia_img_s": kornia_img_s,
        "ratio_vs_kornia": plain["medaugment_img_s"] / kornia_img_s,
    }


def grid_plot(cls: dict, seg: dict, path: Path) -> None:
    """Augmentation grid of real images: two MRI slices and two EM slices with their masks."""
    aug = MedAugment()
    rng = np.random.default_rng(8)
    rows = []
    picks = [cls["train_x"][i] for i in (0, len(cls["train_x"]) // 2)]
    for img in picks:
        rows.append([(x, None, textwrap.fill(b.describe(), 34)) for x, _, b in aug.expand(img, None, rng)])
    for i in (0, 1):
        rows.append(
            [(x, m, textwrap.fill(b.describe(), 34)) for x, m, b in aug.expand(seg["x"][i], seg["y"][i], rng)]
        )
    augmentation_grid(rows, path, title="MedAugment (level 5, N = 4 + original): brain MRI and EM with masks")


def bar_plot(results: dict, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (task, key, label) in zip(
        axes, (("classification", "acc", "test accuracy"), ("segmentation", "dice", "test Dice")), strict=True
    ):
        block = results.get(task, {})
        names = [n for n in block if key in block[n]]
        vals = [block[n][key] for n in names]
        errs = [block[n]["std"] for n in names]
        colors = [
            "tab:red" if n == "medaugment" else "tab:gray" if n == "none" else "tab:blue" for n in names
        ]
        ax.bar(range(len(names)), vals, yerr=errs, color=colors, capsize=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        if vals:
            lo = min(v - e for v, e in zip(vals, errs, strict=True))
            ax.set_ylim(max(0.0, lo - 0.05), min(1.0, max(vals) + 0.05))
        ax.set_ylabel(label)
        ax.set_title(f"{task} (mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (not a result)")
    ap.add_argument(
        "--throughput-only",
        action="store_true",
        help="only the interleaved throughput measurement -> <out>/medaugment_throughput.json (no data needed)",
    )
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--cls-size", type=int, default=64)
    ap.add_argument("--seg-size", type=int, default=128)
    ap.add_argument("--cls-steps", type=int, default=500)
    ap.add_argument("--seg-steps", type=int, default=400)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "medaugment")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.cls_steps, args.seg_steps, args.cls_size, args.seg_size = 1, 20, 20, 48, 64
    return args


def _splits(cls: dict, seg: dict, quick: bool) -> dict[str, np.ndarray]:
    """Fixed splits, the same for every method and seed: 15% of Training per class for validation."""
    split_rng = np.random.default_rng(0)
    val_idx = np.sort(
        np.concatenate(
            [
                split_rng.choice(
                    np.flatnonzero(cls["train_y"] == c), int(0.15 * (cls["train_y"] == c).sum()), False
                )
                for c in range(len(cls["classes"]))
            ]
        )
    )
    tr_idx = np.setdiff1d(np.arange(len(cls["train_x"])), val_idx)
    perm = split_rng.permutation(len(seg["x"]))
    return {
        "tr": tr_idx[::8] if quick else tr_idx,
        "val": val_idx,
        "s_tr": perm[:18],
        "s_val": perm[18:22],
        "s_te": perm[22:],
    }


def _run_configs(args: argparse.Namespace) -> tuple[dict, dict]:
    cls_cfg = dict(
        kind="classification",
        steps=args.cls_steps,
        steps_per_epoch=max(10, args.cls_steps // 5),
        batch_size=32,
        lr=2e-3,
        width=16,
    )
    seg_cfg = dict(
        kind="segmentation",
        steps=args.seg_steps,
        steps_per_epoch=max(10, args.seg_steps // 5),
        batch_size=8,
        lr=3e-3,
        width=8,
    )
    return cls_cfg, seg_cfg


def _run_one(key: str, data: tuple[dict, dict], sp: dict, cfgs: tuple[dict, dict], work: Path) -> dict:
    """Build one method's pool and train/test one seed of one task."""
    (cls, seg), (cls_cfg, seg_cfg) = data, cfgs
    task, method, seed_s = key.split("/")
    seed = int(seed_s)
    if task == "classification":
        px, _, src = make_pool(method, cls["train_x"][sp["tr"]], None, seed)
        py = cls["train_y"][sp["tr"]][src]
        res = train_and_test(
            RunConfig(seed=seed, **cls_cfg),
            (px, py),
            (cls["train_x"][sp["val"]], cls["train_y"][sp["val"]]),
            (cls["test_x"], cls["test_y"]),
            work / key,
            num_classes=len(cls["classes"]),
        )
    else:
        px, pm, _ = make_pool(method, seg["x"][sp["s_tr"]], seg["y"][sp["s_tr"]], seed)
        res = train_and_test(
            RunConfig(seed=seed, **seg_cfg),
            (px, pm),
            (seg["x"][sp["s_val"]], seg["y"][sp["s_val"]]),
            (seg["x"][sp["s_te"]], seg["y"][sp["s_te"]]),
            work / key,
        )
    res["pool_size"] = len(px)
    return res


def _summaries(runs: dict, seeds: int, thr: dict) -> dict:
    results: dict = {"classification": {}, "segmentation": {}}
    for task, methods, keys in (
        ("classification", CLS_METHODS, ("acc", "f1")),
        ("segmentation", SEG_METHODS, ("dice", "iou")),
    ):
        for m in methods:
            rs = [runs[f"{task}/{m}/{s}"] for s in range(seeds) if f"{task}/{m}/{s}" in runs]
            if rs:
                results[task][m] = summarize(rs, keys)
    cls_peers = [
        results["classification"][m]["acc"] for m in ("randaugment", "trivialaugment", "autoaugment")
    ]
    seg_peers = [results["segmentation"][m]["dice"] for m in SEG_METHODS if m not in ("none", "medaugment")]
    med_acc = results["classification"]["medaugment"]["acc"]
    med_dice = results["segmentation"]["medaugment"]["dice"]
    results["throughput_ratio_vs_albumentations"] = thr["ratio_vs_albumentations"]
    results["unavailable"] = {"augmix": "kornia 0.9 has no AugMix and torchvision does not install here"}
    results["throughput"] = thr
    results["targets"] = {
        "cls_acc_minus_best_peer_points": 100 * (med_acc - max(cls_peers)),
        "cls_target_met (>= +1 point)": bool(med_acc >= max(cls_peers) + 0.01),
        "seg_dice_minus_best_peer": med_dice - max(seg_peers),
        "seg_target_met (>= best peer)": bool(med_dice >= max(seg_peers)),
        "throughput_target_met (>= 1.0x)": bool(thr["ratio_vs_albumentations"] >= 1.0),
        "cls_acc_ratio_vs_none": med_acc / results["classification"]["none"]["acc"],
        "seg_dice_ratio_vs_none": med_dice / results["segmentation"]["none"]["dice"],
    }
    return results


def _setup(args: argparse.Namespace, sp: dict, cls: dict, cfgs: tuple[dict, dict], minutes: float) -> dict:
    return {
        "scale": "REDUCED: CPU-only, 2 shared cores; small nets trained from scratch (no pretrained weights offline),"
        " not the paper's frozen ImageNet backbones at 224 px",
        "seeds": args.seeds,
        "classification": {
            "data": "brain_tumor_mri: 1200 Training images (300/class), 15% held out for validation; all 394 Testing",
            "size": args.cls_size,
            "channels": 1,
            "net": "MONAI ResNet basic [1,1,1,1], widths 16-128",
            "train_images": len(sp["tr"]),
            "val_images": len(sp["val"]),
            "test_images": len(cls["test_y"]),
            **cfgs[0],
        },
        "segmentation": {
            "data": "isbi2012_em_membrane: 30 slices, 18 train / 4 val / 8 test (fixed split); positive = membrane",
            "size": args.seg_size,
            "net": "MONAI UNet channels 8-64, 1 residual unit; MONAI DiceLoss(sigmoid)",
            **cfgs[1],
        },
        "pools": "offline 5x pools: MedAugment N=4 + original; peers 5 augmented copies (official scripts); none: originals",
        "budget": "same optimizer steps for every method; best epoch by validation loss (quintet.train)",
        "peers": "kornia 0.9 RandAugment(n=2, m=9), TrivialAugment, AutoAugment('imagenet') on gray repeated to RGB",
        "total_minutes": minutes,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    if args.throughput_only:
        thr = throughput(args.quick)
        name = "medaugment_throughput_quick.json" if args.quick else "medaugment_throughput.json"
        atomic_save_json(args.out / name, thr)
        print(json.dumps(thr, indent=1))
        return 0
    if not DATA.is_dir():
        print(f"shared data not found at {DATA} (set QUINTET_SHARED_DATA)", file=sys.stderr)
        return 2
    stem = "medaugment_quick" if args.quick else "medaugment"
    runs_path = args.out / f"{stem}_runs.json"
    runs: dict[str, dict] = load_json(runs_path) if runs_path.exists() else {}
    t_start = time.perf_counter()

    print("throughput ...", flush=True)
    thr = throughput(args.quick)
    print(json.dumps(thr), flush=True)

    cls = load_brain_tumor(DATA / "brain_tumor_mri", args.cls_size)
    seg = load_isbi(DATA / "isbi2012_em_membrane", args.seg_size)
    grid_plot(cls, seg, args.out / f"{stem}_grid.png")
    sp, cfgs = _splits(cls, seg, args.quick), _run_configs(args)
    keys = [f"classification/{m}/{s}" for s in range(args.seeds) for m in CLS_METHODS]
    keys += [f"segmentation/{m}/{s}" for s in range(args.seeds) for m in SEG_METHODS]
    for i, key in enumerate(keys):
        if key in runs:
            continue
        t0 = time.perf_counter()
        res = _run_one(key, (cls, seg), sp, cfgs, args.work)
        res["wall_s"] = time.perf_counter() - t0
        runs[key] = res
        atomic_save_json(runs_path, runs)
        shown = {k: round(v, 4) for k, v in res.items()}
        print(
            f"[{i + 1}/{len(keys)}] {key}: {shown}  (elapsed {time.perf_counter() - t_start:.0f} s)",
            flush=True,
        )

    results = _summaries(runs, args.seeds, thr)
    results["setup"] = _setup(args, sp, cls, cfgs, (time.perf_counter() - t_start) / 60)
    atomic_save_json(args.out / f"{stem}.json", results)
    bar_plot(results, args.out / f"{stem}_bars.png")
    print(f"wrote {args.out / f'{stem}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
