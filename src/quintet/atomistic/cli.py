"""``quintet data <verb>``: generate and inspect atomistic data with any ASE calculator.

Verbs (each a thin wrapper over one typed function; ``-c cfg.yaml`` and ``key=value`` overrides):

- ``md``            MD trajectory (Langevin / Nosé–Hoover NVT, frame stride) → extxyz
- ``relax-pairs``   prototype substitution + strain + rattle → oracle relaxation → DeepRelax custom layout
- ``defect-pairs``  vacancies / substitutions on a pristine supercell → relaxation → 2DMD layout
- ``info``          summarise a structure file, trajectory or pair folder (alias ``inspect``)
- ``split``         write seeded train/val/test split files with the data's fingerprint
- ``oracles``       list the built-in oracles and whether they are installed
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from quintet.cli import Verb

__all__ = ["VERBS", "InfoConfig", "SplitConfig", "data_info", "data_split"]


@dataclass
class InfoConfig:
    """``quintet data info``.

    Args:
        path: a structure/trajectory file or a pair folder.
        layout: ``"auto"`` (guess), ``"file"``, ``"custom"`` or ``"2dmd"``.
        validate: run the structure checks while reading.
    """

    path: Path = Path(".")
    layout: Literal["auto", "file", "custom", "2dmd"] = "auto"
    validate: bool = True


@dataclass
class SplitConfig:
    """``quintet data split``.

    Args:
        path: a pair folder or a trajectory file.
        layout: ``"auto"``, ``"trajectory"``, ``"custom"`` or ``"2dmd"``.
        fractions: train/val/test fractions.
        seed: split seed.
        split_dir: where to write the split files (default: next to the data if writable, else the cache).
    """

    path: Path = Path(".")
    layout: Literal["auto", "trajectory", "custom", "2dmd"] = "auto"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    split_dir: Path | None = None


def _guess_layout(path: Path) -> str:
    if path.is_file():
        return "file"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if (path / "CIF").is_dir():
        name = path.name
        if (path / f"{name}_pristine_supercell.cif").is_file() or (path / f"{name}.cif").is_file():
            return "2dmd"
        return "custom"
    if any((d / "CIF").is_dir() for d in path.iterdir() if d.is_dir()):
        return "2dmd"
    raise ValueError(f"{path}: neither a structure file nor a pair folder (no CIF/ inside)")


def data_info(cfg: InfoConfig) -> dict[str, Any]:
    """Summarise a file or pair folder (counts, atoms per structure, elements, energies, defects)."""
    import numpy as np

    from quintet.atomistic import keys as K
    from quintet.atomistic.datasets import RelaxPairDataset, TrajectoryDataset, records_summary

    path = Path(cfg.path)
    layout = _guess_layout(path) if cfg.layout == "auto" else cfg.layout
    out: dict[str, Any] = {"path": str(path), "layout": layout}
    if layout == "file":
        ds = TrajectoryDataset(path, validate=cfg.validate)
        out.update(records_summary(ds.records))
        out["has_forces"] = all(K.FORCES in r for r in ds.records)
        return out
    ds = RelaxPairDataset(path, layout=layout)  # type: ignore[arg-type]
    recs = [ds[k] for k in range(len(ds))]
    out.update(records_summary(recs))
    out["groups"] = sorted(set(ds.groups))
    disp = [
        float((r[K.RELAXED_POSITIONS] - r[K.POSITIONS]).abs().mean())
        for r in recs
        if K.RELAXED_POSITIONS in r
    ]
    if disp:
        out["unrelaxed_vs_relaxed_coord_mae"] = float(np.mean(disp))
    if recs and K.DEFECT in recs[0]:
        out["substitutions"] = int(sum(int((r[K.DEFECT] == 1).sum()) for r in recs))
        out["vacancies"] = int(sum(int((r[K.DEFECT] == 2).sum()) for r in recs))
    steps = [float(m["steps"]) for m in ds.meta.values() if m.get("steps")]
    if steps:
        out["oracle_steps_median"] = float(np.median(steps))
    return out


def data_split(cfg: SplitConfig) -> dict[str, int]:
    """Write (or reuse) the seeded split files of a data set; returns the split sizes."""
    from quintet.atomistic.datasets import SPLITS, RelaxPairDataset, TrajectoryDataset, writable_dir

    path = Path(cfg.path)
    layout = _guess_layout(path) if cfg.layout == "auto" else cfg.layout
    trajectory = layout in ("file", "trajectory")
    split_dir = cfg.split_dir or (  # this verb writes beside the data on purpose (others use the cache)
        writable_dir(path.parent, "splits") / f"{path.stem}_splits" if trajectory else writable_dir(path, "splits")
    )
    counts = {}
    for s in SPLITS:
        if trajectory:
            ds: Any = TrajectoryDataset(
                path, split=s, split_dir=split_dir, fractions=cfg.fractions, seed=cfg.seed
            )
        else:
            ds = RelaxPairDataset(
                path, layout=layout, split=s, split_dir=split_dir, fractions=cfg.fractions, seed=cfg.seed
            )
        counts[s] = len(ds)
    return counts


@dataclass
class OraclesJob:
    """``quintet data oracles`` takes no keys."""


def _oracles(job: OraclesJob) -> str:
    from quintet.atomistic.oracle import describe_oracles

    return describe_oracles()


def _written(fn: Callable[..., Any]) -> Callable[[Any], str]:
    return lambda cfg: f"written: {fn(cfg)}"


def _verbs() -> list[Verb]:
    from quintet.atomistic.oracle import (
        DefectPairsConfig,
        MDConfig,
        RelaxPairsConfig,
        make_defect_pairs,
        make_relax_pairs,
        run_md,
    )

    gen = {"out": "out", "seed": "seed", "flags": {"--oracle": "oracle"}}
    return [
        Verb("md", "MD trajectory with an oracle (Langevin/NVT, frame stride) -> extxyz", MDConfig,
             _written(run_md), **gen,
             example="quintet data md -o cu.extxyz structure=Cu:fcc:3.61 supercell=[3,3,3] steps=2000"),
        Verb("relax-pairs", "substituted/strained/rattled prototypes relaxed by an oracle -> CIF pairs + meta.csv",
             RelaxPairsConfig, _written(make_relax_pairs), **gen,
             example="quintet data relax-pairs -o pairs n=100 --oracle emt"),
        Verb("defect-pairs", "vacancies/substitutions on a pristine supercell relaxed by an oracle -> 2DMD layout",
             DefectPairsConfig, _written(make_defect_pairs), **gen,
             example="quintet data defect-pairs -o defects host=MoS2:mx2:3.18 supercell=[5,5,1] --oracle chgnet"),
        Verb("info", "summarise a structure file, trajectory or pair folder", InfoConfig, data_info,
             inputs="path", aliases=("inspect",)),
        Verb("split", "write seeded train/val/test split files with the data fingerprint", SplitConfig,
             data_split, inputs="path", seed="seed"),
        Verb("oracles", "list the built-in oracles and whether they are installed", OraclesJob, _oracles),
    ]  # fmt: skip


VERBS = _verbs()
