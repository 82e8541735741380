"""FAISS behind one small class: build from vectors + ids, search (with filters), atomic save, load.

Vectors are L2-normalised, so inner product = cosine. Below `exact_below` items the index is an
exact flat scan; above it an IVF index with fast-scan PQ codes re-ranked by exact distances
(`IVF{nlist},PQ{d/2}x4fs,RFlat`), which measured better than HNSW here on text-to-image queries
(they fall between clusters; DESIGN.md). Recall@10 against exact is measured at build time and
stored with the index.

On disk: DIR/CURRENT names the live version folder DIR/v-<time>/ (index.faiss, ids.npy,
vectors.npy, meta.json). A save writes a new version under a private name, publishes it by rename,
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
from typing import Sequence

import faiss
import numpy as np

from retrieval.artifacts import atomic_dir, atomic_write_text, is_partial, remove_stale_partials

log = logging.getLogger(__name__)

CURRENT = "CURRENT"


@dataclass
class IndexParams:
    """How an index is built and searched."""

    factory: str = "auto"  # a faiss factory string, or auto (Flat below exact_below, else IVF-PQfs-refine)
    exact_below: int = 100_000
    nprobe: int = 16
    k_factor: int = 64  # refine: k * k_factor PQ candidates re-ranked exactly (32 left recall@10 at 0.92 on 1M clustered vectors, 64 gave 0.995+)
    recall_queries: int = 200
    threads: int = 1  # one thread per single query beat two here (DESIGN.md)
    use_gpu: bool = True  # only where faiss-gpu is installed and CUDA is present


def auto_factory(n: int, d: int, exact_below: int = 100_000) -> str:
    if n < exact_below:
        return "Flat"
    nlist = int(min(4096, max(256, 2 ** round(np.log2(4 * np.sqrt(n))))))
    m = d // 2 if d % 2 == 0 else d
    return f"IVF{nlist},PQ{m}x4fs,RFlat"


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    """An ANN (or exact) index over item vectors, addressed by item id."""

    def __init__(self, index: faiss.Index, ids: Sequence[str], vectors: np.ndarray, meta: dict, params: IndexParams):
        self.index = index
        self.ids = list(ids)
        self.row = {item_id: i for i, item_id in enumerate(self.ids)}
        self.vectors = vectors
        self.meta = meta
        self.params = params
        self._gpu_index = None
        self._configure()

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, vectors: np.ndarray, ids: Sequence[str], params: IndexParams | None = None, extra_meta: dict | None = None) -> "VectorIndex":
        params = params or IndexParams()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"need one vector per id: got {vectors.shape} for {len(ids)} ids")
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique")
        if len(ids) == 0:
            raise ValueError("cannot build an index over no items")
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
        meta = {"factory": factory, "n": n, "dim": d, "build_seconds": round(build_s, 2), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                **(extra_meta or {})}
        out = cls(index, ids, vectors, meta, params)
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

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k (scores, ids) per query. `allowed` (bool per item) restricts the result to those items
        and still returns k hits when at least k are allowed: selective filters are scanned exactly."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"query dimension {q.shape[1]} != index dimension {self.dim}")
        k = max(1, min(int(k), len(self)))
        if allowed is not None:
            return self._search_filtered(q, k, np.asarray(allowed, dtype=bool))
        faiss.omp_set_num_threads(self.params.threads)  # torch may have reset it
        scores, rows = (self._gpu_index or self.index).search(q, k)
        return scores, [[self.ids[r] for r in row if r >= 0] for row in rows]

    def _search_filtered(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
        n_allowed = int(allowed.sum())
        if n_allowed == 0:
            return np.zeros((len(q), 0), np.float32), [[] for _ in q]
        frac = n_allowed / len(self)
        if frac > 0.2:  # unselective: oversample the ANN result and post-filter
            scores, rows = self._raw_search(q, min(len(self), int(k / frac * 3) + k))
            out_s, out_i, short = [], [], False
            for s_row, r_row in zip(scores, rows):
                keep = [(s, r) for s, r in zip(s_row, r_row) if r >= 0 and allowed[r]][:k]
                short |= len(keep) < min(k, n_allowed)
                out_s.append([s for s, _ in keep])
                out_i.append([self.ids[r] for _, r in keep])
            if not short:
                return np.array(out_s, np.float32), out_i
        rows_allowed = np.flatnonzero(allowed)  # selective (or short): exact scan of the allowed items
        sims = q @ np.asarray(self.vectors[rows_allowed]).T
        kk = min(k, n_allowed)
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        order = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), axis=1), 1)
        return np.take_along_axis(sims, order, 1), [[self.ids[rows_allowed[j]] for j in row] for row in order]

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        faiss.omp_set_num_threads(self.params.threads)
        return (self._gpu_index or self.index).search(q, k)

    def vector(self, item_id: str) -> np.ndarray:
        return np.asarray(self.vectors[self.row[item_id]], dtype=np.float32)

    def scores(self, q: np.ndarray, item_ids: Sequence[str]) -> np.ndarray:
        """Exact scores of the given items for one query."""
        rows = np.array([self.row[i] for i in item_ids], dtype=np.int64)
        return np.asarray(self.vectors[rows]) @ np.asarray(q, np.float32).ravel() if len(rows) else np.zeros(0, np.float32)

    def measure_recall(self, n_queries: int = 200, k: int = 10, seed: int = 0) -> float:
        """Recall@k of this index against an exact scan. Half the queries are noisy copies of items,
        half are mixes of two random items (queries that fall between clusters)."""
        n = len(self)
        if self.meta.get("factory") == "Flat" or n_queries <= 0:
            return 1.0
        rng = np.random.default_rng(seed)
        a = np.asarray(self.vectors[rng.integers(0, n, n_queries)])
        b = np.asarray(self.vectors[rng.integers(0, n, n_queries)])
        half = n_queries // 2
        noise = 0.5 * rng.standard_normal(a[:half].shape).astype(np.float32) / np.sqrt(self.dim)
        q = np.concatenate([a[:half] + noise, (a[half:] + b[half:]) / 2])
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        q = q.astype(np.float32)
        exact = faiss.IndexFlatIP(self.dim)
        exact.add(np.ascontiguousarray(self.vectors, dtype=np.float32))
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        _, truth = exact.search(q, k)
        _, got = self.index.search(q, k)
        return float(np.mean([len(set(t) & set(g)) / k for t, g in zip(truth, got)]))

    # ------------------------------------------------------------------ storage
    def save(self, directory: str | Path) -> Path:
        """Write a new version folder (`artifacts.atomic_dir`: private temporary name, fsync,
        rename), then switch CURRENT to it atomically. Finished versions beyond the two newest and
        the live one are removed; other writers' folders in progress are never touched."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        version = directory / f"v-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.time_ns() % 10**9:09d}"
        with atomic_dir(version) as tmp:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            np.save(tmp / "ids.npy", np.array(self.ids))
            np.save(tmp / "vectors.npy", np.asarray(self.vectors, dtype=np.float32))
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2))  # inside the folder atomic_dir publishes
        atomic_write_text(directory / CURRENT, version.name)
        live = (directory / CURRENT).read_text().strip()  # another writer may have switched it since
        versions = sorted(p for p in directory.glob("v-*") if p.is_dir() and not is_partial(p))
        keep = {version.name, live} | {p.name for p in versions[-2:]}
        for p in versions:
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
        remove_stale_partials(directory)
        return version

    @classmethod
    def load(cls, directory: str | Path, params: IndexParams | None = None, mmap: bool = True) -> "VectorIndex":
        directory = Path(directory)
        pointer = directory / CURRENT
        if not pointer.exists():
            raise FileNotFoundError(f"no index at {directory}; run `whyrec index build` first")
        version = directory / pointer.read_text().strip()
        meta = json.loads((version / "meta.json").read_text())
        index = faiss.read_index(str(version / "index.faiss"))
        ids = [str(x) for x in np.load(version / "ids.npy")]
        vectors = np.load(version / "vectors.npy", mmap_mode="r" if mmap else None)
        return cls(index, ids, vectors, meta, params or IndexParams())
