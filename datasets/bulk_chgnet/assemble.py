"""Assemble the deeprelax-bulk training folder: the generated CHGNet pairs + the shared oxide pairs.

    python datasets/bulk_chgnet/assemble.py pack     # generated folders -> datasets/bulk_chgnet/pairs.tar.xz
    python datasets/bulk_chgnet/assemble.py unpack   # pairs.tar.xz -> benchmarks/work/bulk_chgnet (no CHGNet needed)
    python datasets/bulk_chgnet/assemble.py build    # -> benchmarks/work/bulk_all{,_25,_50} (custom layout + splits)

``build`` writes one DeepRelax custom-layout folder (``CIF/`` of symlinks, ``meta.csv``) with a
**composition-grouped** split: all pairs of one (recipe, composition) go to the same split, so no test
structure has a training twin of the same prototype and formula (in a fixed prototype the same
composition relaxes to nearly the same structure). The split (seed 0, 80/10/10 of the groups) is
written to ``datasets/bulk_chgnet/split/`` the first time and reused from there afterwards.
``bulk_all_25`` and ``bulk_all_50`` keep the same val/test and the first 25 % / 50 % of the
training ids in a seeded order (the learning curve). Pairs whose relaxation did not converge are left out.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "datasets" / "bulk_chgnet"
GEN = ROOT / "benchmarks" / "work" / "bulk_chgnet"
OXIDES = Path(os.environ.get("QUINTET_SHARED", ROOT.parent / "shared")) / "data" / "materials" / "bulk_oxides"
ARCHIVE = HERE / "pairs.tar.xz"
SPLIT = HERE / "split"


def _rows(meta: Path) -> list[dict[str, str]]:
    with open(meta, newline="") as f:
        return list(csv.DictReader(f))


def collect(gen: Path, oxides: Path) -> list[dict[str, str]]:
    """Every usable pair: id, recipe, formula, n_atoms, the two CIF paths."""
    out = []
    folders = sorted(p for p in gen.iterdir() if (p / "meta.csv").is_file()) if gen.is_dir() else []
    for folder, recipe in [*((f, f.name) for f in folders), (oxides, "shared_oxides")]:
        for r in _rows(folder / "meta.csv"):
            if r.get("converged", "1") != "1":
                continue
            u = folder / "CIF" / f"{r['atoms_id']}_unrelaxed.cif"
            v = folder / "CIF" / f"{r['atoms_id']}_relaxed.cif"
            if u.is_file() and v.is_file() and _unambiguous(u, v):
                out.append({"atoms_id": r["atoms_id"], "recipe": recipe, "formula": r["formula"],
                            "n_atoms": r["n_atoms"], "unrelaxed": u, "relaxed": v})  # fmt: skip
    return out


def _unambiguous(unrelaxed: Path, relaxed: Path) -> bool:
    """False (and a note) for a pair DeepRelax's loader refuses: an atom moved half a cell vector or more,
    so the periodic image it relaxed to is ambiguous (quintet.deeprelax.maths.check_displacements)."""
    from ase.io import read

    from quintet.atomistic.datasets import unwrap_to_nearest
    from quintet.deeprelax.maths import check_displacements

    u, r = read(unrelaxed), read(relaxed)
    pos = unwrap_to_nearest(u.positions, r.positions, r.cell[:], u.pbc, ref_cell=u.cell[:])
    try:
        check_displacements(u.positions, pos, r.cell[:], u.pbc, source=unrelaxed.name)
    except ValueError as exc:
        print(f"left out: {exc}", file=sys.stderr)
        return False
    return True


def _reduced(formula: str) -> str:
    from ase.formula import Formula

    return str(Formula(formula).reduce()[0])


def fingerprint(pairs: list[dict]) -> str:
    """sha256 over the sorted pair ids and the sha256 of both CIF files of each pair."""
    h = hashlib.sha256()
    for p in sorted(pairs, key=lambda p: p["atoms_id"]):
        h.update(p["atoms_id"].encode())
        for k in ("unrelaxed", "relaxed"):
            h.update(hashlib.sha256(Path(p[k]).read_bytes()).digest())
    return h.hexdigest()


def make_split(pairs: list[dict], seed: int = 0) -> dict[str, list[str]]:
    groups: dict[tuple[str, str], list[str]] = {}
    for p in pairs:
        groups.setdefault((p["recipe"], _reduced(p["formula"])), []).append(p["atoms_id"])
    keys = sorted(groups)
    rng = np.random.default_rng(seed)
    order = [keys[i] for i in rng.permutation(len(keys))]
    n = len(pairs)
    split: dict[str, list[str]] = {"test": [], "val": [], "train": []}
    for key in order:
        name = "test" if len(split["test"]) < 0.1 * n else "val" if len(split["val"]) < 0.1 * n else "train"
        split[name] += groups[key]
    return {k: sorted(v) for k, v in split.items()}


def _write_ids(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["atoms_id"])
        w.writerows([i] for i in ids)


def _read_ids(path: Path) -> list[str]:
    return [r["atoms_id"] for r in _rows(path)]


def grow(split: dict[str, list[str]], pairs: list[dict]) -> dict[str, list[str]]:
    """Pairs generated after the committed split join ``train`` when their (recipe, composition) group is new;
    those of a group already in val/test are left out, so val and test stay exactly the committed ones
    (the learning curve compares models on the same test pairs). The added ids go to ``split/train_added.csv``;
    ``split/train.csv`` (and the ``_25`` / ``_50`` subsets drawn from it) stays the committed one."""
    listed = {i for v in split.values() for i in v}
    held = {(p["recipe"], _reduced(p["formula"])) for p in pairs if p["atoms_id"] in set(split["val"] + split["test"])}
    new = [p for p in pairs if p["atoms_id"] not in listed]
    fresh = [p["atoms_id"] for p in new if (p["recipe"], _reduced(p["formula"])) not in held]
    if new:
        print(f"{len(new)} pairs not in the committed split: {len(fresh)} join train, "
              f"{len(new) - len(fresh)} of a val/test composition left out", file=sys.stderr)  # fmt: skip
    if fresh:
        _write_ids(SPLIT / "train_added.csv", sorted(fresh))
    return {**split, "added": sorted(fresh)}


def build(gen: Path, oxides: Path, out: Path) -> None:
    pairs = collect(gen, oxides)
    by_id = {p["atoms_id"]: p for p in pairs}
    if (SPLIT / "train.csv").is_file():
        split = {
            k: [i for i in _read_ids(SPLIT / f"{k}.csv") if i in by_id] for k in ("train", "val", "test")
        }
        split = grow(split, pairs)
    else:
        split = make_split(pairs)
        for k, ids in split.items():
            _write_ids(SPLIT / f"{k}.csv", ids)
    used = [by_id[i] for v in split.values() for i in v]
    fp = fingerprint(used)
    rng = np.random.default_rng(1)
    train_order = [split["train"][i] for i in rng.permutation(len(split["train"]))]
    for suffix, frac in (("", 1.0), ("_25", 0.25), ("_50", 0.5)):
        folder = out.parent / f"{out.name}{suffix}"
        (folder / "CIF").mkdir(parents=True, exist_ok=True)
        for p in used:
            for k in ("unrelaxed", "relaxed"):
                link = folder / "CIF" / f"{p['atoms_id']}_{k}.cif"
                if not link.exists():
                    link.symlink_to(Path(p[k]).resolve())
        train = sorted(train_order[: round(frac * len(train_order))] + (split.get("added", []) if frac == 1.0 else []))
        _write_ids(folder / "train.csv", train)
        _write_ids(folder / "val.csv", split["val"])
        _write_ids(folder / "test.csv", split["test"])
        with open(folder / "meta.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["atoms_id", "recipe", "formula", "n_atoms", "split"])
            where = {i: k.replace("added", "train") for k, v in split.items() for i in v}
            w.writerows(
                [p["atoms_id"], p["recipe"], p["formula"], p["n_atoms"], where[p["atoms_id"]]] for p in used
            )
        (folder / "FINGERPRINT").write_text(fp + "\n")
        print(f"{folder}: train {len(train)}, val {len(split['val'])}, test {len(split['test'])}")
    recipes: dict[str, dict[str, int]] = {}
    for k, v in split.items():
        for i in v:
            recipes.setdefault(by_id[i]["recipe"], {"train": 0, "val": 0, "test": 0, "added": 0})[k] += 1
    for r, c in sorted(recipes.items()):
        print(f"  {r:20s} {c}")
    print(f"fingerprint {fp}")


def pack(gen: Path) -> None:
    with tarfile.open(ARCHIVE, "w:xz", preset=9) as tar:
        for folder in sorted(p for p in gen.iterdir() if (p / "meta.csv").is_file()):
            for name in ("meta.csv", "generation.json", "config.yaml"):
                if (folder / name).is_file():
                    tar.add(folder / name, arcname=f"{folder.name}/{name}")
            ids = {r["atoms_id"] for r in _rows(folder / "meta.csv")}
            for cif in sorted((folder / "CIF").glob("*.cif")):
                if cif.name.rsplit("_", 1)[0] in ids:  # finished pairs only
                    tar.add(cif, arcname=f"{folder.name}/CIF/{cif.name}")
    print(f"{ARCHIVE}: {ARCHIVE.stat().st_size / 1e6:.2f} MB")


def unpack(gen: Path) -> None:
    gen.mkdir(parents=True, exist_ok=True)
    with tarfile.open(ARCHIVE, "r:xz") as tar:
        tar.extractall(gen, filter="data")
    print(f"unpacked into {gen}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("verb", choices=["pack", "unpack", "build"])
    ap.add_argument("--gen", type=Path, default=GEN)
    ap.add_argument("--oxides", type=Path, default=OXIDES)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "work" / "bulk_all")
    a = ap.parse_args()
    {
        "pack": lambda: pack(a.gen),
        "unpack": lambda: unpack(a.gen),
        "build": lambda: build(a.gen, a.oxides, a.out),
    }[a.verb]()
