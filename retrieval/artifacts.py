"""The one way whyrec writes an artifact: to a private temporary name, fsync, rename, fsync the folder.

A reader then sees the old file or the new one, never half of one, and a power cut after a
write returns leaves the new one on disk. Every writer of a catalog, index, heads, feature
cache, adapter or JSON report goes through here:

- `atomic_write_bytes / atomic_write_text / atomic_write_json(path, ...)` for data in memory;
- `atomic_path(path)` for libraries that want a file name to write to (parquet, np.savez, torch.save);
- `atomic_dir(path)` for a folder written file by file (an index version, a saved model), published
  whole by one rename.

Temporary names are private to one writer (pid + random), so two writers never delete or
overwrite each other's work in progress; the last rename wins.
"""
from __future__ import annotations

import contextlib
import json
import time
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

PARTIAL = ".partial-"  # in every temporary name: never a finished artifact


def _private(path: Path, kind: str = "tmp") -> Path:
    """A temporary name beside `path`, unique to this writer; keeps the suffix (np.savez and
    pandas look at it)."""
    return path.with_name(f".{path.stem}{PARTIAL}{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def is_partial(path: str | Path) -> bool:
    """Whether a name is some writer's work in progress (leave it alone)."""
    return PARTIAL in Path(path).name


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Make a rename in `path` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a private temporary file name; when the block ends without error, fsync it and
    rename it to `path` (then fsync the folder). On error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _private(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to {tmp} for {path}")
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, **dump_kwargs: Any) -> Path:
    """`json.dumps(obj, **dump_kwargs)` written atomically (ensure_ascii=False unless given)."""
    dump_kwargs.setdefault("ensure_ascii", False)
    return atomic_write_text(path, json.dumps(obj, **dump_kwargs))


def fsync_tree(root: str | Path) -> None:
    """fsync every file and folder under `root` (before a folder is published by rename)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                fsync_file(full)
        fsync_dir(dirpath)


@contextlib.contextmanager
def atomic_dir(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a private temporary folder beside `path`; when the block ends without error, fsync
    its files and publish it as `path` by rename.

    An existing `path` is replaced (moved aside under a private name, then removed), or, with
    `replace=False`, kept (another writer finished the same artifact first: ours is dropped).
    On error only our own temporary folder is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _private(path, "dir")
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists() and not replace:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        _publish_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish_dir(tmp: Path, path: Path, tries: int = 5) -> None:
    """Rename `tmp` to `path`, moving an existing `path` aside first (a folder cannot be renamed
    over a non-empty one). Two writers publishing at once: the rename that lands last wins."""
    for attempt in range(tries):
        old = None
        if path.exists():
            old = _private(path, "old")
            try:
                os.replace(path, old)
            except FileNotFoundError:  # another writer moved it aside first
                old = None
        try:
            os.replace(tmp, path)
        except OSError:
            if attempt == tries - 1 or not path.exists():
                raise
            continue  # another writer published in between: move theirs aside and try again
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        fsync_dir(path.parent)
        return


def remove_stale_partials(directory: str | Path, max_age_s: float = 86_400) -> None:
    """Remove temporary files and folders that crashed writers left in `directory` (untouched for
    `max_age_s`); younger ones may belong to a writer still at work."""
    now = time.time()
    for p in Path(directory).glob(f".*{PARTIAL}*"):
        try:
            if now - p.stat().st_mtime < max_age_s:
                continue
        except FileNotFoundError:
            continue
        log.info("removing %s, left by a writer that did not finish", p)
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def file_stamp(path: str | Path) -> tuple:
    """What a folder (or file) holds, by name, inode, size and modification time: equal stamps
    mean nothing there was rewritten (every writer renames a new file into place, so a rewrite
    changes the inode). Cheap: metadata only. A reload compares stamps to keep what did not change."""
    path = Path(path)
    if not path.exists():
        return (str(path), None)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not is_partial(p)) if path.is_dir() else [path]
    return tuple((str(f.relative_to(path)) if path.is_dir() else f.name, *(lambda st: (st.st_ino, st.st_size, st.st_mtime_ns))(f.stat()))
                 for f in files)
