"""``quintet demo``: run every available system on small embedded data and write one report.

Each system contributes a section by providing ``quintet.<system>.demo.demo(out_dir, quick)``
returning a :class:`DemoSection`. A system whose optional extra is not installed, or whose section
fails, is reported as skipped/failed with the reason; the other sections still run. The report is
``<out>/report.md`` with the PNG plots of every section next to it, and ``<out>/report.html``, the same
report as one self-contained page (:mod:`quintet.report`).
"""

from __future__ import annotations

import importlib
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quintet.cli import Verb
from quintet.io import atomic_save_json, atomic_write_text
from quintet.report import write_markdown_report

__all__ = ["SECTIONS", "VERB", "DemoJob", "DemoSection", "oracle_markdown", "recorded_seconds", "run_demo", "shared_dir"]


@dataclass
class DemoSection:
    """What one system's demo produced.

    Args:
        title: section heading.
        markdown: body text (Markdown) with the numbers measured.
        images: PNG files (inside the demo's output folder) to embed.
        metrics: the headline numbers, also written to ``report.json``.
    """

    title: str
    markdown: str
    images: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


#: system name -> module providing ``demo(out_dir: Path, quick: bool) -> DemoSection``
SECTIONS: dict[str, str] = {
    "leignn": "quintet.leignn.demo",
    "deeprelax": "quintet.deeprelax.demo",
    "definet": "quintet.definet.demo",
    "fedaux": "quintet.fedaux.demo",
    "medaugment": "quintet.medaugment.demo",
}


def run_demo(out: str | Path = "demo_out", only: Sequence[str] | None = None, quick: bool = False) -> Path:
    """Run the demo sections and write ``report.md`` / ``report.json`` / ``report.html``; return the report path."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(only) if only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown demo section(s) {unknown}; valid: {list(SECTIONS)}")
    parts = ["# quintet demo report\n"]
    summary: dict[str, Any] = {}
    bar = tqdm(names, desc="quintet demo", unit="system")
    for name in bar:
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(SECTIONS[name])
        except ImportError as exc:
            parts.append(f"## {name}\n\nSkipped: {exc}\n")
            summary[name] = {"status": "skipped", "reason": str(exc)}
            continue
        sec_dir = out / name
        sec_dir.mkdir(exist_ok=True)
        try:
            section: DemoSection = module.demo(sec_dir, quick=quick)
        except Exception as exc:  # a failing section must not hide the others
            tb = traceback.format_exc(limit=3)
            parts.append(f"## {name}\n\nFailed: {exc}\n\n```\n{tb}\n```\n")
            summary[name] = {"status": "failed", "reason": str(exc)}
            continue
        dt = time.perf_counter() - t0
        body = [f"## {section.title}\n", section.markdown.strip() + "\n"]
        for img in section.images:
            rel = Path(img).resolve().relative_to(out.resolve())
            body.append(f"![{Path(img).stem}]({rel.as_posix()})\n")
        body.append(f"_section time: {dt:.1f} s_\n")
        parts.append("\n".join(body))
        summary[name] = {"status": "ok", "seconds": round(dt, 2), **section.metrics}
    report = out / "report.md"
    atomic_write_text(report, "\n".join(parts))
    atomic_save_json(out / "report.json", summary)
    write_markdown_report(report)  # report.html beside it: self-contained, images embedded
    return report


@dataclass
class DemoJob:
    """``quintet demo``: every section, or ``only`` a subset, into ``out``; ``quick``: smallest settings."""

    out: str = "demo_out"
    only: list[str] = field(default_factory=list)
    quick: bool = False


def _demo(job: DemoJob) -> str:
    report = run_demo(job.out, job.only or None, job.quick)
    return f"report written to {report.with_suffix('.html')} (and {report.name}, report.json)"


VERB = Verb(
    "demo", "run every available system on small embedded data, write a report", DemoJob, _demo,
    out="out", flags={"--only": "only", "--quick": "quick"}, example="quintet demo -o demo_out --only fedaux",
)  # fmt: skip


# ---------------------------------------------------------------- helpers the system sections share


def shared_dir(rel: str) -> Path | None:
    """``../shared/<rel>`` relative to the working directory, else to the repository root; ``None`` if absent."""
    repo = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), repo):
        path = (base / ".." / "shared" / rel).resolve()
        if path.is_dir():
            return path
    return None


def recorded_seconds(root: Path) -> dict[str, float]:
    """Oracle relaxation seconds by structure id, from ``meta.csv`` in ``root`` and its host folders."""
    from quintet.io import read_csv

    out: dict[str, float] = {}
    for meta in [root / "meta.csv", *sorted(root.glob("*/meta.csv"))]:
        for row in read_csv(meta):
            if row.get("seconds") not in (None, ""):
                out[row["atoms_id"]] = float(row["seconds"])
    return out


def _finished_rows(eval_dir: Path) -> list[dict[str, str]]:
    from quintet.io import read_csv

    return [r for r in read_csv(eval_dir / "per_structure.csv") if r.get("finish_steps") not in (None, "")]


def oracle_markdown(
    summary: dict[str, Any], model_s: float, eval_dir: Path, data_root: Path
) -> tuple[str, dict[str, float]]:
    """The "model vs CHGNet" table of an eval job run with ``finish_with="chgnet"``: per structure, the
    CHGNet steps and seconds from the input (``meta.csv``) and from the prediction; returns text and metrics."""
    secs = recorded_seconds(data_root)
    rows = _finished_rows(eval_dir)
    lines = [
        "| structure | atoms | CHGNet steps from input | from prediction | CHGNet s from input (meta.csv) "
        "| from prediction (here) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec = secs.get(r["id"], float("nan"))
        lines.append(
            f"| {r['id']} | {r.get('n_atoms', '')} | {r['unrelaxed_steps']} | {r['finish_steps']} "
            f"| {rec:.1f} | {float(r['finish_s']):.1f} |"
        )
    relax_s = float(np.nanmedian([secs.get(r["id"], np.nan) for r in rows])) if rows else float("nan")
    metrics = {
        "ratio_vs_dummy": round(float(summary["coord_mae_ratio_vs_dummy"]), 3),
        "model_s_per_structure": round(model_s, 4),
        "chgnet_s_per_structure": round(relax_s, 2),
        "median_chgnet_steps_from_input": summary.get("median_unrelaxed_steps", float("nan")),
        "median_chgnet_steps_from_prediction": summary.get("median_finish_steps", float("nan")),
    }
    text = (
        f"One-shot prediction: **{1e3 * model_s:.1f} ms per structure**; the CHGNet relaxation of the same "
        f"structures took a median **{relax_s:.1f} s** (`meta.csv`, the relaxation that made the labels), "
        f"about {relax_s / max(model_s, 1e-9):,.0f}× longer. Finishing with CHGNet from the prediction took a median "
        f"**{metrics['median_chgnet_steps_from_prediction']:g} steps** against "
        f"{metrics['median_chgnet_steps_from_input']:g} from the input ({len(rows)} structures; the input's steps and "
        "seconds are those recorded in `meta.csv` where the data were made, the prediction's were measured here):\n\n"
    )
    return text + "\n".join(lines) + "\n", metrics
