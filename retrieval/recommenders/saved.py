"""A served recommender's fit, saved beside the index and loaded at start-up.

At 1M items the expensive fits (the ranker's training windows, the tf-idf neighbour rows, the
factorisations) take far longer than a service may take to start, so `whyrec index
fit-recommender` fits the configured model once and saves its `fitted_state()` here; `whyrec
serve` restores it when its fingerprint (the recommend config, the catalog's item texts, groups,
prices, categories and colours, the item vectors and every purchase) matches, and otherwise
refits it (small catalogs) or refuses to start (large ones): a stale fit is never served.

Layout (`INDEX_DIR/recommender/`, published whole by `artifacts.atomic_dir`): meta.json (model,
fingerprint, the state's tree with arrays replaced by references) and arrays.npz (no pickles).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from retrieval.artifacts import atomic_dir

log = logging.getLogger(__name__)

DIRNAME = "recommender"
FORMAT = 1


def fingerprint(cfg, ctx, data) -> str:
    """A digest of everything a fit depends on: the recommend config (its models and served model),
    the catalog's item ids and texts and coded facts, the item (and image) vectors, the purchases."""
    h = hashlib.blake2b(digest_size=20)
    settings = {"format": FORMAT, "model": cfg.model, "models": cfg.models, "merge_same_day": cfg.merge_same_day,
                "item_vectors": cfg.item_vectors, "image_features": cfg.image_features}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for strings in (data.item_ids, ctx.texts, data.users):
        h.update(str(len(strings)).encode())
        h.update("\x1f".join(strings).encode())
    for arr in (ctx.groups, ctx.prices, ctx.category, ctx.category_top, ctx.colour, ctx.item_vectors, ctx.image_vectors,
                data.offsets, data.hist_item, data.hist_day):
        if arr is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype}{a.shape}".encode())
        for s in range(0, len(a), 65536):  # memoryview chunks: no copy of a 1 GB vector matrix
            h.update(memoryview(a[s: s + 65536]).cast("B"))
    return h.hexdigest()


def _flatten(value: Any, arrays: dict[str, np.ndarray], path: str) -> Any:
    """The state's tree for JSON, each array / sparse matrix stored in `arrays` under its path."""
    if isinstance(value, dict):
        return {str(k): _flatten(v, arrays, f"{path}/{k}") for k, v in value.items()}
    if sp.issparse(value):
        m = value.tocsr()
        for part in ("data", "indices", "indptr"):
            arrays[f"{path}.{part}"] = getattr(m, part)
        return {"$sparse": path, "shape": list(m.shape)}
    if isinstance(value, np.ndarray):
        arrays[path] = value
        return {"$array": path}
    if isinstance(value, (list, tuple, str, int, float, bool)) or value is None:
        return value
    raise ValueError(f"cannot save {type(value).__name__} at {path}: fitted_state holds arrays, sparse matrices, dicts and plain values")


def _unflatten(value: Any, arrays) -> Any:
    if isinstance(value, dict):
        if "$array" in value:
            return arrays[value["$array"]]
        if "$sparse" in value:
            p = value["$sparse"]
            return sp.csr_matrix((arrays[f"{p}.data"], arrays[f"{p}.indices"], arrays[f"{p}.indptr"]), shape=tuple(value["shape"]))
        return {k: _unflatten(v, arrays) for k, v in value.items()}
    return value


def save_fitted(index_dir: str | Path, name: str, kind: str, fp: str, state: dict | None, extra: dict | None = None) -> Path:
    """Write the fit of model `name` beside the index (atomically: a reader sees the old fit or this one)."""
    arrays: dict[str, np.ndarray] = {}
    tree = _flatten(state, arrays, "state") if state is not None else None
    meta = {"format": FORMAT, "model": name, "kind": kind, "fingerprint": fp, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "state": tree, **(extra or {})}
    with atomic_dir(Path(index_dir) / DIRNAME) as tmp:
        np.savez(tmp / "arrays.npz", **arrays)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # inside the folder atomic_dir publishes
    return Path(index_dir) / DIRNAME


def read_meta(index_dir: str | Path) -> dict | None:
    path = Path(index_dir) / DIRNAME / "meta.json"
    return json.loads(path.read_text()) if path.exists() else None


def load_fitted(index_dir: str | Path, name: str, fp: str) -> tuple[dict | None, str]:
    """(the saved state of model `name`, "") when one matches fingerprint `fp`; else (None, why not)."""
    meta = read_meta(index_dir)
    if meta is None:
        return None, "no saved fit"
    if meta.get("format") != FORMAT or meta.get("model") != name:
        return None, f"the saved fit is of model {meta.get('model')!r} (format {meta.get('format')}), not {name!r}"
    if meta.get("fingerprint") != fp:
        return None, "the saved fit is stale (the catalog, its purchases, its vectors or the recommend config changed)"
    with np.load(Path(index_dir) / DIRNAME / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return _unflatten(meta["state"], arrays), ""
