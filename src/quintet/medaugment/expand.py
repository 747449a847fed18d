"""Offline dataset expansion, as in the paper: N augmented copies + the original per training image.

Layouts (``task`` x ``layout``):

* classification / ``official``: ``<in>/<train_split>/<class>/<img>``; other split folders
  (``validation``, ``test``...) are copied unchanged. Class names are free (the official code
  requires ``n0..n{K-1}``; we accept any).
* classification / ``folder``: ``<in>/<class>/<img>`` (a plain image folder; every image is expanded).
* segmentation / ``official``: ``<in>/<train_split>/<img>`` with masks in
  ``<in>/<train_split>_mask/<stem>_mask.<ext>``; other splits and their ``_mask`` folders are copied.
* segmentation / ``folder``: ``<in>/images/<img>`` with masks ``<in>/masks/<stem>.<ext>``.

Outputs mirror the input: ``<stem>_<i>.<ext>`` for the augmented copies ``i = 1..N`` and
``<stem>_<N+1>.<ext>`` for the original (copied byte for byte); masks are always written as
lossless PNG (``<stem>_<i>_mask.png`` in the official layout, ``<stem>_<i>.png`` in ``masks/``).
``manifest.csv`` lists every output with its source, branch, ops and the replayable parameters.

Every image gets its own random stream derived from ``(seed, relative path)``, so results do not
depend on the number of workers or on interruptions; a finished image leaves a small record in
``<out>/.medaugment/done/`` and a re-run skips it (resume). Writes are atomic; the output folder may
not be, or lie inside, the input folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing as mp
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from quintet.config import config_to_dict, save_config
from quintet.io import atomic_save_json, atomic_write_bytes, atomic_write_text, load_json, remove_stale_temps
from quintet.medaugment.data import (
    encode_image,
    encode_mask,
    list_images,
    read_image,
    read_mask_with_palette,
)
from quintet.medaugment.policy import Branch, MedAugment
from quintet.medaugment.volumes import (
    Volume,
    check_label_volume,
    encode_series,
    encode_volume,
    is_series,
    is_volume,
    read_volume,
    split_name,
)

__all__ = ["ExpandConfig", "ExpandResult", "Job", "expand_dataset", "plan_jobs"]

STATE_DIR = ".medaugment"
MANIFEST_FIELDS = (
    "source",
    "output",
    "mask_source",
    "mask_output",
    "branch",
    "combination",
    "ops",
    "record",
    "error",
)


@dataclass
class ExpandConfig:
    """Settings of ``quintet medaugment expand``.

    Attributes:
        input: dataset root (read only).
        out: new folder for the expanded dataset (must not be inside ``input``).
        task: ``classification`` or ``segmentation``.
        layout: ``official`` (split folders, as the paper's code) or ``folder`` (plain image folder).
        train_split: name of the training split folder in the official layout (others are copied).
        level: magnitude level 1..5.
        num_branches: augmented copies per image (N).
        keep_original: also write the original as copy N+1.
        symmetric: two-sided shear/translation instead of the paper's one-sided ranges.
        seed: base seed.
        workers: parallel processes (1 = in-process).
        image_format: ``same`` keeps each image's extension, ``png`` writes PNG (lossless).
        mask_suffix: mask file suffix (official layout: ``_mask``; folder layout default: none).
        images_dir: image folder name in the segmentation folder layout.
        masks_dir: mask folder name in the segmentation folder layout.
        value_range: intensity window ``[lo, hi]`` of the pixel ops (e.g. a CT window; values outside
            are clipped by the ops that fire). ``none``: by dtype for 2D images, and the volume's own
            [min, max] for NIfTI / DICOM (``"auto"``: nothing is clipped).
    """

    input: Path = Path("data")
    out: Path = Path("data_medaugment")
    task: Literal["classification", "segmentation"] = "classification"
    layout: Literal["official", "folder"] = "official"
    train_split: str = "training"
    level: int = 5
    num_branches: int = 4
    keep_original: bool = True
    symmetric: bool = False
    seed: int = 8
    workers: int = 1
    image_format: Literal["same", "png"] = "same"
    mask_suffix: str | None = None
    images_dir: str = "images"
    masks_dir: str = "masks"
    value_range: tuple[float, float] | None = None

    def policy(self) -> MedAugment:
        """The policy these settings describe."""
        return MedAugment(
            self.level, self.num_branches, self.keep_original, self.symmetric, value_range=self.value_range
        )

    def resolved_mask_suffix(self) -> str:
        """``mask_suffix``, defaulting to ``_mask`` (official) or empty (folder)."""
        if self.mask_suffix is not None:
            return self.mask_suffix
        return "_mask" if self.layout == "official" else ""


@dataclass(frozen=True)
class Job:
    """One source image (and mask) to expand; paths relative to the input/output roots."""

    image: str
    mask: str | None
    out_dir: str
    mask_out_dir: str | None


@dataclass
class ExpandResult:
    """What :func:`expand_dataset` did."""

    output: Path
    manifest: Path
    num_sources: int
    num_written: int
    num_skipped: int
    num_copied: int
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def num_failed(self) -> int:
        """Sources that could not be expanded (listed in the manifest with their error)."""
        return len(self.failures)


def _check_folders(cfg: ExpandConfig) -> tuple[Path, Path]:
    src = Path(cfg.input).resolve()
    dst = Path(cfg.out).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"input folder {cfg.input} does not exist")
    if dst == src or src in dst.parents:
        raise ValueError(
            f"output folder {cfg.out} is inside the input folder {cfg.input}; choose another place"
        )
    if dst in src.parents:
        raise ValueError(f"input folder {cfg.input} lies inside the output folder {cfg.out}")
    return src, dst


def _sources(folder: Path) -> list[Path]:
    """Images (:func:`list_images`), NIfTI / DICOM volumes and DICOM series folders directly inside
    ``folder``, sorted."""
    vols = [p for p in folder.iterdir() if not p.name.startswith(".") and ((p.is_file() and is_volume(p)) or is_series(p))]
    return sorted(list_images(folder) + vols)


def _mask_for(image: Path, mask_dir: Path, suffix: str) -> Path:
    stem = split_name(image)[0]
    cands = [p for p in _sources(mask_dir) if split_name(p)[0] == stem + suffix] if mask_dir.is_dir() else []
    if not cands:
        raise FileNotFoundError(f"no mask for {image} in {mask_dir} (expected {stem}{suffix}.<ext>)")
    if len(cands) > 1:
        raise ValueError(f"several masks match {image.name} in {mask_dir}: {[c.name for c in cands]}")
    return cands[0]


def plan_jobs(cfg: ExpandConfig) -> tuple[list[Job], list[str]]:
    """List the images to expand and the files to copy unchanged (both relative to ``cfg.input``)."""
    src = Path(cfg.input)
    if not src.is_dir():
        raise FileNotFoundError(f"input folder {src} does not exist")
    jobs: list[Job] = []
    copies: list[str] = []
    suffix = cfg.resolved_mask_suffix()
    if cfg.layout == "official":
        train = src / cfg.train_split
        if not train.is_dir():
            found = sorted(p.name for p in src.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"training split {train} not found (folders in {src}: {found}); set train_split= or layout=folder"
            )
        skip = {cfg.train_split, cfg.train_split + "_mask", STATE_DIR}
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src)
            if p.is_file() and rel.parts[0] not in skip and not rel.parts[0].startswith("."):
                copies.append(rel.as_posix())
        if cfg.task == "classification":
            classes = sorted(p for p in train.iterdir() if p.is_dir())
            if not classes:
                raise ValueError(f"{train}: no class folders found")
            for c in classes:
                for img in _sources(c):
                    out = f"{cfg.train_split}/{c.name}"
                    jobs.append(Job(img.relative_to(src).as_posix(), None, out, None))
        else:
            mdir = src / (cfg.train_split + "_mask")
            for img in _sources(train):
                m = _mask_for(img, mdir, suffix)
                jobs.append(
                    Job(
                        img.relative_to(src).as_posix(),
                        m.relative_to(src).as_posix(),
                        cfg.train_split,
                        mdir.name,
                    )
                )
    else:
        if cfg.task == "classification":
            classes = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not classes:
                raise ValueError(
                    f"{src}: no class folders found (layout=folder expects <input>/<class>/<image>)"
                )
            for c in classes:
                for img in _sources(c):
                    jobs.append(Job(img.relative_to(src).as_posix(), None, c.name, None))
        else:
            idir, mdir = src / cfg.images_dir, src / cfg.masks_dir
            for img in _sources(idir):
                m = _mask_for(img, mdir, suffix)
                jobs.append(
                    Job(img.relative_to(src).as_posix(), m.relative_to(src).as_posix(), idir.name, mdir.name)
                )
    if not jobs:
        raise ValueError(f"{src}: no training images found for task={cfg.task} layout={cfg.layout}")
    _check_collisions(jobs)
    return jobs, copies


def _check_collisions(jobs: list[Job]) -> None:
    """Two sources with the same stem in one output folder would overwrite each other's outputs."""
    seen: dict[tuple[str, str], str] = {}
    for j in jobs:
        key = (j.out_dir, split_name(j.image)[0])
        if key in seen:
            raise ValueError(
                f"{j.image} and {seen[key]} have the same name stem and would overwrite each other"
            )
        seen[key] = j.image


def _job_seed(seed: int, rel: str) -> list[int]:
    h = int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "little")
    return [int(seed), h]


def _job_key(rel: str) -> str:
    return hashlib.sha256(rel.encode("utf-8")).hexdigest()[:24]


def _output_names(job: Job, cfg: ExpandConfig, i: int, src: Path) -> tuple[str, str | None]:
    """Where output ``i`` of a job goes (a DICOM series: a folder ``<stem>_<i>``)."""
    stem, ext = split_name(job.image)
    if cfg.image_format == "png" and not is_volume(src / job.image):
        ext = ".png"
    img = f"{job.out_dir}/{stem}_{i}{ext}"
    if job.mask is None:
        return img, None
    mask_ext = split_name(job.mask)[1] if is_volume(src / job.mask) else ".png"
    return img, f"{job.mask_out_dir}/{stem}_{i}{cfg.resolved_mask_suffix()}{mask_ext}"


def _row(job: Job, i: int, out_img: str, out_mask: str | None, branch: Branch) -> dict[str, Any]:
    return {
        "source": job.image,
        "output": out_img,
        "mask_source": job.mask or "",
        "mask_output": out_mask or "",
        "branch": i,
        "combination": "+".join(map(str, branch.combination)) if branch.combination else "identity",
        "ops": branch.describe(),
        "record": json.dumps(branch.to_dict(), separators=(",", ":")),
        "error": "",
    }


Outputs = list[tuple[str, bytes]]


def _image_outputs(job: Job, cfg: ExpandConfig, src: Path) -> tuple[Outputs, list[dict[str, Any]]]:
    """Every output file of a 2D image (and mask), encoded in memory. A 4-channel PNG/TIFF is RGBA: its
    alpha moves with the spatial ops like a mask and is never changed as an intensity."""
    image = read_image(src / job.image)
    mask, palette = read_mask_with_palette(src / job.mask) if job.mask is not None else (None, None)
    if mask is not None and mask.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"{src / str(job.mask)}: mask size {mask.shape[:2]} differs from image size {image.shape[:2]}"
        )
    alpha = None
    if image.ndim == 3 and image.shape[2] == 4 and Path(job.image).suffix.lower() in (".png", ".tif", ".tiff"):
        image, alpha = np.ascontiguousarray(image[:, :, :3]), np.ascontiguousarray(image[:, :, 3])
    rng = np.random.default_rng(_job_seed(cfg.seed, job.image))
    policy = cfg.policy()
    files: Outputs = []
    rows = []
    for i, (img, msk, branch) in enumerate(policy.expand(image, mask, rng), start=1):
        out_img, out_mask = _output_names(job, cfg, i, src)
        if branch.is_identity and cfg.image_format == "same":
            files.append((out_img, (src / job.image).read_bytes()))
        else:
            if alpha is not None:
                img = np.concatenate([img, policy.apply_mask(branch, alpha)[:, :, None]], axis=2)
            files.append((out_img, encode_image(img, Path(out_img).suffix)))
        if out_mask is not None and msk is not None:
            files.append((out_mask, encode_mask(msk, palette)))
        rows.append(_row(job, i, out_img, out_mask, branch))
    return files, rows


def _volume_outputs(job: Job, cfg: ExpandConfig, src: Path) -> tuple[Outputs, list[dict[str, Any]]]:
    """Every output file of a NIfTI / DICOM volume (and label volume), encoded in memory."""
    vol = read_volume(src / job.image)
    lab = None
    if job.mask is not None:
        if not is_volume(src / job.mask):
            raise ValueError(
                f"{src / job.mask}: the label of volume {job.image} must be a NIfTI or DICOM file or series"
            )
        lab = read_volume(src / job.mask)
        check_label_volume(vol, lab)
    policy = MedAugment(
        **{**cfg.policy().to_dict(), "volume": True, "value_range": cfg.value_range or "auto"}
    )
    rng = np.random.default_rng(_job_seed(cfg.seed, job.image))
    labels = None if lab is None else lab.label_data()
    files: Outputs = []
    rows = []
    for i, (img, msk, branch) in enumerate(policy.expand(vol.data, labels, rng), start=1):
        out_img, out_mask = _output_names(job, cfg, i, src)
        ident = branch.is_identity
        files += _volume_files(vol, None if ident else img, out_img)
        if lab is not None and out_mask is not None and msk is not None:
            files += _volume_files(lab, None if ident else msk.astype(lab.data.dtype), out_mask)
        rows.append(_row(job, i, out_img, out_mask, branch))
    return files, rows


def _volume_files(vol: Volume, data: np.ndarray | None, rel: str) -> Outputs:
    """The file(s) of one output volume at ``rel``: the source's own bytes when ``data`` is ``None`` (the
    identity branch), a series as ``rel/<slice file>``."""
    if vol.kind == "dicom-series":
        if data is None:
            return [(f"{rel}/{f.name}", f.read_bytes()) for f in vol.slices]
        return [(f"{rel}/{name}", blob) for name, blob in encode_series(vol, data)]
    return [(rel, vol.path.read_bytes() if data is None else encode_volume(vol, data, split_name(rel)[1]))]


def _run_job(job: Job, cfg: ExpandConfig, src: Path, dst: Path) -> list[dict[str, Any]]:
    """Expand one source: encode every output in memory, write them, then the done-record."""
    make = _volume_outputs if is_volume(src / job.image) else _image_outputs
    files, rows = make(job, cfg, src)
    for rel, data in files:
        atomic_write_bytes(dst / rel, data)
    atomic_save_json(dst / STATE_DIR / "done" / f"{_job_key(job.image)}.json", rows)
    return rows


def _try_job(job: Job, cfg: ExpandConfig, src: Path, dst: Path) -> dict[str, str] | None:
    """Run one job; a bad source becomes a failure record (the rest of the folder goes on)."""
    try:
        _run_job(job, cfg, src, dst)
    except (ValueError, FileNotFoundError, OSError) as exc:
        error = " ".join(str(exc).split())
        print(f"medaugment expand: skipped {job.image}: {error}", file=sys.stderr)
        return {"source": job.image, "mask_source": job.mask or "", "error": error}
    return None


def _run_chunk(jobs: list[Job], cfg: ExpandConfig, src: Path, dst: Path) -> list[dict[str, str]]:
    import cv2

    cv2.setNumThreads(1)
    return [f for j in jobs if (f := _try_job(j, cfg, src, dst)) is not None]


def _settings_fingerprint(cfg: ExpandConfig) -> dict[str, Any]:
    d = config_to_dict(cfg)
    for k in ("input", "out", "workers"):
        d.pop(k)
    if d.get("value_range") is None:  # expansions made before the key existed still resume
        d.pop("value_range", None)
    return d


def _copy_unchanged(copies: list[str], src: Path, dst: Path) -> int:
    """Copy the other splits unchanged (atomically; files already there with the same size are kept)."""
    copied = 0
    for rel in copies:
        target = dst / rel
        if target.exists() and target.stat().st_size == (src / rel).stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.copy.tmp")
        shutil.copyfile(src / rel, tmp)
        tmp.replace(target)
        copied += 1
    return copied


def _write_manifest(dst: Path, jobs: list[Job], failures: list[dict[str, str]]) -> tuple[Path, int]:
    """``manifest.csv``: every output of the finished sources, then one row per failed source with its error."""
    manifest = dst / "manifest.csv"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_FIELDS, restval="")
    writer.writeheader()
    written = 0
    failed = {f["source"] for f in failures}
    for j in jobs:
        if j.image in failed:
            continue
        rows = load_json(dst / STATE_DIR / "done" / f"{_job_key(j.image)}.json")
        writer.writerows(rows)
        written += len(rows)
    writer.writerows(failures)
    atomic_write_text(manifest, buf.getvalue())
    return manifest, written


def expand_dataset(cfg: ExpandConfig, progress: bool = True) -> ExpandResult:
    """Expand a dataset offline (see the module docstring); resumable and safe to interrupt.

    A source that cannot be read or does not match its mask (truncated file, size / affine
    mismatch, 4D volume, NaN, DICOM without pixels...) is skipped with a one-line error on stderr,
    nothing of it is written, the rest goes on, and it is listed in ``result.failures`` and in the
    manifest's ``error`` column (a re-run retries it).

    Raises:
        FileNotFoundError: missing input folder, split folder or mask.
        ValueError: output inside input, a previous run with different settings in ``output``.
    """
    from tqdm.auto import tqdm

    src, dst = _check_folders(cfg)
    cfg.policy()  # validate level / num_branches before touching the disk
    if cfg.workers < 1:
        raise ValueError(f"workers must be >= 1, got {cfg.workers}")
    jobs, copies = plan_jobs(cfg)
    state = dst / STATE_DIR / "settings.json"
    settings = _settings_fingerprint(cfg)
    if state.exists():
        previous = load_json(state)
        if previous != settings:
            raise ValueError(
                f"{cfg.out} holds an expansion made with different settings ({state}); "
                "use a new output folder or delete it"
            )
    dst.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(dst)  # left by a killed run; this run rewrites whatever they were for
    atomic_save_json(state, settings)
    save_config(cfg, dst / "medaugment_expand.yaml")
    atomic_save_json(dst / "medaugment_policy.json", cfg.policy().to_dict())

    copied = _copy_unchanged(copies, src, dst)

    done_dir = dst / STATE_DIR / "done"
    todo = [j for j in jobs if not (done_dir / f"{_job_key(j.image)}.json").exists()]
    skipped = len(jobs) - len(todo)
    bar = tqdm(total=len(jobs), initial=skipped, desc="medaugment expand", unit="img", disable=not progress)
    failures: list[dict[str, str]] = []
    if cfg.workers == 1 or len(todo) < 2:
        for j in todo:
            if (f := _try_job(j, cfg, src, dst)) is not None:
                failures.append(f)
            bar.update(1)
    else:
        size = max(1, min(16, len(todo) // (cfg.workers * 4) or 1))
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_run_chunk, c, cfg, src, dst) for c in chunks]
            for fut, chunk in zip(futures, chunks, strict=True):
                failures.extend(fut.result())
                bar.update(len(chunk))
    bar.close()

    manifest, written = _write_manifest(dst, jobs, failures)
    return ExpandResult(dst, manifest, len(jobs), written, skipped, copied, failures)
