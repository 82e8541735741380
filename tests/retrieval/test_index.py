"""The index tests, run over both backends (FAISS and Milvus through the embedded milvus-lite).
Milvus collections are small and every one is dropped (or its scratch database removed) afterwards."""
import gc
import json

import numpy as np
import pytest

from retrieval.index import IndexParams, VectorIndex, auto_factory, build_index, open_index

BACKENDS = ["faiss", "milvus"]


def clustered(n, d, clusters=50, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=BACKENDS)
def build(request):
    """build(x, ids, **params) with the backend under test; closes (and drops) what it built."""
    backend = request.param
    if backend == "milvus":
        pytest.importorskip("pymilvus")
    made = []

    def make(x, ids, **params):
        idx = build_index(x, ids, IndexParams(backend=backend, **params))
        made.append(idx)
        return idx

    make.backend = backend
    yield make
    for idx in made:
        if hasattr(idx, "close"):
            idx.close()


def test_auto_factory_is_exact_below_threshold_and_ivf_above():
    assert auto_factory(5_000, 64) == "Flat"
    f = auto_factory(1_000_000, 512)
    assert f.startswith("IVF") and "x4fs" in f and f.endswith("RFlat")


def test_flat_index_finds_each_vector_first(build):
    x = clustered(500, 32)
    ids = [f"item{i}" for i in range(500)]
    idx = build(x, ids)
    scores, got = idx.search(x[:20], 5)
    assert [g[0] for g in got] == ids[:20]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # sorted best first
    assert idx.meta["recall_at_10"] == 1.0
    assert np.allclose(idx.scores(x[3], ["item3", "item7"]), [x[3] @ x[3], x[3] @ x[7]], atol=1e-5)
    assert np.array_equal(idx.vector("item9"), x[9]) and idx.dim == 32 and len(idx) == 500


def test_approximate_index_measures_recall_against_exact():
    x = clustered(20_000, 64)
    idx = VectorIndex.build(x, [str(i) for i in range(len(x))], IndexParams(factory="IVF128,PQ32x4fs,RFlat", nprobe=16))
    assert 0.9 <= idx.meta["recall_at_10"] <= 1.0
    weak = VectorIndex.build(x, [str(i) for i in range(len(x))], IndexParams(factory="IVF128,PQ32x4fs", nprobe=1))
    assert weak.meta["recall_at_10"] < idx.meta["recall_at_10"]  # the measurement can tell them apart


def test_milvus_ivf_is_built_as_asked_and_measured():
    """An IVF collection records its lists and its recall against exact (milvus-lite scans a segment
    this small exactly; larger ones get the real IVF)."""
    pytest.importorskip("pymilvus")
    x = clustered(2_000, 16, clusters=200)
    idx = build_index(x, [str(i) for i in range(len(x))], IndexParams(backend="milvus", milvus_index="IVF_FLAT", nprobe=64, recall_queries=100))
    try:
        assert idx.meta["milvus_index"] == "IVF_FLAT" and idx.meta["milvus_params"]["nlist"] == 128
        assert idx.meta["recall_at_10"] >= 0.9
        assert idx.client.describe_index(idx.collection, "vector")["index_type"] == "IVF_FLAT"
    finally:
        idx.drop()


def test_embedded_milvus_is_exact_by_default_and_a_cluster_gets_ivf():
    """milvus-lite drops search-time nprobe, so auto never leaves it an IVF it cannot tune."""
    from retrieval.milvus_index import milvus_index_type

    params = IndexParams(backend="milvus", exact_below=1_000)
    assert milvus_index_type(1_000_000, params, remote=False)[0] == "FLAT"
    kind, build = milvus_index_type(1_000_000, params, remote=True)
    assert kind == "IVF_FLAT" and build["nlist"] == 4096
    assert milvus_index_type(500, params, remote=True)[0] == "FLAT"
    pytest.importorskip("pymilvus")
    x = clustered(2_000, 16, clusters=200)
    idx = build_index(x, [str(i) for i in range(len(x))], IndexParams(backend="milvus", exact_below=100, recall_queries=50))
    try:
        assert idx.meta["milvus_index"] == "FLAT" and idx.meta["exact"]
        _, got = idx.search(x[:5], 10)
        assert [int(r[0]) for r in got] == [0, 1, 2, 3, 4]  # each vector finds itself first
    finally:
        idx.drop()


@pytest.mark.parametrize("factory", ["Flat", "IVF64,PQ16x4fs,RFlat"])
def test_selective_filter_still_returns_k_hits(build, factory, monkeypatch):
    x = clustered(5_000 if build.backend == "faiss" else 1_000, 32)
    ids = [str(i) for i in range(len(x))]
    idx = build(x, ids, factory=factory, nprobe=4, milvus_index="FLAT" if factory == "Flat" else "IVF_FLAT")
    allowed = np.zeros(len(x), bool)
    allowed[::50] = True  # scattered over clusters
    truth = np.flatnonzero(allowed)[np.argsort(-(x[np.flatnonzero(allowed)] @ x[:3].T), axis=0)[:10]].T
    for given in (allowed, np.flatnonzero(allowed)):  # a mask or sorted rows (postings)
        _, got = idx.search(x[:3], 10, given)
        for row, want in zip(got, truth):
            assert len(row) == 10
            assert all(allowed[int(i)] for i in row)
            assert [int(i) for i in row] == want.tolist()  # the exact best of the allowed items
    import retrieval.index

    monkeypatch.setattr(retrieval.index, "GATHER_BYTES", 0)  # a large catalog's allowed rows: never gathered
    broad = np.ones(len(x), bool)
    broad[1::2] = False  # half the catalog: the ANN-with-selector path
    _, got = idx.search(x[:3], 10, broad)
    assert all(len(r) == 10 and all(int(i) % 2 == 0 for i in r) for r in got)
    most = np.arange(len(x))[np.arange(len(x)) % 10 != 0]  # 90 %: Milvus writes it as "id not in [...]"
    _, got = idx.search(x[:3], 10, most)
    assert all(len(r) == 10 and all(int(i) % 10 != 0 for i in r) for r in got)


def test_filter_with_fewer_allowed_than_k_returns_them_all(build):
    x = clustered(300, 16)
    idx = build(x, [str(i) for i in range(300)])
    allowed = np.zeros(300, bool)
    allowed[[3, 7]] = True
    _, got = idx.search(x[0], 10, allowed)
    assert sorted(got[0]) == ["3", "7"]
    _, got = idx.search(x[0], 10, np.array([], np.int64))
    assert got == [[]]


def test_save_load_roundtrip_and_crash_mid_write_keeps_old_index(build, tmp_path):
    x = clustered(1_000, 16)
    ids = [f"a{i}" for i in range(1_000)]
    idx = build(x, ids)
    idx.save(tmp_path)
    params = IndexParams(backend=build.backend)
    loaded = open_index(tmp_path, params)
    assert loaded.ids == ids and loaded.meta["n"] == 1_000
    assert loaded.search(x[5], 1)[1][0][0] == "a5"
    assert np.array_equal(loaded.vector("a8"), x[8])
    if hasattr(loaded, "close"):
        loaded.close()
    # a crash mid-write leaves a half-written version behind and CURRENT untouched
    (tmp_path / "v-99999999-partial.partial").mkdir()
    (tmp_path / "v-99999999-partial.partial" / "index.faiss").write_bytes(b"garbage")
    again = open_index(tmp_path, params)
    assert again.ids == ids
    if hasattr(again, "close"):
        again.close()
    # a newer save replaces it; the one before stays as the fallback
    y = clustered(50, 16, seed=1)
    build(y, [f"b{i}" for i in range(50)]).save(tmp_path)
    newest = open_index(tmp_path, params)
    assert newest.ids[0] == "b0"
    assert newest.search(y[3], 1)[1][0][0] == "b3"
    if hasattr(newest, "close"):
        newest.close()
    assert json.loads((tmp_path / (tmp_path / "CURRENT").read_text() / "meta.json").read_text())["n"] == 50
    other = "milvus" if build.backend == "faiss" else "faiss"
    with pytest.raises(ValueError, match="rebuild"):
        open_index(tmp_path, IndexParams(backend=other))


@pytest.mark.parametrize("factory", ["Flat", "IVF16,PQ8x4fs,RFlat"])
def test_vectors_are_stored_once(tmp_path, factory):
    """Flat and RFlat hold the exact vectors inside the index: no vectors.npy beside it, and the
    loaded `vectors` are the index's own (memory-mapped), equal to what was built."""
    x = clustered(2_000, 16)
    idx = VectorIndex.build(x, [str(i) for i in range(len(x))], IndexParams(factory=factory))
    version = idx.save(tmp_path)
    assert not (version / "vectors.npy").exists()
    vectors = VectorIndex.load(tmp_path).vectors  # the index object is gone: the view must keep its memory alive
    gc.collect()
    assert np.array_equal(vectors, x)
    assert not vectors.flags.owndata and not vectors.flags.writeable
    pq_only = VectorIndex.build(x, [str(i) for i in range(len(x))], IndexParams(factory="IVF16,PQ8x4fs"))
    assert (pq_only.save(tmp_path / "pq") / "vectors.npy").exists()  # no exact copy inside: keep one beside it
    assert np.array_equal(VectorIndex.load(tmp_path / "pq").vector("5"), x[5])


def test_milvus_cleans_up_after_itself(tmp_path):
    pytest.importorskip("pymilvus")
    x = clustered(200, 8)
    idx = build_index(x, [str(i) for i in range(200)], IndexParams(backend="milvus"))
    scratch = idx.scratch
    assert scratch is not None and scratch.exists()
    idx.close()
    assert not scratch.exists()  # an unsaved index leaves nothing behind
    first = build_index(x, [str(i) for i in range(200)], IndexParams(backend="milvus"))
    v1 = first.save(tmp_path)
    assert first.scratch is None and (v1 / "milvus.db").exists()
    first.close()
    for _ in range(3):
        more = build_index(x, [str(i) for i in range(200)], IndexParams(backend="milvus"))
        more.save(tmp_path)
        more.close()
    assert not v1.exists()  # old versions go, their database with them
    assert len(list(tmp_path.glob("v-*"))) == 2  # the live one and the one before


def test_bad_input_is_rejected_with_clear_errors(build, tmp_path):
    x = clustered(10, 8)
    with pytest.raises(ValueError, match="one vector per id"):
        build(x, ["a"] * 9)
    with pytest.raises(ValueError, match="unique"):
        build(x, ["a"] * 10)
    idx = build(x, [str(i) for i in range(10)])
    with pytest.raises(ValueError, match="dimension"):
        idx.search(np.zeros((1, 4), np.float32), 3)
    with pytest.raises(ValueError, match="rows"):
        idx.search(x[0], 3, np.array([0, 99]))
    with pytest.raises(FileNotFoundError, match="index build"):
        open_index(tmp_path / "nothing", IndexParams(backend=build.backend))
    with pytest.raises(ValueError, match="backend"):
        IndexParams(backend="annoy")
