"""Atomic artifact writes: write a temporary file, fsync it, rename it over the target, fsync the folder.

A reader never sees half a file, and a crash mid-write leaves the previous version in place. Folders
(which cannot be renamed over a non-empty folder) are published as a new versioned folder plus a
pointer file replaced atomically.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (tmp file in the same folder, fsync, rename, fsync folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=1, ensure_ascii=False))


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    import io

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def fsync_tree(directory: str | Path) -> None:
    """fsync every file under a folder and the folders themselves (before publishing it)."""
    directory = Path(directory)
    for root, _, files in os.walk(directory):
        for name in files:
            with open(Path(root) / name, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(root))


def publish_dir(staged: str | Path, base: str | Path, name: str, keep: int = 2) -> Path:
    """Publish a fully written folder `staged` as `base/<name>-<stamp>` and point `base/<name>.current`
    at it atomically; older versions beyond `keep` are removed. Returns the published folder."""
    base = Path(base)
    staged = Path(staged)
    fsync_tree(staged)
    final = base / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.time_ns() % 10**6}"
    os.replace(staged, final)
    _fsync_dir(base)
    write_text(base / f"{name}.current", final.name)
    versions = sorted(p for p in base.glob(f"{name}-*") if p.is_dir() and not p.name.endswith(".partial"))
    for old in versions[:-keep]:
        if old.name != final.name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def current_dir(base: str | Path, name: str) -> Path | None:
    """The folder `publish_dir` last published under `base` as `name` (None when there is none)."""
    pointer = Path(base) / f"{name}.current"
    if not pointer.exists():
        return None
    path = Path(base) / pointer.read_text().strip()
    return path if path.is_dir() else None
