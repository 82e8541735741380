import json

import numpy as np
import pytest

from retrieval.index import IndexParams, VectorIndex, auto_factory


def clustered(n, d, clusters=50, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_factory_is_exact_below_threshold_and_ivf_above():
    assert auto_factory(5_000, 64) == "Flat"
    f = auto_factory(1_000_000, 512)
    assert f.startswith("IVF") and "x4fs" in f and f.endswith("RFlat")


def test_flat_index_finds_each_vector_first():
    x = clustered(500, 32)
    ids = [f"item{i}" for i in range(500)]
    idx = VectorIndex.build(x, ids)
    scores, got = idx.search(x[:20], 5)
    assert [g[0] for g in got] == ids[:20]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # sorted best first
    assert idx.meta["recall_at_10"] == 1.0


def test_approximate_index_measures_recall_against_exact():
    x = clustered(20_000, 64)
    idx = VectorIndex.build(x, [str(i) for i in range(len(x))], IndexParams(factory="IVF128,PQ32x4fs,RFlat", nprobe=16))
    assert 0.9 <= idx.meta["recall_at_10"] <= 1.0
    weak = VectorIndex.build(x, [str(i) for i in range(len(x))], IndexParams(factory="IVF128,PQ32x4fs", nprobe=1))
    assert weak.meta["recall_at_10"] < idx.meta["recall_at_10"]  # the measurement can tell them apart


@pytest.mark.parametrize("factory", ["Flat", "IVF64,PQ16x4fs,RFlat"])
def test_selective_filter_still_returns_k_hits(factory):
    x = clustered(5_000, 32)
    ids = [str(i) for i in range(len(x))]
    idx = VectorIndex.build(x, ids, IndexParams(factory=factory, nprobe=4))
    allowed = np.zeros(len(x), bool)
    allowed[::250] = True  # 20 items, scattered over clusters
    _, got = idx.search(x[:3], 10, allowed)
    for row in got:
        assert len(row) == 10
        assert all(allowed[int(i)] for i in row)
    broad = np.ones(len(x), bool)
    broad[1::2] = False  # half the catalog: the oversampling path
    _, got = idx.search(x[:3], 10, broad)
    assert all(len(r) == 10 and all(int(i) % 2 == 0 for i in r) for r in got)


def test_filter_with_fewer_allowed_than_k_returns_them_all():
    x = clustered(300, 16)
    idx = VectorIndex.build(x, [str(i) for i in range(300)])
    allowed = np.zeros(300, bool)
    allowed[[3, 7]] = True
    _, got = idx.search(x[0], 10, allowed)
    assert sorted(got[0]) == ["3", "7"]


def test_save_load_roundtrip_and_crash_mid_write_keeps_old_index(tmp_path):
    x = clustered(1_000, 16)
    ids = [f"a{i}" for i in range(1_000)]
    idx = VectorIndex.build(x, ids)
    idx.save(tmp_path)
    loaded = VectorIndex.load(tmp_path)
    assert loaded.ids == ids and loaded.meta["n"] == 1_000
    assert loaded.search(x[5], 1)[1][0][0] == "a5"
    # a crash mid-write leaves a half-written version behind and CURRENT untouched
    (tmp_path / "v-99999999-partial.partial").mkdir()
    (tmp_path / "v-99999999-partial.partial" / "index.faiss").write_bytes(b"garbage")
    assert VectorIndex.load(tmp_path).ids == ids
    # a newer save replaces it; the one before stays as the fallback
    y = clustered(50, 16, seed=1)
    VectorIndex.build(y, [f"b{i}" for i in range(50)]).save(tmp_path)
    assert VectorIndex.load(tmp_path).ids[0] == "b0"
    assert json.loads((tmp_path / (tmp_path / "CURRENT").read_text() / "meta.json").read_text())["n"] == 50


def test_bad_input_is_rejected_with_clear_errors(tmp_path):
    x = clustered(10, 8)
    with pytest.raises(ValueError, match="one vector per id"):
        VectorIndex.build(x, ["a"] * 9)
    with pytest.raises(ValueError, match="unique"):
        VectorIndex.build(x, ["a"] * 10)
    idx = VectorIndex.build(x, [str(i) for i in range(10)])
    with pytest.raises(ValueError, match="dimension"):
        idx.search(np.zeros((1, 4), np.float32), 3)
    with pytest.raises(FileNotFoundError, match="index build"):
        VectorIndex.load(tmp_path / "nothing")
