"""The item-vector index: FAISS here (`VectorIndex`), Milvus in `retrieval.milvus_index`, chosen by
`index.backend` through `build_index` / `open_index`. Both answer the same calls: `build, search(queries, k,
allowed=None), vector(id), scores(q, ids), row, ids, dim, save(dir), load(dir), measure_recall`.
`allowed` is a bool mask or sorted int64 rows (the searcher's filter postings); FAISS turns it into an
ID selector (no per-query copy of vectors), Milvus into an expression.

Vectors are L2-normalised, so inner product = cosine. Below `exact_below` items the index is an
exact flat scan; above it an IVF index with fast-scan PQ codes re-ranked by exact distances
(`IVF{nlist},PQ{d/2}x4fs,RFlat`), which measured better than HNSW here on text-to-image queries
(they fall between clusters; DESIGN.md). Recall@10 against exact is measured at build time and
stored with the index.

On disk: DIR/CURRENT names the live version folder DIR/v-<time>/ (index.faiss, ids.npy, meta.json,
and vectors.npy only for a factory that keeps no exact copy of the vectors: `Flat` and `...,RFlat` hold
one, which is read memory-mapped and used as `vectors`, so the vectors are never held twice). A save writes a new version under a private name, publishes it by rename,
then replaces CURRENT atomically (`retrieval.artifacts`), so a crash mid-write leaves the previous
index loadable and a second writer's save in progress is never deleted.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import faiss
import numpy as np

from retrieval.artifacts import atomic_dir, atomic_write_text, is_partial, remove_stale_partials

log = logging.getLogger(__name__)

CURRENT = "CURRENT"


@dataclass
class IndexParams:
    """How an index is built and searched. `backend` and `milvus_uri` are set from the `index:` section
    (`index.backend`, `index.milvus_uri`; see retrieval.search.IndexConfig)."""

    backend: str = "faiss"  # faiss | milvus
    factory: str = "auto"  # a faiss factory string, or auto (Flat below exact_below, else IVF-PQfs-refine)
    exact_below: int = 100_000
    nprobe: int = 16
    k_factor: int = 64  # refine: k * k_factor PQ candidates re-ranked exactly (32 left recall@10 at 0.92 on 1M clustered vectors, 64 gave 0.995+)
    recall_queries: int = 200
    threads: int = 1  # one thread per single query beat two here (DESIGN.md)
    use_gpu: bool = True  # only where faiss-gpu is installed and CUDA is present
    milvus_uri: str = ""  # "" = an embedded milvus-lite file inside the index version; http://host:19530 = a cluster
    milvus_token: str = ""  # cluster credentials ("user:password" or an API key); never stored with the index
    milvus_index: str = "auto"  # a Milvus index type (FLAT, IVF_FLAT, HNSW, ...), or auto (a cluster: FLAT below exact_below, else IVF_FLAT; milvus-lite: FLAT)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"index.backend must be one of {BACKENDS}, not {self.backend!r}")


BACKENDS = ("faiss", "milvus")
# allowed rows whose vectors take at most this many bytes are scored by gathering them rather than by an
# IVF selector search, whose nprobe widens as the allowed share shrinks (1M items, 256-d, top-1000 of
# random rows: 10k rows gathered 4.1 ms vs 7.8 ms by selector, 20k rows 7.8 vs 5.2 ms)
GATHER_BYTES = 12 << 20
Allowed = Union[np.ndarray, None]


def auto_factory(n: int, d: int, exact_below: int = 100_000) -> str:
    if n < exact_below:
        return "Flat"
    nlist = int(min(4096, max(256, 2 ** round(np.log2(4 * np.sqrt(n))))))
    m = d // 2 if d % 2 == 0 else d
    return f"IVF{nlist},PQ{m}x4fs,RFlat"


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def allowed_rows(allowed: Allowed, n: int) -> np.ndarray | None:
    """`allowed` (a bool mask over the n items, or int rows) as sorted unique int64 rows; None = all."""
    if allowed is None:
        return None
    a = np.asarray(allowed)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"allowed mask has shape {a.shape}, expected ({n},)")
        return np.flatnonzero(a).astype(np.int64)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"allowed must be a bool mask or integer rows, not {a.dtype}")
    rows = a.astype(np.int64, copy=False).ravel()
    if rows.size and (rows[0] < 0 or rows[-1] >= n or np.any(rows[1:] <= rows[:-1])):
        rows = np.unique(rows)
        if rows.size and (rows[0] < 0 or rows[-1] >= n):
            raise ValueError(f"allowed rows must lie in [0, {n})")
    return rows


def recall_queries(vectors: np.ndarray, n_queries: int, seed: int = 0) -> np.ndarray:
    """Half noisy copies of items, half mixes of two random items (queries that fall between
    clusters, as text queries do among image vectors)."""
    n, d = vectors.shape
    rng = np.random.default_rng(seed)
    a = np.asarray(vectors[np.sort(rng.integers(0, n, n_queries))], np.float32)
    b = np.asarray(vectors[np.sort(rng.integers(0, n, n_queries))], np.float32)
    rng.shuffle(b)
    half = n_queries // 2
    noise = 0.5 * rng.standard_normal(a[:half].shape).astype(np.float32) / np.sqrt(d)
    q = np.concatenate([a[:half] + noise, (a[half:] + b[half:]) / 2])
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.ascontiguousarray(q, dtype=np.float32)


def exact_top(vectors: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows by inner product, straight from `vectors` (mmap is fine: no copy is added)."""
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    _, rows = faiss.knn(np.ascontiguousarray(q, np.float32), np.ascontiguousarray(vectors, np.float32), k, faiss.METRIC_INNER_PRODUCT)
    return rows


class ItemVectors:
    """What both backends share: ids <-> rows, the exact item vectors (for `vector`, `scores` and the
    searcher's candidate scoring) and recall against an exact scan."""

    ids: list[str]
    row: dict[str, int]
    vectors: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def _check_queries(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, int]:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"query dimension {q.shape[1]} != index dimension {self.dim}")
        return q, max(1, min(int(k), len(self)))

    def vector(self, item_id: str) -> np.ndarray:
        return np.asarray(self.vectors[self.row[item_id]], dtype=np.float32)

    def scores(self, q: np.ndarray, item_ids: Sequence[str]) -> np.ndarray:
        """Exact scores of the given items for one query."""
        return self.row_scores(q, np.array([self.row[i] for i in item_ids], dtype=np.int64))

    def row_scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact scores of the given rows for one query (gathers only those rows)."""
        if not len(rows):
            return np.zeros(0, np.float32)
        return np.asarray(self.vectors[rows], np.float32) @ np.asarray(q, np.float32).ravel()

    def measure_recall(self, n_queries: int = 200, k: int = 10, seed: int = 0) -> float:
        """Recall@k of this index's unfiltered search against an exact scan (`recall_queries`)."""
        if self.meta.get("exact") or n_queries <= 0:
            return 1.0
        k = min(k, len(self))
        q = recall_queries(self.vectors, n_queries, seed)
        truth = exact_top(self.vectors, q, k)
        _, got = self.search(q, k)
        return float(np.mean([len(set(t.tolist()) & {self.row[i] for i in g}) / k for t, g in zip(truth, got)]))

    def search(self, queries: np.ndarray, k: int, allowed: Allowed = None) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k (scores, ids) per query. `allowed` (bool mask or sorted int rows) restricts the result
        to those items and still returns k hits when at least k are allowed."""
        scores, found = self.search_rows(queries, k, allowed)
        return scores, [[self.ids[r] for r in row if r >= 0] for row in found]

    def search_rows(self, queries: np.ndarray, k: int, allowed: Allowed = None) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        """`search` as (scores, int64 rows), -1 past the hits found: the searcher's hot path needs no ids."""
        raise NotImplementedError


def flat_storage(index: faiss.Index) -> faiss.IndexFlat | None:
    """The exact float vectors a FAISS index holds (Flat itself, or the refine stage of `...,RFlat`)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        index = faiss.downcast_index(index.refine_index)
    return index if isinstance(index, faiss.IndexFlat) else None


class _KeepAlive:
    """Exposes a raw array while holding the FAISS index that owns its memory (the array's base)."""

    def __init__(self, raw: np.ndarray, owner):
        self.__array_interface__ = raw.__array_interface__
        self.owner = owner


def flat_view(flat: faiss.IndexFlat, owner) -> np.ndarray:
    """A read-only numpy view (no copy) of a flat index's vectors; the view keeps `owner` (the
    top-level index that owns the memory) alive, so it stays valid after the VectorIndex is gone."""
    raw = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
    view = np.asarray(_KeepAlive(raw, owner))
    view.flags.writeable = False
    return view


class VectorIndex(ItemVectors):
    """An ANN (or exact) FAISS index over item vectors, addressed by item id."""

    def __init__(self, index: faiss.Index, ids: Sequence[str], vectors: np.ndarray | None, meta: dict, params: IndexParams):
        self.index = index
        self.ids = list(ids)
        self.row = {item_id: i for i, item_id in enumerate(self.ids)}
        self._flat = flat_storage(index)
        if vectors is None and self._flat is None:
            raise ValueError(f"index {meta.get('factory')} keeps no exact vectors and none were given")
        self.vectors = flat_view(self._flat, index) if self._flat is not None else vectors  # one copy, never two
        self.meta = meta
        self.meta.setdefault("exact", meta.get("factory") == "Flat")
        self.params = params
        self._gpu_index = None
        self._configure()

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, vectors: np.ndarray, ids: Sequence[str], params: IndexParams | None = None, extra_meta: dict | None = None) -> "VectorIndex":
        params = params or IndexParams()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        check_build_input(vectors, ids)
        n, d = vectors.shape
        factory = auto_factory(n, d, params.exact_below) if params.factory == "auto" else params.factory
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        t0 = time.time()
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            sample = vectors[np.random.default_rng(0).choice(n, size=min(n, 100_000), replace=False)]
            index.train(sample)
        index.add(vectors)
        build_s = time.time() - t0
        meta = {"backend": "faiss", "factory": factory, "n": n, "dim": d, "build_seconds": round(build_s, 2),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra_meta or {})}
        out = cls(index, ids, None if flat_storage(index) is not None else vectors, meta, params)
        out.meta["recall_at_10"] = out.measure_recall(params.recall_queries)
        log.info("built %s over %d x %d in %.1fs, recall@10 vs exact %.3f", factory, n, d, build_s, out.meta["recall_at_10"])
        return out

    def _configure(self) -> None:
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            ivf.nprobe = self.params.nprobe
        if isinstance(self.index, faiss.IndexRefine):
            self.index.k_factor = self.params.k_factor
        if self.params.use_gpu and gpu_available() and self.meta.get("factory", "").startswith("Flat"):
            self._gpu_index = faiss.index_cpu_to_all_gpus(self.index)

    # ------------------------------------------------------------------ search
    def search_rows(self, queries: np.ndarray, k: int, allowed: Allowed = None) -> tuple[np.ndarray, np.ndarray]:
        q, k = self._check_queries(queries, k)
        rows = allowed_rows(allowed, len(self))
        if rows is None:
            return self._raw_search(q, k)
        return self._search_filtered(q, k, rows)

    def _search_filtered(self, q: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filtered top-k without copying the allowed vectors (beyond `GATHER_BYTES` of them). Flat: an ID
        selector (a bitmap) on the exact scan. IVF: the selector on the ANN search with nprobe widened
        by 1/share-allowed (so as many allowed items are probed as unfiltered search probes items),
        then the exact refine; if that comes back short, the exact scan with the selector."""
        n_allowed = len(rows)
        if n_allowed == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        kk = min(k, n_allowed)
        ivf = faiss.try_extract_index_ivf(self.index)
        if n_allowed * self.dim * 4 <= GATHER_BYTES and (ivf is not None or self._flat is None):  # a few MB: score them directly
            sims = q @ np.asarray(self.vectors[rows], np.float32).T
            top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
            return np.take_along_axis(sims, top, 1), rows[top]
        bits = np.zeros(len(self), bool)
        bits[rows] = True
        packed = np.packbits(bits, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(packed))
        faiss.omp_set_num_threads(self.params.threads)
        if ivf is not None:
            nprobe = int(min(ivf.nlist, np.ceil(self.params.nprobe * len(self) / n_allowed)))
            ivf_params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
            params = faiss.IndexRefineSearchParameters(k_factor=self.params.k_factor, base_index_params=ivf_params) \
                if isinstance(self.index, faiss.IndexRefine) else ivf_params
            scores, found = self.index.search(q, kk, params=params)
            if (found >= 0).sum(1).min() >= kk:
                return scores, found
        if self._flat is not None:
            return self._flat.search(q, kk, params=faiss.SearchParameters(sel=sel))
        sims = q @ np.asarray(self.vectors[rows], np.float32).T  # no exact copy inside the index: gather the allowed rows
        top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
        return np.take_along_axis(sims, top, 1), rows[top]

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        faiss.omp_set_num_threads(self.params.threads)  # torch may have reset it
        return (self._gpu_index or self.index).search(q, k)

    # ------------------------------------------------------------------ storage
    def save(self, directory: str | Path) -> Path:
        """Write a new version folder (`artifacts.atomic_dir`: private temporary name, fsync,
        rename), then switch CURRENT to it atomically. Finished versions beyond the two newest and
        the live one are removed; other writers' folders in progress are never touched."""
        def write(tmp: Path) -> None:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            np.save(tmp / "ids.npy", np.array(self.ids))
            if self._flat is None:  # the index holds no exact copy: keep one beside it
                np.save(tmp / "vectors.npy", np.asarray(self.vectors, dtype=np.float32))
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2))  # inside the folder atomic_dir publishes

        return save_version(directory, write)

    @classmethod
    def load(cls, directory: str | Path, params: IndexParams | None = None, mmap: bool = True) -> "VectorIndex":
        version = current_version(directory)
        meta = json.loads((version / "meta.json").read_text())
        index = faiss.read_index(str(version / "index.faiss"), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
        ids = [str(x) for x in np.load(version / "ids.npy")]
        vectors = None
        if flat_storage(index) is None:
            vectors = np.load(version / "vectors.npy", mmap_mode="r" if mmap else None)
        return cls(index, ids, vectors, meta, params or IndexParams())


def check_build_input(vectors: np.ndarray, ids: Sequence[str]) -> None:
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"need one vector per id: got {vectors.shape} for {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    if len(ids) == 0:
        raise ValueError("cannot build an index over no items")


def current_version(directory: str | Path) -> Path:
    directory = Path(directory)
    pointer = directory / CURRENT
    if not pointer.exists():
        raise FileNotFoundError(f"no index at {directory}; run `whyrec index build` first")
    return directory / pointer.read_text().strip()


def save_version(directory: str | Path, write, on_remove=None) -> Path:
    """Publish a new version folder filled by `write(tmp)` and point CURRENT at it; versions beyond the
    two newest and the live one are removed (`on_remove(version)` first, e.g. to drop a Milvus
    collection)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    version = directory / f"v-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.time_ns() % 10**9:09d}"
    with atomic_dir(version) as tmp:
        write(tmp)
    atomic_write_text(directory / CURRENT, version.name)
    live = (directory / CURRENT).read_text().strip()  # another writer may have switched it since
    versions = sorted(p for p in directory.glob("v-*") if p.is_dir() and not is_partial(p))
    keep = {version.name, live} | {p.name for p in versions[-2:]}
    for p in versions:
        if p.name not in keep:
            if on_remove is not None:
                on_remove(p)
            shutil.rmtree(p, ignore_errors=True)
    remove_stale_partials(directory)
    return version


def backend_of(directory: str | Path) -> str:
    """The backend that wrote the live version of an index folder (faiss for older indexes)."""
    return json.loads((current_version(directory) / "meta.json").read_text()).get("backend", "faiss")


def build_index(vectors: np.ndarray, ids: Sequence[str], params: IndexParams | None = None, extra_meta: dict | None = None) -> ItemVectors:
    """Build an index with the backend `params.backend` names."""
    params = params or IndexParams()
    if params.backend == "milvus":
        from retrieval.milvus_index import MilvusIndex

        return MilvusIndex.build(vectors, ids, params, extra_meta)
    return VectorIndex.build(vectors, ids, params, extra_meta)


def open_index(directory: str | Path, params: IndexParams | None = None, mmap: bool = True) -> ItemVectors:
    """Load the live index in `directory` with the backend that wrote it (a config asking for another
    backend is an error: rebuild the index)."""
    params = params or IndexParams()
    written = backend_of(directory)
    if written != params.backend:
        raise ValueError(f"the index at {directory} was built with backend {written}, the config asks for {params.backend}; rebuild the index")
    if written == "milvus":
        from retrieval.milvus_index import MilvusIndex

        return MilvusIndex.load(directory, params, mmap=mmap)
    return VectorIndex.load(directory, params, mmap=mmap)
