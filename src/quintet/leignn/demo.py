"""LEIGNN section of ``quintet demo``: EMT oracle MD → train a small conservative LEIGNN → test
errors and parity plot → NVE MD with the trained model through its ASE calculator."""

from __future__ import annotations

from pathlib import Path

from quintet.demo import DemoSection

__all__ = ["demo"]


def demo(out_dir: Path, quick: bool = False) -> DemoSection:
    """Run the LEIGNN demo in ``out_dir`` (about a minute; ``quick``: ~30 s)."""
    from quintet.atomistic import oracle
    from quintet.atomistic.md import MDConfig, run_md
    from quintet.atomistic.structures import read_structures
    from quintet.leignn.calc import LEIGNNCalculator
    from quintet.leignn.model import LEIGNNModelConfig
    from quintet.leignn.run import DataConfig, EvalConfig, LEIGNNJob, evaluate, train
    from quintet.train import TrainConfig

    frames = 120 if quick else 300
    data = out_dir / "cu_vacancy_emt.extxyz"
    oracle.run_md(
        oracle.MDConfig(
            out=data,
            structure="Cu:fcc:3.61",
            supercell=(2, 2, 2),
            vacancies=1,
            oracle="emt",
            temperature_K=600.0,
            timestep_fs=2.0,
            equilibration_steps=100,
            steps=frames * 5,
            stride=5,
            seed=0,
        ),
        progress=False,
    )
    n_val = frames // 6
    n_train = frames - 2 * n_val
    data_cfg = DataConfig(
        path=str(data), n_train=n_train, n_val=n_val, seed=0, split_dir=str(out_dir / "splits")
    )
    job = LEIGNNJob(
        data=data_cfg,
        model=LEIGNNModelConfig(hidden=32, num_layers=2, num_rbf=16, cutoff=4.5, forces="conservative"),
        train=TrainConfig(
            max_epochs=1000,
            max_time_s=15.0 if quick else 60.0,
            batch_size=8,
            lr=3e-3,
            ema_decay=0.95,
            early_stop_patience=None,
            progress=False,
        ),
        out=str(out_dir / "model"),
    )
    best = train(job)
    res = evaluate(EvalConfig(model=str(best), data=data_cfg, split="test", out=str(out_dir / "eval")))
    atoms = read_structures(data, index="-1")[0]
    md = run_md(
        atoms,
        LEIGNNCalculator.from_checkpoint(best),
        MDConfig(
            ensemble="nve",
            temperature_K=300,
            timestep_fs=1.0,
            steps=100 if quick else 400,
            write_every=10,
            out=str(out_dir / "md"),
        ),
        progress=False,
    )
    m = res.metrics
    text = f"""
Training data: {frames} frames of EMT molecular dynamics of fcc Cu (2×2×2, 31 atoms, one vacancy, 600 K),
made with `quintet data md`. A small LEIGNN (hidden 32, 2 layers, conservative forces) trained for
{job.train.max_time_s:.0f} s on {n_train} frames.

| test set | energy MAE (meV/atom) | force MAE (meV/Å) |
|---|---|---|
| {m["n_structures"]} frames | {m["energy_mae_meV_atom"]:.2f} | {m["force_mae_meV_A"]:.1f} |

NVE MD with the trained model through `LEIGNNCalculator`: {md.steps_done} steps at
{md.steps_per_second:.0f} steps/s, energy drift {md.energy_drift_meV_atom_ps or 0:.2f} meV/atom/ps ({md.reason}).
"""
    images = [p for p in (res.parity_png, md.thermo_png) if p is not None]
    return DemoSection(
        "LEIGNN — interatomic potential",
        text,
        images,
        {
            "energy_mae_meV_atom": m["energy_mae_meV_atom"],
            "force_mae_meV_A": m["force_mae_meV_A"],
            "md_steps_per_s": md.steps_per_second,
        },
    )
