"""The catalog: one product schema, one interaction schema, stored as Parquet.

Every importer (see `retrieval.importers`) turns a public format into these two tables, and every
other part of whyrec reads only these. The text an encoder sees is built here, in `product_text`.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from retrieval.artifacts import atomic_path

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


@dataclass
class Interaction:
    """A shopper's event on an item (a purchase, a review, a click) with its weight."""

    user: str
    item: str
    timestamp: pd.Timestamp
    weight: float = 1.0


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


class Catalog:
    """Products (by id, in a stable order) and the interactions on them."""

    def __init__(self, products: Iterable[Product], interactions: Iterable[Interaction] = (), root: str | Path = "."):
        self.products: list[Product] = list(products)
        self.root = Path(root)
        self.by_id: dict[str, Product] = {}
        for p in self.products:
            if p.id in self.by_id:
                raise ValueError(f"duplicate product id {p.id!r}")
            self.by_id[p.id] = p
        self.interactions: list[Interaction] = list(interactions)
        self.ids: list[str] = [p.id for p in self.products]

    def __len__(self) -> int:
        return len(self.products)

    def __getitem__(self, item_id: str) -> Product:
        return self.by_id[item_id]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.by_id

    def image_file(self, p: Product) -> Path | None:
        """The item's first image as an absolute path (relative paths are under the catalog dir)."""
        if not p.image_path:
            return None
        return Path(resolve_image_path(p.image_path, self.root))

    def interactions_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "user": [i.user for i in self.interactions],
                "item": [i.item for i in self.interactions],
                "timestamp": pd.to_datetime([i.timestamp for i in self.interactions]),
                "weight": [float(i.weight) for i in self.interactions],
            }
        )

    # ----- storage -----
    def save(self, directory: str | Path) -> Path:
        """Write products and interactions as Parquet (each file atomically: `retrieval.artifacts`)."""
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
        _atomic_parquet(self.interactions_frame(), directory / INTERACTIONS_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Catalog":
        directory = Path(directory)
        path = directory / PRODUCTS_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"no catalog at {directory} (missing {PRODUCTS_FILE}); run `whyrec data import` first"
            )
        frame = pd.read_parquet(path)
        products = [
            Product(
                id=str(r.id),
                title=str(r.title),
                description=str(r.description or ""),
                attributes=json.loads(r.attributes),
                category=json.loads(r.category),
                colour=str(r.colour or ""),
                price=None if pd.isna(r.price) else float(r.price),
                image_paths=[resolve_image_path(i, directory) for i in json.loads(r.image_paths)],
                group_id=str(r.group_id or ""),
            )
            for r in frame.itertuples(index=False)
        ]
        interactions: list[Interaction] = []
        ipath = directory / INTERACTIONS_FILE
        if ipath.exists():
            f = pd.read_parquet(ipath)
            interactions = [
                Interaction(str(u), str(i), t, float(w))
                for u, i, t, w in zip(f["user"], f["item"], f["timestamp"], f["weight"])
            ]
        return cls(products, interactions, root=directory)


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
