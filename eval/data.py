"""Where evaluations get their data: a catalog folder, or a raw folder in a format whyrec imports.

Every evaluation takes this path from the command line, so it runs unchanged on any copy of these
formats. A raw folder is imported once into a cache folder keyed by its path and file dates.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from retrieval.catalog import INTERACTIONS_FILE, PRODUCTS_FILE, Catalog

log = logging.getLogger(__name__)

RAW_MARKERS = {"hm": ("articles.csv",), "jsonl": ("products.jsonl", "products.csv")}


def _fingerprint(folder: Path) -> str:
    h = hashlib.sha1(str(folder.resolve()).encode())
    for f in sorted(folder.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def load_catalog(path: str | Path, cache_dir: str | Path = "var/cache/catalogs") -> Catalog:
    """A catalog folder (products.parquet), or a raw H&M (Kaggle layout) or plain products.jsonl/csv
    folder, imported once into `cache_dir`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path {path} does not exist")
    if (path / PRODUCTS_FILE).exists():
        return Catalog.load(path)
    for fmt, markers in RAW_MARKERS.items():
        if any((path / m).exists() for m in markers):
            out = Path(cache_dir) / f"{fmt}-{_fingerprint(path)}"
            if not (out / PRODUCTS_FILE).exists() or not (out / INTERACTIONS_FILE).exists():
                from retrieval.importers import import_catalog

                log.info("importing %s folder %s into %s", fmt, path, out)
                import_catalog(fmt, path, out, verify_images=False)
            return Catalog.load(out)
    raise ValueError(f"{path} is neither a catalog folder ({PRODUCTS_FILE}) nor a raw folder whyrec can import "
                     f"({', '.join(f'{k}: {m[0]}' for k, m in RAW_MARKERS.items())})")
