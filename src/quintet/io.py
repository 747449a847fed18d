"""Atomic file writes, JSON helpers and fingerprints shared by every system.

Every file quintet writes goes through these helpers: the bytes land in a temporary file in the
same folder and are moved into place with :func:`os.replace`, so a crash or a bad input never
leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DATASET_MANIFEST",
    "atomic_open",
    "atomic_save_json",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_text",
    "check_output_path",
    "check_resume_record",
    "file_sha256",
    "fingerprint",
    "load_json",
    "read_csv",
    "remove_stale_temps",
    "verify_dataset",
    "write_dataset_manifest",
]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; rename it onto ``path`` only if the block succeeds.

    Args:
        path: final destination.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        encoding: text encoding (ignored for binary mode).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {"encoding": encoding} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; honour the umask like open() does
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def atomic_save_json(path: PathLike, obj: Any, indent: int = 2) -> None:
    """Serialise ``obj`` as JSON (numpy/torch scalars and arrays allowed) and write it atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def atomic_write_csv(path: PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    """Write ``rows`` as CSV (atomically); columns default to every key, in first-seen order."""
    import csv

    keys = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in keys})
    atomic_write_text(path, buf.getvalue())


def read_csv(path: PathLike) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts (``[]`` when the file does not exist)."""
    import csv

    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_json(path: PathLike) -> Any:
    """Read a JSON file, naming the file in the error if it is malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from exc


def atomic_torch_save(path: PathLike, obj: Any) -> None:
    """``torch.save`` into a temporary file, then rename onto ``path``."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def fingerprint(*parts: Any, files: list[PathLike] | None = None, length: int = 16) -> str:
    """A short stable hash of JSON-able ``parts`` and the bytes of ``files``.

    Used to name caches and split files, so that a changed input never reuses a stale cache.
    """
    h = hashlib.sha256()
    h.update(json.dumps(parts, sort_keys=True, default=_json_default).encode())
    for f in files or []:
        h.update(str(Path(f).name).encode())
        _hash_file(h, f)
    return h.hexdigest()[:length]


def _hash_file(h: Any, path: PathLike) -> None:
    """Feed the bytes of ``path`` into the hash ``h`` in 1 MiB chunks."""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)


def file_sha256(path: PathLike) -> str:
    """SHA-256 (hex) of a file's bytes; ``FileNotFoundError`` names a missing file."""
    h = hashlib.sha256()
    try:
        _hash_file(h, path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    return h.hexdigest()


#: the content hashes of a generated dataset folder (``quintet data relax-pairs`` / ``defect-pairs``)
DATASET_MANIFEST = "dataset.sha256.json"


def write_dataset_manifest(folder: PathLike) -> Path:
    """Record the SHA-256 of every file of a generated dataset folder (its config and split files excepted:
    ``quintet data split`` may rewrite those) in ``<folder>/dataset.sha256.json``; loaders check it with
    :func:`verify_dataset`."""
    root = Path(folder)
    skip = {DATASET_MANIFEST, "config.yaml", "split.json", "train.csv", "val.csv", "test.csv"}
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name not in skip and not p.name.startswith("."))
    hashes = {p.relative_to(root).as_posix(): file_sha256(p) for p in files}
    path = root / DATASET_MANIFEST
    atomic_save_json(path, {"algorithm": "sha256", "files": hashes})
    return path


def verify_dataset(folder: PathLike) -> None:
    """Check a generated dataset folder against its ``dataset.sha256.json`` (a folder without one, such as
    data users bring, passes): ``ValueError`` naming the first file that changed or went missing."""
    root = Path(folder)
    path = root / DATASET_MANIFEST
    if not path.is_file():
        return
    try:
        files = dict(load_json(path)["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable dataset manifest ({exc}); regenerate the dataset") from None
    for rel in sorted(files):
        target = root / rel
        if not target.is_file():
            raise ValueError(f"{target}: listed in {path} but missing; regenerate the dataset")
        if file_sha256(target) != files[rel]:
            raise ValueError(
                f"{target}: content differs from the hash in {path} (changed or damaged since it was generated); "
                f"regenerate it, or delete {path.name} if the edit was intended"
            )


def remove_stale_temps(folder: PathLike) -> int:
    """Delete the temporary files an interrupted atomic write leaves (``.<name>.<random>.tmp``,
    ``.<name>.copy.tmp``) anywhere under ``folder``; call it when a resumed run starts. Returns the count."""
    n = 0
    root = Path(folder)
    if root.is_dir():
        for p in root.rglob(".*.tmp"):
            if p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    return n


def check_output_path(path: PathLike, key: str = "out") -> Path:
    """Refuse, before anything is written, an output path that lies under a file, or that is an existing
    file where a folder is meant (a path without a suffix). Returns the path.

    Raises:
        ValueError: naming the key, the file in the way and the fix.
    """
    p = Path(path)
    for above in (p, *p.parents):
        if not above.exists():
            continue
        if above.is_dir() or (above == p and p.suffix):
            break
        where = "is a file" if above == p else f"lies under the file {above}"
        raise ValueError(f"{key}={path}: the output {where}; give a folder path (-o/--out) that is not inside a file")
    return p


def check_resume_record(folder: PathLike, record: dict[str, Any], name: str = "run.json", resuming: bool = True) -> None:
    """Guard a resumable output folder against mixing two runs, then store ``record`` in it.

    ``record`` says what produced the outputs (model files' hashes, the settings that change them).
    When ``resuming`` (the folder already holds outputs that will be kept) and ``folder/name`` records
    something else, ``ValueError`` names the differing keys and nothing is written. A folder with
    outputs but no record (made before records existed) is resumed with a ``RuntimeWarning``.
    """
    path = Path(folder) / name
    if resuming:
        if not path.is_file():
            import warnings

            warnings.warn(
                f"{folder} holds outputs but no {name}: resuming without checking that they came from the "
                "same model and settings",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            prior = load_json(path)
            record_plain = json.loads(json.dumps(record, default=_json_default))
            differ = sorted(k for k in set(prior) | set(record_plain) if prior.get(k) != record_plain.get(k))
            if differ:
                raise ValueError(
                    f"{folder} already holds outputs made with other {', '.join(differ)} (see {path}); resuming "
                    "would mix them: choose another output folder, or pass resume=false to redo every item"
                )
    atomic_save_json(path, record)
