"""The catalog: one product schema, one interaction schema (`retrieval.interactions`), stored as Parquet.

Every importer (see `retrieval.importers`) turns a public format into these two tables, and every
other part of whyrec reads only these. The text an encoder sees is built here, in `product_text`.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.artifacts import atomic_path
from retrieval.interactions import Interactions

log = logging.getLogger(__name__)

PRODUCTS_FILE = "products.parquet"
INTERACTIONS_FILE = "interactions.parquet"
REPORT_FILE = "import_report.json"

# Attributes worth putting into the text an encoder sees, in this order (the rest stay facts only).
SALIENT_ATTRIBUTES = ("product_type", "colour", "pattern", "material", "department", "section", "fit")


@dataclass
class Product:
    """One catalog item. `attributes` holds every fact the source gives (str -> str)."""

    id: str
    title: str
    description: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    category: list[str] = field(default_factory=list)  # path, broad to narrow
    colour: str = ""
    price: float | None = None
    image_paths: list[str] = field(default_factory=list)  # absolute in memory; stored relative to the catalog dir
    group_id: str = ""  # variants of one product (colours, sizes) share it; "" = its own group

    @property
    def image_path(self) -> str | None:
        return self.image_paths[0] if self.image_paths else None

    def facts(self) -> dict[str, str]:
        """All facts as one flat dict: the attributes plus colour, category and price."""
        out = dict(self.attributes)
        if self.colour:
            out.setdefault("colour", self.colour)
        if self.category:
            out.setdefault("category", " > ".join(self.category))
        if self.price is not None:
            out.setdefault("price", f"{self.price:g}")
        return out


def product_text(p: Product) -> str:
    """The one text an encoder sees for an item: title, salient attributes, description."""
    facts = p.facts()
    attrs = []
    for key in SALIENT_ATTRIBUTES:
        value = facts.get(key, "")
        if value and value.lower() not in p.title.lower() and value not in attrs:
            attrs.append(value)
    parts = [p.title]
    if attrs:
        parts.append(", ".join(attrs))
    if p.description:
        parts.append(p.description)
    return ". ".join(x.strip().rstrip(".") for x in parts if x.strip()) + "."


class ProductTable(Sequence):
    """The products of a stored catalog, kept as Arrow columns and made into `Product` objects
    on access (a bounded cache keeps the hot ones). At 1M items a list of Product dataclasses
    with their dicts costs GBs; the Arrow strings cost about the file's uncompressed size."""

    COLUMNS = ("id", "title", "description", "attributes", "category", "colour", "price", "image_paths", "group_id")

    def __init__(self, table: pa.Table, root: str | Path, cache_size: int = 65536):
        missing = [c for c in self.COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"{PRODUCTS_FILE} lacks columns {missing}")
        self.table = table.select(list(self.COLUMNS)).combine_chunks()
        self.root = os.path.realpath(root)
        self._cols = {c: self.table.column(c) for c in self.COLUMNS}
        self._get = lru_cache(maxsize=cache_size)(self._make)

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"product row {i} out of range ({n} products)")
        return self._get(i % n)

    def __add__(self, other) -> list[Product]:
        return list(self) + list(other)

    def __iter__(self):
        """Every product in order, made from column slices rather than one Arrow scalar at a time
        (a pass over 1M items: the vocabulary, BM25, fact tables, recommender context). Not cached."""
        n = len(self)
        for s in range(0, n, self.ITER_CHUNK):
            cols = [self._cols[c].slice(s, self.ITER_CHUNK).to_pylist() for c in self.COLUMNS]
            for values in zip(*cols):
                yield self._product(*values)

    ITER_CHUNK = 16384

    def _make(self, i: int) -> Product:
        return self._product(*(self._cols[c][i].as_py() for c in self.COLUMNS))

    def _product(self, pid, title, description, attributes, category, colour, price, image_paths, group_id) -> Product:
        return Product(
            id=str(pid),
            title=str(title),
            description=str(description or ""),
            attributes=json.loads(attributes or "{}"),
            category=json.loads(category or "[]"),
            colour=str(colour or ""),
            price=None if price is None or price != price else float(price),
            # the root is already real: join and normalise (resolve_image_path's result, without a realpath per item)
            image_paths=[p if os.path.isabs(p) else os.path.normpath(os.path.join(self.root, p)) for p in json.loads(image_paths or "[]")],
            group_id=str(group_id or ""),
        )

    def ids(self) -> list[str]:
        return [str(x) for x in self._cols["id"].to_pylist()]

    def column(self, name: str) -> list:
        """One stored column as Python values, without making a Product per row."""
        return self._cols[name].to_pylist()


class _ById(Mapping):
    """`catalog.by_id`: id -> Product, looked up through the id -> row table (no second copy)."""

    def __init__(self, catalog: "Catalog"):
        self._c = catalog

    def __getitem__(self, item_id: str) -> Product:
        return self._c.products[self._c.row[item_id]]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._c.row

    def __iter__(self):
        return iter(self._c.ids)

    def __len__(self) -> int:
        return len(self._c.ids)


class Catalog:
    """Products (by id, in a stable order) and the interactions on them.

    `products` is a sequence of `Product` (a list when built in memory, a lazy `ProductTable`
    when loaded); `interactions` an `Interactions` (columns, item codes = product rows)."""

    def __init__(self, products: Iterable[Product] | ProductTable, interactions: Interactions | pd.DataFrame | Iterable[tuple] = (),
                 root: str | Path = "."):
        self.products: Sequence[Product] = products if isinstance(products, ProductTable) else list(products)
        self.root = Path(root)
        self.ids: list[str] = self.products.ids() if isinstance(self.products, ProductTable) else [p.id for p in self.products]
        self.row: dict[str, int] = {}
        for n, pid in enumerate(self.ids):
            if pid in self.row:
                raise ValueError(f"duplicate product id {pid!r}")
            self.row[pid] = n
        self.id_array = np.asarray(self.ids, dtype=object)
        self.by_id: Mapping[str, Product] = _ById(self)
        self._interactions_file: Path | None = None
        self.interactions = interactions

    def field(self, name: str) -> list:
        """One product field of every item, in catalog order, as `Product` holds it: a stored catalog
        decodes just that column (a pass over 1M items without making 1M Products)."""
        if isinstance(self.products, ProductTable):
            values = self.products.column(name)
            if name in ("attributes", "category", "image_paths"):
                empty = "{}" if name == "attributes" else "[]"
                return [json.loads(v or empty) for v in values]
            return values
        return [getattr(p, name) for p in self.products]

    def groups(self) -> list[str]:
        """Each item's product group (`group_id`, or its own id when it has none), in catalog order:
        what group splits and "another colour of the same product" go by."""
        return [str(g) if g else pid for g, pid in zip(self.field("group_id"), self.ids)]

    @property
    def interactions(self) -> Interactions:
        """The interactions as columns; a loaded catalog reads its file on first use (a catalog
        opened only to look products up never pays for 31M purchases)."""
        if self._interactions is None:
            path, self._interactions_file = self._interactions_file, None
            self._interactions = Interactions.read(path, self.id_array, self.row) if path else Interactions.empty(self.id_array)
        return self._interactions

    @interactions.setter
    def interactions(self, value: Interactions | pd.DataFrame | Iterable[tuple]) -> None:
        if isinstance(value, Interactions):
            value = value if value.item_ids is self.id_array else value.recode(self.id_array, self.row)
        elif isinstance(value, pd.DataFrame):
            value = Interactions.from_frame(value, self.id_array, self.row)
        else:
            value = Interactions.from_records(value, self.id_array)
        self._interactions: Interactions | None = value

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item_id: str) -> Product:
        return self.products[self.row[item_id]]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.row

    def image_file(self, p: Product) -> Path | None:
        """The item's first image as an absolute path (relative paths are under the catalog dir)."""
        if not p.image_path:
            return None
        return Path(resolve_image_path(p.image_path, self.root))

    def interactions_frame(self) -> pd.DataFrame:
        """(user, item, timestamp, weight) with string ids, in stored order."""
        return self.interactions.frame()

    # ----- storage
    def save(self, directory: str | Path, interactions: bool = True) -> Path:
        """Write products and interactions as Parquet (each file atomically: `retrieval.artifacts`);
        `interactions=False`: products only (a streaming importer wrote the interactions)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        rows = []
        for p in self.products:
            d = asdict(p)
            d["attributes"] = json.dumps(p.attributes, ensure_ascii=False, sort_keys=True)
            d["category"] = json.dumps(p.category, ensure_ascii=False)
            images = [stored_image_path(resolve_image_path(i, self.root), directory) for i in p.image_paths]
            d["image_paths"] = json.dumps(images, ensure_ascii=False)
            rows.append(d)
        frame = pd.DataFrame(rows, columns=[f for f in Product.__dataclass_fields__])
        _atomic_parquet(frame, directory / PRODUCTS_FILE)
        if interactions:
            self.interactions.write(directory / INTERACTIONS_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Catalog":
        directory = Path(directory)
        path = directory / PRODUCTS_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"no catalog at {directory} (missing {PRODUCTS_FILE}); run `whyrec data import` first"
            )
        products = ProductTable(pq.read_table(path), directory)
        catalog = cls(products, (), root=directory)
        ipath = directory / INTERACTIONS_FILE
        if ipath.exists():
            catalog._interactions, catalog._interactions_file = None, ipath
        return catalog


def stored_image_path(path: str, catalog_dir: str | Path) -> str:
    """How an image path is stored: relative to the catalog folder (so a catalog moved, or mounted
    into a container, together with its images keeps finding them)."""
    if not os.path.isabs(path):
        return path
    try:
        return os.path.relpath(os.path.realpath(path), os.path.realpath(catalog_dir))
    except ValueError:  # another drive (Windows): only an absolute path can say where
        return path


def resolve_image_path(path: str, catalog_dir: str | Path) -> str:
    """A stored image path as an absolute one (old catalogs stored absolute paths: kept as they are)."""
    if os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(os.path.realpath(catalog_dir), path))


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
