"""The query side: MiniLM on ONNX Runtime (float32 and int8) against torch, and the query-vector LRU."""
from dataclasses import replace

import numpy as np
import pytest

from retrieval.lru import LRUCache

PHRASES = ["navy striped shirt for men", "black dress", "red floral skirt for summer", "grey hoodie for kids"]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.mark.slow
def test_onnx_towers_match_torch_and_are_exported_once(onnx_dir):
    from retrieval.encoders.onnx_text import OnnxTextTower
    from retrieval.encoders.towers import TextTower

    want = TextTower().features(PHRASES)
    fp32 = OnnxTextTower("onnx", onnx_dir, threads=1)
    int8 = OnnxTextTower("int8", onnx_dir, threads=1)
    assert fp32.features(PHRASES).shape == (len(PHRASES), 384)
    assert np.min(np.sum(fp32.features(PHRASES) * want, axis=1)) > 0.9999
    cos8 = np.sum(int8.features(PHRASES) * want, axis=1)
    assert np.min(cos8) > 0.97 and np.max(cos8) < 0.99999  # close, but really quantised
    assert np.allclose(np.linalg.norm(int8.features(PHRASES), axis=1), 1, atol=1e-5)
    files = sorted(onnx_dir.glob("*.onnx"))
    assert [f.name for f in files] == ["all-MiniLM-L6-v2.int8.onnx", "all-MiniLM-L6-v2.onnx"]
    stamps = [f.stat().st_mtime_ns for f in files]
    OnnxTextTower("int8", onnx_dir, threads=1)  # a second start reads the cache, exports nothing
    assert [f.stat().st_mtime_ns for f in files] == stamps


@pytest.mark.slow
def test_searcher_on_the_onnx_runtime_ranks_like_torch(demo_config, demo_searcher, onnx_dir):
    from retrieval.encoders import EncoderConfig, create_encoder
    from retrieval.search import Searcher

    ecfg = EncoderConfig(**{**demo_config["encoder"], "query_runtime": "onnx", "onnx_dir": str(onnx_dir), "threads": 1})
    fast = Searcher(demo_searcher.catalog, create_encoder(ecfg), demo_searcher.index, replace(demo_searcher.cfg, query_cache_size=0),
                    demo_searcher.vocab, demo_searcher.lexical, demo_searcher.fusion)
    assert type(fast.encoder.towers.query_text).__name__ == "OnnxTextTower"
    for q in ("black dress", "white t-shirt", "striped top for women"):
        assert [h.id for h in fast.search(q, 8)] == [h.id for h in demo_searcher.search(q, 8)]


def test_bad_query_runtime_is_refused():
    from retrieval.encoders import EncoderConfig, create_encoder

    with pytest.raises(ValueError, match="query_runtime"):
        EncoderConfig(query_runtime="tensorrt")
    with pytest.raises(ValueError, match="openclip"):
        create_encoder(EncoderConfig(name="openclip", query_runtime="int8"))


@pytest.mark.slow
def test_query_vectors_come_from_the_lru(demo_searcher):
    v = demo_searcher.query_vector("green knitted cardigan")
    assert demo_searcher.query_vector("green knitted cardigan") is v  # not encoded again
    assert not v.flags.writeable  # shared: nobody may change it in place
    other = demo_searcher.query_vector("green knitted cardigans")
    assert other is not v and float(other @ v) < 0.99999


def test_lru_keeps_the_most_recently_used():
    cache, made = LRUCache(2), []

    def make(key):
        return lambda: made.append(key) or key.upper()

    assert cache.get_or_make("a", make("a")) == "A"
    cache.get_or_make("b", make("b"))
    cache.get_or_make("a", make("a"))  # a is now the most recent
    cache.get_or_make("c", make("c"))  # evicts b
    cache.get_or_make("a", make("a"))
    cache.get_or_make("b", make("b"))
    assert made == ["a", "b", "c", "b"] and len(cache) == 2
    off = LRUCache(0)
    off.get_or_make("a", make("a"))
    off.get_or_make("a", make("a"))
    assert made[-2:] == ["a", "a"] and len(off) == 0


@pytest.mark.slow
def test_index_build_takes_given_vectors_instead_of_encoding(demo_config, tmp_path):
    from retrieval.index import VectorIndex
    from retrieval.search import Searcher, build_index

    catalog = Searcher.from_config(demo_config).catalog
    rng = np.random.default_rng(0)
    given = rng.standard_normal((len(catalog), 256)).astype(np.float32)
    np.save(tmp_path / "given.npy", given)
    cfg = {**demo_config, "index": {"dir": str(tmp_path / "index")}, "search": {**demo_config["search"], "fit_fusion": False}}
    index = build_index(cfg, vectors=tmp_path / "given.npy")
    loaded = VectorIndex.load(tmp_path / "index")
    unit = given / np.linalg.norm(given, axis=1, keepdims=True)
    for n in (0, len(catalog) // 2, len(catalog) - 1):  # row n of the file is the n-th catalog id's vector
        assert np.allclose(loaded.vector(catalog.ids[n]), unit[n], atol=1e-6)
    assert index.meta["vectors_file"] == str(tmp_path / "given.npy")
    assert (tmp_path / "index" / "vocabulary.json").exists() and (tmp_path / "index" / "lexical").exists()
    with pytest.raises(ValueError, match="one row per catalog id"):
        build_index(cfg, vectors=given[:-1])
    with pytest.raises(ValueError, match="256-d|-d but the encoder"):
        build_index(cfg, vectors=given[:, :100])
