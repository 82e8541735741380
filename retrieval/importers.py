"""Importers: public catalog formats -> whyrec's `Catalog` (Parquet), with a report of bad rows.

Bad rows never crash an import and never take good rows with them: each problem is counted under
a reason with a few examples, the offending row is skipped (no id, duplicate id, broken JSON) or
kept and repaired (no or unreadable image -> text-only item; non-UTF-8 bytes -> replaced).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd
from PIL import Image
from tqdm import tqdm

from retrieval.catalog import REPORT_FILE, Catalog, Interaction, Product

log = logging.getLogger(__name__)

MAX_EXAMPLES = 5


@dataclass
class ImportReport:
    """What an import read, kept and rejected (with examples), so nothing is lost silently."""

    format: str
    source: str
    rows_read: int = 0
    products: int = 0
    text_only: int = 0
    interactions: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        self.problems[reason] = self.problems.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(example[:200])

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        lines = [
            f"imported {self.products} products ({self.text_only} text-only) and "
            f"{self.interactions} interactions from {self.rows_read} rows of {self.format} at {self.source}"
        ]
        for reason, n in sorted(self.problems.items()):
            lines.append(f"  {reason}: {n}  e.g. {'; '.join(self.examples.get(reason, [])[:3])}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- shared helpers
def read_text_lossless(path: Path, report: ImportReport) -> str:
    """Read a text file as UTF-8; undecodable bytes become U+FFFD and are reported, never fatal."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        text = raw.decode("utf-8-sig", errors="replace")
        report.add("non_utf8", f"{path.name}: {err.reason} at byte {err.start}")
        return text


def iter_jsonl(path: Path, report: ImportReport) -> Iterator[dict]:
    """Yield the JSON objects of a .jsonl file; broken lines are counted, not fatal."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            report.rows_read += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("utf-8", errors="replace")
                report.add("non_utf8", f"{path.name}:{lineno}")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                report.add("broken_json", f"{path.name}:{lineno}: {err.msg}")
                continue
            if not isinstance(obj, dict):
                report.add("broken_json", f"{path.name}:{lineno}: not an object")
                continue
            yield obj


def clean(value) -> str:
    """A cell as a stripped string; NaN/None -> ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def check_image(path: Path, verify: bool) -> str | None:
    """None when the image is usable, else the reason ('image_missing' / 'image_unreadable')."""
    if not path.is_file():
        return "image_missing"
    if verify:
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception:  # PIL raises many types for broken files
            return "image_unreadable"
    return None


class ProductCollector:
    """Accumulates products: rejects missing/duplicate ids, demotes bad images to text-only."""

    def __init__(self, report: ImportReport, verify_images: bool = True):
        self.report = report
        self.verify_images = verify_images
        self.products: dict[str, Product] = {}

    def add(self, p: Product, row_ref: str) -> None:
        if not p.id:
            self.report.add("missing_id", row_ref)
            return
        if p.id in self.products:
            self.report.add("duplicate_id", f"{row_ref}: id {p.id} (first kept)")
            return
        if not p.title:
            p.title = p.attributes.get("product_type") or p.id
        good = []
        for img in p.image_paths:
            problem = check_image(Path(img), self.verify_images)
            if problem:
                self.report.add(problem, f"{p.id}: {img}")
            else:
                good.append(img)
        p.image_paths = good
        if not good:
            self.report.text_only += 1
        if any("\ufffd" in s for s in (p.title, p.description)):
            self.report.add("non_utf8", f"{p.id}: replaced undecodable bytes")
        self.products[p.id] = p


def finish(collector: ProductCollector, interactions: Iterable[Interaction], out: str | Path) -> tuple[Catalog, ImportReport]:
    """Drop interactions on unknown items (counted), save catalog and report to `out`."""
    report = collector.report
    kept = []
    for it in interactions:
        if it.item not in collector.products:
            report.add("interaction_unknown_item", f"user {it.user[:12]} item {it.item}")
            continue
        kept.append(it)
    catalog = Catalog(collector.products.values(), kept, root=out)
    report.products = len(catalog)
    report.interactions = len(kept)
    catalog.save(out)
    (Path(out) / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    log.info(report.summary())
    return catalog, report


# ----------------------------------------------------------------------------- H&M (Kaggle layout)
HM_ATTRIBUTES = {
    "product_type": "product_type_name",
    "product_group": "product_group_name",
    "pattern": "graphical_appearance_name",
    "colour": "colour_group_name",
    "colour_value": "perceived_colour_value_name",
    "colour_master": "perceived_colour_master_name",
    "department": "department_name",
    "index": "index_name",
    "index_group": "index_group_name",
    "section": "section_name",
    "garment_group": "garment_group_name",
}


def hm_image_path(root: Path, article_id: str) -> Path:
    return root / "images" / article_id[:3] / f"{article_id}.jpg"


def import_hm(source: str | Path, out: str | Path, verify_images: bool = True) -> tuple[Catalog, ImportReport]:
    """H&M Kaggle layout: articles.csv, images/NNN/<id>.jpg, optional transactions.csv."""
    source = Path(source)
    report = ImportReport("hm", str(source))
    articles = source / "articles.csv"
    if not articles.exists():
        raise FileNotFoundError(f"{articles} not found: is {source} an H&M (Kaggle layout) folder?")
    frame = pd.read_csv(io.StringIO(read_text_lossless(articles, report)), dtype=str, keep_default_na=False)
    missing = {"article_id", "prod_name"} - set(frame.columns)
    if missing:
        raise ValueError(f"{articles} lacks columns {sorted(missing)}")

    prices: dict[str, float] = {}
    tx = None
    tpath = source / "transactions.csv"
    if tpath.exists():
        tx = pd.read_csv(io.StringIO(read_text_lossless(tpath, report)), dtype={"article_id": str, "customer_id": str})
        tx["article_id"] = tx["article_id"].str.zfill(10)
        prices = tx.groupby("article_id")["price"].median().to_dict()

    collector = ProductCollector(report, verify_images)
    for n, row in enumerate(tqdm(frame.to_dict("records"), desc="hm articles", unit="item", mininterval=2), 2):
        report.rows_read += 1
        aid = clean(row.get("article_id"))
        aid = aid.zfill(10) if aid.isdigit() else aid
        attrs = {k: clean(row.get(col)) for k, col in HM_ATTRIBUTES.items() if clean(row.get(col))}
        category = [clean(row.get(c)) for c in ("index_group_name", "product_group_name", "product_type_name")]
        p = Product(
            id=aid,
            title=clean(row.get("prod_name")),
            description=clean(row.get("detail_desc")),
            attributes=attrs,
            category=[c for c in category if c],
            colour=attrs.get("colour", ""),
            price=prices.get(aid),
            image_paths=[str(hm_image_path(source.resolve(), aid))] if aid else [],
            group_id=clean(row.get("product_code")),
        )
        collector.add(p, f"articles.csv line {n}")

    interactions: list[Interaction] = []
    if tx is not None:
        dates = pd.to_datetime(tx["t_dat"], errors="coerce")
        for user, item, ts in zip(tx["customer_id"], tx["article_id"], dates):
            if pd.isna(ts) or not isinstance(user, str):
                report.add("bad_interaction", f"user {user} item {item}")
                continue
            interactions.append(Interaction(user, item, ts, 1.0))
    return finish(collector, interactions, out)


# ----------------------------------------------------------------------------- plain JSONL / CSV
PLAIN_FIELDS = ("id", "title", "description", "attributes", "category", "colour", "price", "image", "images", "group_id")


def _plain_product(obj: dict, base: Path) -> Product:
    images = obj.get("images") or ([obj["image"]] if obj.get("image") else [])
    if isinstance(images, str):
        images = [s for s in images.split("|") if s]
    category = obj.get("category") or []
    if isinstance(category, str):
        category = [c.strip() for c in category.split(">") if c.strip()]
    attributes = obj.get("attributes") or {}
    if isinstance(attributes, str):
        attributes = json.loads(attributes) if attributes.strip().startswith("{") else {}
    extra = {k: clean(v) for k, v in obj.items() if k not in PLAIN_FIELDS and clean(v) and not isinstance(v, (dict, list))}
    attributes = {**extra, **{str(k): clean(v) for k, v in attributes.items() if clean(v)}}
    price = obj.get("price")
    try:
        price = float(price) if clean(price) else None
    except ValueError:
        price = None
    colour = clean(obj.get("colour") or obj.get("color") or attributes.get("colour"))
    if colour:
        attributes.setdefault("colour", colour)
    return Product(
        id=clean(obj.get("id")),
        title=clean(obj.get("title")),
        description=clean(obj.get("description")),
        attributes=attributes,
        category=[clean(c) for c in category if clean(c)],
        colour=colour,
        price=price,
        image_paths=[str((base / i).resolve()) if not Path(i).is_absolute() else i for i in images],
        group_id=clean(obj.get("group_id")),
    )


def import_plain(source: str | Path, out: str | Path, verify_images: bool = True) -> tuple[Catalog, ImportReport]:
    """Plain schema: a .jsonl or .csv of products (id, title, description, attributes, category,
    colour, price, image|images, group_id), or a folder holding products.{jsonl,csv} and
    optionally interactions.{jsonl,csv} (user, item, timestamp, weight). Image paths are relative
    to the file's folder."""
    source = Path(source)
    files = [source] if source.is_file() else [source / f"products.{ext}" for ext in ("jsonl", "csv")]
    pfile = next((f for f in files if f.exists()), None)
    if pfile is None:
        raise FileNotFoundError(f"no products.jsonl or products.csv at {source}")
    base = pfile.parent
    report = ImportReport("jsonl", str(source))
    collector = ProductCollector(report, verify_images)
    for n, obj in enumerate(tqdm(_rows(pfile, report), desc="products", unit="item", mininterval=2), 1):
        if pfile.suffix == ".csv":
            report.rows_read += 1
        try:
            p = _plain_product(obj, base)
        except (ValueError, TypeError, AttributeError) as err:
            report.add("bad_row", f"{pfile.name} row {n}: {err}")
            continue
        collector.add(p, f"{pfile.name} row {n}")

    interactions: list[Interaction] = []
    ifile = next((base / f"interactions.{e}" for e in ("jsonl", "csv") if (base / f"interactions.{e}").exists()), None)
    if ifile is not None and not source.is_file():
        for obj in _rows(ifile, report):
            ts = pd.to_datetime(obj.get("timestamp"), errors="coerce", utc=False)
            user, item = clean(obj.get("user")), clean(obj.get("item"))
            if not user or not item or pd.isna(ts):
                report.add("bad_interaction", json.dumps(obj, default=str)[:120])
                continue
            w = obj.get("weight")
            interactions.append(Interaction(user, item, ts, float(w) if clean(w) else 1.0))
    return finish(collector, interactions, out)


def _rows(path: Path, report: ImportReport) -> Iterator[dict]:
    if path.suffix == ".jsonl":
        yield from iter_jsonl(path, report)
    else:
        yield from csv.DictReader(io.StringIO(read_text_lossless(path, report)))


# ----------------------------------------------------------------------------- registry
IMPORTERS: dict[str, Callable[..., tuple[Catalog, ImportReport]]] = {
    "hm": import_hm,
    "jsonl": import_plain,
}


def import_catalog(fmt: str, source: str | Path, out: str | Path, verify_images: bool = True) -> tuple[Catalog, ImportReport]:
    """Import `source` in format `fmt` (see IMPORTERS) into a catalog folder `out`."""
    if fmt not in IMPORTERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(IMPORTERS)}")
    if not Path(source).exists():
        raise FileNotFoundError(f"{source} does not exist")
    return IMPORTERS[fmt](source, out, verify_images=verify_images)
