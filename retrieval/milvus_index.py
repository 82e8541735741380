"""Milvus as the second index backend (`index.backend: milvus`), behind the same calls as `VectorIndex`.

`index.milvus_uri` says where the collection lives: empty (the default) is an embedded milvus-lite
database file inside the index version folder (`<index dir>/v-.../milvus.db`), so one machine needs
no server; `http://host:19530` (with `index.milvus_token` for credentials) is a Milvus cluster, and
the version folder then only names the collection. Each saved version has its own collection, so a
rebuild never disturbs the one being served; removing an old version drops its collection.

Rows are the primary keys (int64 row = position in `ids`), so a filter's allowed rows become a
Milvus expression (`id in [...]`, or `id not in [...]` when most items are allowed). The exact item
vectors stay beside the collection as `vectors.npy` (memory-mapped) for `vector`, `scores` and the
searcher's candidate scoring, which would otherwise be a network round trip per query.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import os
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.index import Allowed, IndexParams, ItemVectors, allowed_rows, check_build_input, current_version, save_version

log = logging.getLogger(__name__)

DB_FILE = "milvus.db"
INSERT_BATCH = 5_000
REMOTE = ("http://", "https://", "tcp://", "unix:")


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE)


def _connect(uri: str, token: str = ""):
    from pymilvus import MilvusClient

    if not is_remote(uri):  # the embedded server would leave a glog file in /tmp per start
        os.environ.setdefault("GLOG_logtostderr", "1")

    return MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)


def _release_lite(uri: str) -> None:
    """Stop the embedded milvus-lite server of a database file (pymilvus keeps one per file)."""
    if is_remote(uri):
        return
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # pragma: no cover - milvus-lite is a dependency
        return
    server_manager_instance.release_server(uri)


def milvus_index_type(n: int, params: IndexParams, remote: bool = True) -> tuple[str, dict]:
    """The Milvus index (and build params) for n items. `auto`: a cluster gets exact FLAT below
    `exact_below`, else IVF_FLAT with the nlist FAISS would use; embedded milvus-lite always gets
    FLAT, because it drops the search-time nprobe/ef: its IVF_FLAT searched a fixed few lists
    (recall@10 0.85 on 100k perturbed H&M vectors at nprobe 16, 64 and 256 alike, 0.73 under a 5 %
    filter; see bench/index_bench.py --compare)."""
    kind = params.milvus_index
    if kind == "auto":
        kind = "FLAT" if n < params.exact_below or not remote else "IVF_FLAT"
    elif kind != "FLAT" and not remote:
        log.warning("milvus-lite ignores search-time nprobe/ef: a %s collection cannot be tuned for recall here "
                    "(the measured recall_at_10 is in the index meta); FLAT is exact", kind)
    if kind.startswith("IVF"):  # the nlist rule FAISS uses (auto_factory), down to 16 lists for small tests
        return kind, {"nlist": int(min(4096, max(16, 2 ** round(np.log2(4 * np.sqrt(n))))))}
    if kind == "HNSW":
        return kind, {"M": 16, "efConstruction": 200}
    return kind, {}


class MilvusIndex(ItemVectors):
    """An index over item vectors held in a Milvus collection, addressed by item id."""

    def __init__(self, client, uri: str, collection: str, ids: Sequence[str], vectors: np.ndarray, meta: dict, params: IndexParams,
                 scratch: Path | None = None):
        self.client = client
        self.uri = uri
        self.collection = collection
        self.ids = list(ids)
        self.row = {item_id: i for i, item_id in enumerate(self.ids)}
        self.vectors = vectors
        self.meta = meta
        self.params = params
        self.scratch = scratch  # a temporary milvus-lite folder owned by this object (an index built but not saved)
        self._finalizer = weakref.finalize(self, _close, client, uri, scratch)

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, vectors: np.ndarray, ids: Sequence[str], params: IndexParams | None = None, extra_meta: dict | None = None) -> "MilvusIndex":
        from pymilvus import DataType, MilvusClient

        params = params or IndexParams(backend="milvus")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        check_build_input(vectors, ids)
        n, d = vectors.shape
        scratch = None
        uri = params.milvus_uri
        if not uri:
            scratch = Path(tempfile.mkdtemp(prefix="whyrec-milvus-"))
            uri = str(scratch / DB_FILE)
        client = _connect(uri, params.milvus_token)
        collection = f"whyrec_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{time.time_ns() % 10**9:09d}"
        kind, build_params = milvus_index_type(n, params, is_remote(uri))
        t0 = time.time()
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=d)
        index_params = client.prepare_index_params()
        index_params.add_index("vector", index_type=kind, metric_type="IP", params=build_params)
        client.create_collection(collection, schema=schema, index_params=index_params)
        try:
            from tqdm import tqdm

            for s in tqdm(range(0, n, INSERT_BATCH), desc="milvus insert", disable=n <= INSERT_BATCH):
                block = vectors[s: s + INSERT_BATCH].tolist()
                client.insert(collection, [{"id": s + i, "vector": v} for i, v in enumerate(block)])
            client.flush(collection)
            client.load_collection(collection)
        except BaseException:
            client.drop_collection(collection)
            _close(client, uri, scratch)
            raise
        build_s = time.time() - t0
        meta = {"backend": "milvus", "milvus_index": kind, "milvus_params": build_params, "collection": collection,
                "milvus_uri": uri if is_remote(uri) else "", "exact": kind == "FLAT", "n": n, "dim": d,
                "build_seconds": round(build_s, 2), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra_meta or {})}
        out = cls(client, uri, collection, ids, vectors, meta, params, scratch)
        out.meta["recall_at_10"] = out.measure_recall(params.recall_queries)
        log.info("built Milvus %s (%s) over %d x %d in %.1fs, recall@10 vs exact %.3f", kind, collection, n, d, build_s, out.meta["recall_at_10"])
        return out

    # ------------------------------------------------------------------ search
    def _search_params(self, share: float = 1.0) -> dict:
        """IVF probes widened by 1/share-allowed under a filter (as FAISS does), so a filter does not
        leave the probed lists short of allowed items."""
        nlist = int(self.meta.get("milvus_params", {}).get("nlist", 1 << 16))
        nprobe = int(min(nlist, np.ceil(self.params.nprobe / max(share, 1e-9))))
        return {"metric_type": "IP", "params": {"nprobe": nprobe, "ef": max(64, 4 * self.params.k_factor, k_ef(share))}}

    def search_rows(self, queries: np.ndarray, k: int, allowed: Allowed = None) -> tuple[np.ndarray, np.ndarray]:
        """`allowed` (bool mask or int rows) becomes an `id in [...]` expression (or `id not in [...]`
        when most items are allowed); a row is the collection's integer id."""
        q, k = self._check_queries(queries, k)
        rows = allowed_rows(allowed, len(self))
        expr = ""
        if rows is not None:
            if len(rows) == 0:
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            k = min(k, len(rows))
            if len(rows) > len(self) / 2:
                keep = np.ones(len(self), bool)
                keep[rows] = False
                expr = f"id not in [{','.join(map(str, np.flatnonzero(keep).tolist()))}]" if keep.any() else ""
            else:
                expr = f"id in [{','.join(map(str, rows.tolist()))}]"
        share = 1.0 if rows is None else len(rows) / len(self)
        res = self.client.search(self.collection, data=q.tolist(), limit=k, filter=expr, search_params=self._search_params(share),
                                 output_fields=[])
        width = max((len(r) for r in res), default=0)
        scores = np.full((len(q), width), -np.inf, np.float32)
        found = np.full((len(q), width), -1, np.int64)
        for i, hits in enumerate(res):
            scores[i, : len(hits)] = [h["distance"] for h in hits]
            found[i, : len(hits)] = [int(h["id"]) for h in hits]
        return scores, found

    # ------------------------------------------------------------------ storage
    def save(self, directory: str | Path) -> Path:
        """A new version folder: ids, exact vectors, meta naming the collection, and (embedded
        milvus-lite) the database file itself, copied while its server is stopped."""
        def write(tmp: Path) -> None:
            np.save(tmp / "ids.npy", np.array(self.ids))
            np.save(tmp / "vectors.npy", np.asarray(self.vectors, dtype=np.float32))
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2))
            if not is_remote(self.uri):
                self.client.close()
                _release_lite(self.uri)
                shutil.copy2(self.uri, tmp / DB_FILE)

        version = save_version(directory, write, on_remove=self._drop_version)
        if not is_remote(self.uri):  # serve from the saved copy from now on; a scratch folder is no longer needed
            self._finalizer.detach()
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)
                self.scratch = None
            self.uri = str(version / DB_FILE)
            self.client = _connect(self.uri)
            self.client.load_collection(self.collection)
            self._finalizer = weakref.finalize(self, _close, self.client, self.uri, None)
        return version

    def _drop_version(self, version: Path) -> None:
        """A remote version's collection goes with its folder (a local one lives inside the folder)."""
        try:
            meta = json.loads((version / "meta.json").read_text())
        except (OSError, ValueError):
            return
        if meta.get("milvus_uri") and meta.get("collection") != self.collection:
            client = _connect(meta["milvus_uri"], self.params.milvus_token)
            client.drop_collection(meta["collection"])
            client.close()

    @classmethod
    def load(cls, directory: str | Path, params: IndexParams | None = None, mmap: bool = True) -> "MilvusIndex":
        params = params or IndexParams(backend="milvus")
        version = current_version(directory)
        meta = json.loads((version / "meta.json").read_text())
        uri = params.milvus_uri or meta.get("milvus_uri") or str(version / DB_FILE)
        client = _connect(uri, params.milvus_token)
        if not client.has_collection(meta["collection"]):
            raise FileNotFoundError(f"Milvus at {uri} has no collection {meta['collection']}; rebuild the index")
        client.load_collection(meta["collection"])
        ids = [str(x) for x in np.load(version / "ids.npy")]
        vectors = np.load(version / "vectors.npy", mmap_mode="r" if mmap else None)
        return cls(client, uri, meta["collection"], ids, vectors, meta, params)

    def close(self) -> None:
        """Disconnect (and stop an embedded server; remove an unsaved scratch database)."""
        self._finalizer()

    def drop(self) -> None:
        """Drop this index's collection (tests and benchmarks clean up with it), then close."""
        self.client.drop_collection(self.collection)
        self.close()


def k_ef(share: float) -> int:
    """HNSW: a wider beam under a selective filter."""
    return int(min(2048, 64 / max(share, 1 / 32)))


def _close(client, uri: str, scratch: Path | None) -> None:
    try:
        client.close()
    except Exception:  # already closed
        pass
    _release_lite(uri)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
