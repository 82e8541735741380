"""The one atomic-write helper: whole files or nothing, private temporary names, and index saves
that survive a second writer."""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from retrieval.artifacts import (atomic_dir, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, is_partial,
                                 remove_stale_partials)
from retrieval.index import VectorIndex


def leftovers(folder):
    return [p.name for p in folder.iterdir() if is_partial(p)]


def test_writes_replace_whole_files_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_json(target, {"a": "é"}, indent=1)
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": "é"}
    atomic_write_text(target, "v2")
    atomic_write_bytes(tmp_path / "b.bin", b"\0\1")
    assert target.read_text() == "v2" and (tmp_path / "b.bin").read_bytes() == b"\0\1"
    assert leftovers(tmp_path) == [] and leftovers(target.parent) == []


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "vecs.npz"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path and is_partial(tmp)
        np.savez(tmp, x=np.arange(3))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            np.savez(tmp, x=np.arange(99))
            raise RuntimeError("power cut")
    assert list(np.load(target)["x"]) == [0, 1, 2] and leftovers(tmp_path) == []


def test_a_folder_is_published_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as d:
        (d / "weights").write_text("one")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "weights").write_text("half")
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "one"
    with atomic_dir(target) as d:  # replaces a finished folder
        (d / "weights").write_text("two")
    with atomic_dir(target, replace=False) as d:  # someone finished first: keep theirs
        (d / "weights").write_text("three")
    assert (target / "weights").read_text() == "two" and leftovers(tmp_path) == []


def test_stale_partials_go_young_ones_stay(tmp_path):
    young, old = tmp_path / ".x.partial-dir-1-a", tmp_path / ".y.partial-dir-2-b"
    young.mkdir(), old.mkdir()
    os.utime(old, (time.time() - 2 * 86_400,) * 2)
    remove_stale_partials(tmp_path)
    assert young.exists() and not old.exists()


def test_concurrent_index_saves_never_break_each_other(tmp_path):
    """Two writers save the same index folder at once: no save fails, and CURRENT always names
    a complete version (the old save deleted the other writer's folder in progress)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20_000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = VectorIndex.build(x, [str(i) for i in range(len(x))])
    errors: list[BaseException] = []

    def writer():
        try:
            for _ in range(6):
                idx.save(tmp_path)
        except BaseException as err:  # noqa: BLE001 - the test reports any failure
            errors.append(err)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    loaded = VectorIndex.load(tmp_path)
    assert len(loaded) == len(x) and leftovers(tmp_path) == []
    assert len([p for p in tmp_path.glob("v-*")]) <= 3


def test_feature_cache_appends_shards_instead_of_rewriting(tmp_path, monkeypatch):
    from retrieval.encoders.towers import FeatureCache

    cache = FeatureCache(tmp_path, "tower", 2)
    cache.put(["a", "b"], np.array([[1, 0], [0, 1]], np.float32))
    cache.save()
    base = tmp_path / "tower.npz"
    before = (base.stat().st_ino, base.read_bytes())
    cache.put(["c"], np.array([[1, 1]], np.float32))
    cache.save()
    cache.save()  # nothing new: nothing written
    assert (base.stat().st_ino, base.read_bytes()) == before, "the base file was rewritten for one new row"
    shards = sorted(tmp_path.glob("tower.shard-*.npz"))
    assert len(shards) == 1 and list(np.load(shards[0])["keys"]) == ["c"]
    again = FeatureCache(tmp_path, "tower", 2)
    assert again.get(["a", "c"]).tolist() == [[1, 0], [1, 1]]
    monkeypatch.setattr(FeatureCache, "MAX_SHARDS", 1)  # many shards: the next save folds them into the base
    again.put(["d"], np.array([[0, 0]], np.float32))
    again.save()
    assert not list(tmp_path.glob("tower.shard-*.npz")) and leftovers(tmp_path) == []
    assert FeatureCache(tmp_path, "tower", 2).get(["a", "b", "c", "d"]).shape == (4, 2)
