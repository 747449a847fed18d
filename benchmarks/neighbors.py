"""Neighbour-list benchmark: quintet's vesin-based ``neighbor_list`` vs ASE (and matscipy), same run.

Periodic fcc Cu cells (rattled, a = 3.61 Å) from ~100 to ~11,000 atoms, cutoff 5 Å (LEIGNN's
H2O/CH4/LiPS setting). Each timing is the best of ``--repeats`` runs. Besides the peers, two
reference points: vesin called directly (what our sorting by centre/distance costs on top) and a
trivial brute-force O(N²) minimum-image search in numpy (only on the small cells, where it fits).
Every method's pair count is checked against ASE's, and for the smallest cell the full (i, j, S)
sets are compared.

Writes ``benchmarks/results/neighbors.json`` and ``neighbors.png``.

Run: ``nice -n 10 .venv/bin/python benchmarks/neighbors.py``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _cell(rep: int, seed: int = 0) -> Any:
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((rep, rep, rep))
    atoms.rattle(0.05, seed=seed)
    return atoms


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best = np.inf
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _brute_force(pos: np.ndarray, cell: np.ndarray, cutoff: float) -> int:
    """Minimum-image all-pairs count (valid when every cell height exceeds 2 × cutoff)."""
    inv = np.linalg.inv(cell)
    n = 0
    for start in range(0, len(pos), 256):
        d = pos[start : start + 256, None, :] - pos[None, :, :]
        f = d @ inv
        f -= np.round(f)
        r = np.linalg.norm(f @ cell, axis=-1)
        n += int(((r < cutoff) & (r > 0)).sum())
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", default="3,5,7,10,14", help="fcc cubic repetitions (4 atoms each)")
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--brute-max", type=int, default=1500, help="largest cell for the brute-force baseline")
    args = ap.parse_args()

    import torch
    import vesin
    from ase.neighborlist import neighbor_list as ase_nl

    from quintet.atomistic.neighbors import neighbor_list

    torch.set_num_threads(1)
    try:
        from matscipy.neighbours import neighbour_list as msp_nl
    except ImportError:  # optional peer
        msp_nl = None

    sizes, ours, ase_t, msp_t, raw_t, brute_t, pairs = [], [], [], [], [], [], []
    for rep in [int(r) for r in args.reps.split(",")]:
        atoms = _cell(rep)
        pos, cell, pbc = atoms.positions, atoms.cell[:], atoms.pbc
        n = len(atoms)
        t_ours, (ei, sh) = _best(partial(neighbor_list, pos, cell, pbc, args.cutoff), args.repeats)
        t_ase, (ai, aj, aS) = _best(partial(ase_nl, "ijS", atoms, args.cutoff), args.repeats)

        raw = partial(vesin.NeighborList(cutoff=args.cutoff, full_list=True).compute, pos, cell, True, "ijS")
        t_raw, _ = _best(raw, args.repeats)
        if ei.shape[1] != len(ai):
            raise SystemExit(f"pair counts differ at {n} atoms: ours {ei.shape[1]}, ASE {len(ai)}")
        if rep == int(args.reps.split(",")[0]):
            a = set(zip(ai.tolist(), aj.tolist(), map(tuple, aS.tolist()), strict=True))
            o = set(zip(ei[0].tolist(), ei[1].tolist(), map(tuple, sh.astype(int).tolist()), strict=True))
            if a != o:
                raise SystemExit(f"pair sets differ at {n} atoms")
        t_msp = None
        if msp_nl is not None:
            t_msp, (mi, _mj) = _best(partial(msp_nl, "ij", atoms, args.cutoff), args.repeats)
            if len(mi) != len(ai):
                raise SystemExit(f"matscipy pair count differs at {n} atoms")
        t_brute = None
        if n <= args.brute_max and np.all(atoms.cell.cellpar()[:3] > 2 * args.cutoff):
            t_brute, nb = _best(partial(_brute_force, pos, cell, args.cutoff), 1)
            if nb != len(ai):
                raise SystemExit(f"brute-force pair count differs at {n} atoms")
        sizes.append(n)
        ours.append(t_ours)
        ase_t.append(t_ase)
        msp_t.append(t_msp)
        raw_t.append(t_raw)
        brute_t.append(t_brute)
        pairs.append(len(ai))
        print(
            f"{n:6d} atoms {len(ai):8d} pairs | ours {t_ours * 1e3:8.2f} ms | ASE {t_ase * 1e3:8.2f} ms "
            f"({t_ase / t_ours:5.1f}x) | matscipy {'-' if t_msp is None else f'{t_msp * 1e3:8.2f} ms'} | "
            f"vesin raw {t_raw * 1e3:8.2f} ms | brute {'-' if t_brute is None else f'{t_brute * 1e3:8.1f} ms'}"
        )

    result = {
        "sizes": sizes,
        "ours_s": ours,
        "ase_s": ase_t,
        "speedup_vs_ase_at_max": ase_t[-1] / ours[-1],
        "matscipy_s": msp_t,
        "speedup_vs_matscipy_at_max": (msp_t[-1] / ours[-1]) if msp_t[-1] else None,
        "vesin_raw_s": raw_t,
        "brute_force_s": brute_t,
        "pairs": pairs,
        "cutoff": args.cutoff,
        "repeats": args.repeats,
        "system": "rattled fcc Cu (a=3.61 Å), fully periodic",
        "machine": f"{platform.processor() or platform.machine()}, shared CPU, 1 thread, nice 10",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "neighbors.json").write_text(json.dumps(result, indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.loglog(sizes, ours, "o-", label="quintet (vesin + sort)")
    ax1.loglog(sizes, raw_t, "^:", label="vesin raw")
    ax1.loglog(sizes, ase_t, "s-", label="ASE neighbor_list")
    if any(t is not None for t in msp_t):
        ax1.loglog(sizes, msp_t, "d-", label="matscipy")
    bx = [s for s, t in zip(sizes, brute_t, strict=True) if t is not None]
    if bx:
        ax1.loglog(bx, [t for t in brute_t if t is not None], "x--", label="brute force O(N²)")
    ax1.set_xlabel("atoms")
    ax1.set_ylabel(f"seconds (best of {args.repeats})")
    ax1.set_title(f"periodic neighbour list, cutoff {args.cutoff} Å")
    ax1.legend()
    ax2.semilogx(sizes, np.array(ase_t) / np.array(ours), "s-", label="ASE / quintet")
    if all(t is not None for t in msp_t):
        ax2.semilogx(sizes, np.array(msp_t) / np.array(ours), "d-", label="matscipy / quintet")
    ax2.axhline(1.0, color="grey", lw=0.8)
    ax2.set_xlabel("atoms")
    ax2.set_ylabel("speed-up of quintet")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "neighbors.png", dpi=120)
    print(
        json.dumps({k: result[k] for k in ("sizes", "speedup_vs_ase_at_max", "speedup_vs_matscipy_at_max")})
    )


if __name__ == "__main__":
    main()
