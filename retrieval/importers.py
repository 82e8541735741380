"""Importers: public catalog formats -> whyrec's `Catalog` (Parquet), with a report of bad rows.

Formats (see IMPORTERS): the H&M Kaggle layout, Amazon Reviews 2023 (meta_*.jsonl + reviews),
Amazon Berkeley Objects listings, and a plain JSONL/CSV schema.

Bad rows never crash an import and never take good rows with them. Every problem is counted under
a reason with a few examples. A row is left out only when it cannot be a product (broken JSON or
CSV, no id, an id already taken: the first one wins); everything else is kept and repaired:
no or unreadable image -> text-only item, non-UTF-8 bytes -> read as Windows-1252/Latin-1,
unparseable price or attributes -> left empty. `ImportReport.SKIPPING` names the reasons that
leave a row out; for products, rows_read == products + the count of those reasons.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import inspect
import json
import logging
import math
import os
import re
import zlib
from collections import deque
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from PIL import Image
from tqdm import tqdm

from retrieval.artifacts import atomic_write_json
from retrieval.artifacts import atomic_path
from retrieval.catalog import INTERACTIONS_FILE, REPORT_FILE, Catalog, Product
from retrieval.interactions import InteractionWriter
from retrieval.vocabulary import canonical

log = logging.getLogger(__name__)

MAX_EXAMPLES = 5
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass
class ImportReport:
    """What an import read, kept and rejected (with examples), so nothing is lost silently."""

    format: str
    source: str
    rows_read: int = 0  # product rows (JSON lines, CSV records), good and bad
    products: int = 0
    text_only: int = 0
    interaction_rows_read: int = 0
    interactions: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # reasons that leave a product row out of the catalog (all others keep it, repaired)
    SKIPPING = ("broken_json", "bad_csv_row", "missing_id", "duplicate_id", "bad_row")
    # reasons that leave an interaction row out
    INTERACTION_SKIPPING = ("interaction_broken_json", "interaction_bad_csv_row", "bad_interaction", "interaction_unknown_item")

    def add(self, reason: str, example: str) -> None:
        self.problems[reason] = self.problems.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(example[:200])

    def add_many(self, reason: str, n: int, examples: Iterable[str]) -> None:
        """Count `n` rows under `reason` at once (a streamed batch), keeping the first examples."""
        if n <= 0:
            return
        self.problems[reason] = self.problems.get(reason, 0) + int(n)
        ex = self.examples.setdefault(reason, [])
        for e in examples:
            if len(ex) >= MAX_EXAMPLES:
                break
            ex.append(str(e)[:200])

    def count(self, reason: str) -> int:
        return self.problems.get(reason, 0)

    @property
    def rows_skipped(self) -> int:
        return sum(self.count(r) for r in self.SKIPPING)

    @property
    def interaction_rows_skipped(self) -> int:
        return sum(self.count(r) for r in self.INTERACTION_SKIPPING)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items()}
        d["rows_skipped"] = self.rows_skipped
        d["interaction_rows_skipped"] = self.interaction_rows_skipped
        return d

    def summary(self) -> str:
        lines = [
            f"imported {self.products} products ({self.text_only} text-only) from {self.rows_read} rows and "
            f"{self.interactions} interactions from {self.interaction_rows_read} rows; {self.format} at {self.source}"
        ]
        if self.problems:
            lines.append("problems (count, what happened to the row, examples):")
        for reason, n in sorted(self.problems.items()):
            fate = "skipped" if reason in self.SKIPPING + self.INTERACTION_SKIPPING else "kept"
            lines.append(f"  {reason}: {n} ({fate})  e.g. {'; '.join(self.examples.get(reason, [])[:3])}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading text safely
_PREFIX = {"products": "", "interactions": "interaction_", "images": "image_table_"}


def _legacy_bytes(err: UnicodeDecodeError) -> tuple[str, int]:
    """Codec error handler: bytes that are not UTF-8 are read as Windows-1252 (else Latin-1)."""
    out = []
    for b in err.object[err.start : err.end]:
        try:
            out.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:
            out.append(chr(b))  # Latin-1
    return "".join(out), err.end


codecs.register_error("whyrec-legacy", _legacy_bytes)


def decode_line(raw: bytes, ref: str, report: ImportReport, prefix: str = "") -> str:
    """A line as UTF-8; stray non-UTF-8 bytes (a Latin-1 'é') are counted as non_utf8 and read as
    Windows-1252/Latin-1, so the row is kept and no character is lost."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        report.add(prefix + "non_utf8", f"{ref}: byte {raw[err.start]:#04x} at {err.start} is not UTF-8, read as Windows-1252")
        return raw.decode("utf-8", errors="whyrec-legacy")


def read_lines(path: Path, report: ImportReport, kind: str = "products") -> Iterator[tuple[int, str]]:
    """(line number, text) of a plain or gzipped text file. A corrupt or truncated .gz file is
    reported as broken_file and ends the file; the lines before it are kept."""
    prefix = _PREFIX[kind]
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                text = decode_line(raw, f"{path.name}:{lineno}", report, prefix)
                yield lineno, (text.lstrip("\ufeff") if lineno == 1 else text)
    except (OSError, EOFError, zlib.error) as err:
        report.add(prefix + "broken_file", f"{path.name}: {err} (the rows before it are kept)")


def _count_row(report: ImportReport, kind: str) -> None:
    if kind == "products":
        report.rows_read += 1
    elif kind == "interactions":
        report.interaction_rows_read += 1


def iter_jsonl(path: Path, report: ImportReport, kind: str = "products") -> Iterator[tuple[str, dict]]:
    """(row reference, object) for each JSON object line; broken lines are counted, not fatal."""
    prefix = _PREFIX[kind]
    for lineno, line in read_lines(path, report, kind):
        if not line.strip():
            continue
        _count_row(report, kind)
        ref = f"{path.name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            report.add(prefix + "broken_json", f"{ref}: {err.msg} (column {err.colno})")
            continue
        if not isinstance(obj, dict):
            report.add(prefix + "broken_json", f"{ref}: not a JSON object")
            continue
        yield ref, obj


class _LineFeeder:
    """Hands lines to csv.reader and remembers which it took, so a bad record's later lines can
    be handed out again (an unclosed quote must not swallow the good rows after it)."""

    def __init__(self, lines: Iterator[tuple[int, str]]):
        self.lines = lines
        self.pushed: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        item = self.pushed.popleft() if self.pushed else next(self.lines)
        self.taken.append(item)
        return item[1]

    def take(self) -> list[tuple[int, str]]:
        taken, self.taken = self.taken, []
        return taken

    def push_back(self, items: list[tuple[int, str]]) -> None:
        self.pushed.extendleft(reversed(items))


def iter_csv(path: Path, report: ImportReport, kind: str = "products", required: Iterable[str] = ()) -> Iterator[tuple[str, dict]]:
    """(row reference, {column: value}) for each CSV record. A record whose field count does not
    match the header (or that the csv module rejects) is counted as bad_csv_row; when it spans
    several lines, those lines are parsed again as records of their own."""
    prefix = _PREFIX[kind]
    feeder = _LineFeeder(read_lines(path, report, kind))
    reader = csv.reader(feeder, strict=True)  # strict: an unclosed quote is an error, not a swallowed file
    header: list[str] | None = None
    while True:
        error = None
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            row, error = None, str(err)
        taken = feeder.take()
        if row is not None and not any(c.strip() for c in row):
            continue  # blank line
        if header is None:
            if row is None:
                raise ValueError(f"{path}: cannot read the CSV header: {error}")
            header = [h.strip() for h in row]
            missing = [c for c in required if c not in header]
            if missing:
                raise ValueError(f"{path} lacks columns {missing} (header: {header[:12]})")
            continue
        _count_row(report, kind)
        first = taken[0][0] if taken else "?"
        ref = f"{path.name} line {first}"
        if row is not None and len(row) > len(header) and not any(c.strip() for c in row[len(header):]):
            row = row[: len(header)]  # trailing empty cells
        if error is None and header is not None and len(row) == len(header):
            yield ref, dict(zip(header, row))
            continue
        why = error or f"{len(row)} fields where the header has {len(header)}"
        report.add(prefix + "bad_csv_row", f"{ref}: {why}")
        if len(taken) > 1:
            feeder.push_back(taken[1:])


def iter_rows(path: Path, report: ImportReport, kind: str = "products") -> Iterator[tuple[str, dict]]:
    """Rows of a .jsonl/.json/.ndjson (optionally .gz) or a .csv file."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        yield from iter_csv(path, report, kind)
    else:
        yield from iter_jsonl(path, report, kind)


# ----------------------------------------------------------------------------- values
def clean(value) -> str:
    """A cell as a stripped string; NaN/None -> ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def text_list(value) -> list[str]:
    """A JSON value that should be a list of strings (or one string) as clean strings."""
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value if clean(v) and not isinstance(v, (dict, list))]
    return [clean(value)] if clean(value) and not isinstance(value, dict) else []


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_price(value, ref: str, report: ImportReport) -> float | None:
    """A price from a number or text ('$12.99', '12.99 - 15.99' -> the first number); None when
    absent; reported as bad_price when present but not a price."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if math.isnan(value):
            return None
        price = float(value)
    else:
        text = clean(value)
        if not text or text.lower() in {"none", "null", "nan", "n/a", "-", "—"}:
            return None
        m = _NUMBER.search(text)
        if not m:
            report.add("bad_price", f"{ref}: {text!r}")
            return None
        price = float(m.group().replace(",", ""))
    if price < 0 or math.isinf(price):  # a price filter must never meet a negative or infinite price
        report.add("bad_price", f"{ref}: {value!r}")
        return None
    return price


def parse_timestamp(value) -> pd.Timestamp | None:
    """A timestamp from ISO text or a Unix time (seconds, or milliseconds as in Amazon Reviews)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*\d{9,}(\.\d+)?\s*", value):
        value = float(value)
    if isinstance(value, (int, float)):
        if math.isnan(value):
            return None
        return pd.Timestamp(value, unit="ms" if abs(value) >= 1e11 else "s")
    return _parse_text_time(clean(value)) if clean(value) else None


@lru_cache(maxsize=100_000)
def _parse_text_time(text: str) -> pd.Timestamp | None:
    """Cached: purchase logs repeat a few hundred dates millions of times."""
    ts = pd.to_datetime(text, errors="coerce")
    return None if pd.isna(ts) else ts


def parse_weight(value, default: float = 1.0) -> float | None:
    """A numeric weight; the default when absent; None when present but not a number."""
    if value is None or clean(value) == "":
        return default
    try:
        w = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(w) else w


def snake(key: str) -> str:
    """'Fabric Type' -> 'fabric_type' (attribute keys)."""
    return re.sub(r"[^0-9a-z]+", "_", key.strip().lower()).strip("_")


def flat_value(value) -> str:
    """Any JSON value as one attribute string (lists joined with ', ', dicts as 'k: v; ...')."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {flat_value(v)}" for k, v in value.items() if flat_value(v))
    if isinstance(value, (list, tuple)):
        return ", ".join(flat_value(v) for v in value if flat_value(v))
    return clean(value)


# ----------------------------------------------------------------------------- images and products
def check_image(path: Path, verify: bool) -> str | None:
    """None when the image is usable, else the reason ('image_missing' / 'image_unreadable').
    Verifying decodes the file (at 1/8 scale for JPEG, as fast as PIL's verify()), which is what
    catches truncated JPEGs: Image.verify() lets them through and training would crash later."""
    if not path.is_file():
        return "image_missing"
    if verify:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
        except Exception:  # PIL raises many types for broken files
            return "image_unreadable"
    return None


class ProductCollector:
    """Accumulates products: rejects missing/duplicate ids, demotes bad images to text-only."""

    def __init__(self, report: ImportReport, verify_images: bool = True):
        self.report = report
        self.verify_images = verify_images
        self.products: dict[str, Product] = {}

    def add(self, p: Product, row_ref: str) -> bool:
        """Keep `p` unless it has no id or a taken id; returns whether it was kept."""
        if not p.id:
            self.report.add("missing_id", row_ref)
            return False
        if p.id in self.products:
            self.report.add("duplicate_id", f"{row_ref}: id {p.id} (the first one is kept)")
            return False
        if not p.title:
            p.title = p.attributes.get("product_type") or p.id
            self.report.add("missing_title", f"{row_ref}: id {p.id}, titled {p.title!r}")
        good = []
        for img in p.image_paths:
            problem = check_image(Path(img), self.verify_images)
            if problem:
                self.report.add(problem, f"{p.id}: {img}")
            elif img not in good:
                good.append(img)
        p.image_paths = good
        if not good:
            self.report.text_only += 1
        self.products[p.id] = p
        return True


Record = tuple  # (user, item, timestamp, weight): one interaction of a small-format import


def finish(collector: ProductCollector, interactions: Iterable[Record], out: str | Path,
           streamed: int | None = None) -> tuple[Catalog, ImportReport]:
    """Drop interactions on unknown items (counted), save catalog and report to `out`.
    `streamed`: the interactions were already written to `out` by a streaming writer (their count);
    the returned catalog then reads them only when asked for."""
    report = collector.report
    out = Path(out)
    kept = []
    for it in interactions:
        if it[1] not in collector.products:
            report.add("interaction_unknown_item", f"user {it[0][:12]} item {it[1]}")
            continue
        kept.append(it)
    if streamed is not None:
        Catalog(collector.products.values(), root=out).save(out, interactions=False)
        catalog = Catalog.load(out)
        report.interactions = streamed
    else:
        catalog = Catalog(collector.products.values(), kept, root=out)
        catalog.save(out)
        report.interactions = len(catalog.interactions)
    report.products = len(catalog)
    atomic_write_json(out / REPORT_FILE, report.to_dict(), indent=2)
    log.info(report.summary().splitlines()[0])
    return catalog, report


def _need_dir(path: str | Path | None, what: str) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} is not a folder")
    return path


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
    """Kaggle layout: <root>/NNN/<article_id>.jpg under the images folder."""
    return root / article_id[:3] / f"{article_id}.jpg"


def import_hm(source: str | Path, out: str | Path, verify_images: bool = True,
              local_image_dir: str | Path | None = None) -> tuple[Catalog, ImportReport]:
    """H&M Kaggle layout: articles.csv, images/NNN/<id>.jpg (or `local_image_dir`/NNN/<id>.jpg),
    optional transactions.csv (purchases; an item's price is its median paid price)."""
    source = Path(source)
    articles = source / "articles.csv"
    if not articles.exists():
        raise FileNotFoundError(f"{articles} not found: is {source} an H&M (Kaggle layout) folder?")
    image_root = (_need_dir(local_image_dir, "--local-image-dir") or source / "images").resolve()
    report = ImportReport("hm", str(source))

    collector = ProductCollector(report, verify_images)
    for ref, row in tqdm(iter_csv(articles, report, required=("article_id", "prod_name")),
                         desc="hm articles", unit="item", mininterval=2):
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
            price=None,  # the median paid price, from the transactions below
            image_paths=[str(hm_image_path(image_root, aid))] if aid else [],
            group_id=clean(row.get("product_code")),
        )
        collector.add(p, ref)

    tpath = source / "transactions.csv"
    if not tpath.exists():
        report.notes.append("no transactions.csv: no interactions and no prices")
        return finish(collector, [], out)
    ids = list(collector.products)
    with atomic_path(Path(out) / INTERACTIONS_FILE) as tmp, InteractionWriter(tmp) as writer:
        prices = stream_hm_transactions(tpath, ids, report, writer)
    for aid, price in zip(ids, prices):
        collector.products[aid].price = None if math.isnan(price) else float(price)
    return finish(collector, [], out, streamed=writer.rows)


HM_TRANSACTION_COLUMNS = ("t_dat", "customer_id", "article_id", "price")


def stream_hm_transactions(path: Path, item_ids: list[str], report: ImportReport, writer: InteractionWriter,
                           block_size: int = 16 << 20) -> np.ndarray:
    """Stream a Kaggle transactions_train.csv into `writer` one block at a time (pyarrow's
    incremental CSV reader: C++ parsing, memory bounded by the block size, not the file), dropping
    rows on unknown articles (counted) and undated rows. Returns each item's median paid price
    (NaN: none), from per-item counts of distinct prices (bounded by how many prices an item has)."""
    index = pd.Index(item_ids)
    bad_rows: list[str] = []

    def invalid(row) -> str:
        report.interaction_rows_read += 1
        bad_rows.append(f"{path.name}:{row.number}: {row.text[:120]!r}" if row.number is not None else repr(row.text[:120]))
        return "skip"

    try:
        reader = pacsv.open_csv(
            path, read_options=pacsv.ReadOptions(block_size=block_size),
            parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in HM_TRANSACTION_COLUMNS + ("sales_channel_id",)},
                                                 strings_can_be_null=False))
    except pa.ArrowInvalid as err:
        raise ValueError(f"{path}: not a readable CSV ({err})") from err
    missing = [c for c in ("t_dat", "customer_id", "article_id") if c not in reader.schema.names]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (Kaggle transactions_train.csv layout expected)")
    counts: pd.Series | None = None  # (item row, price) -> units
    bar = tqdm(desc="hm transactions", unit="row", unit_scale=True, mininterval=2)
    for batch in reader:
        n = batch.num_rows
        report.interaction_rows_read += n
        bar.update(n)
        user = pc.utf8_trim_whitespace(batch.column("customer_id"))
        art = pc.utf8_trim_whitespace(batch.column("article_id"))
        art = pc.if_else(pc.utf8_is_digit(art), pc.utf8_lpad(art, width=10, padding="0"), art)
        day_text = pc.utf8_trim_whitespace(batch.column("t_dat"))
        ts = pc.strptime(day_text, format="%Y-%m-%d", unit="s", error_is_null=True).cast(pa.timestamp("ns")).to_numpy(zero_copy_only=False)
        ts = np.asarray(ts, "datetime64[ns]")
        odd = np.flatnonzero(np.isnat(ts))
        day_strings = day_text.to_numpy(zero_copy_only=False)
        for j in odd:  # another date format (rare): the general reader
            t = parse_timestamp(day_strings[j])
            if t is not None:
                ts[j] = np.datetime64(t.to_datetime64(), "ns")
        users = np.asarray(user.to_numpy(zero_copy_only=False), object)
        items = np.asarray(art.to_numpy(zero_copy_only=False), object)
        bad = (users == "") | (items == "") | np.isnat(ts)
        if bad.any():
            report.add_many("bad_interaction", int(bad.sum()), (f"{path.name}: user {users[j][:12]!r} item {items[j]!r} date {day_strings[j]!r}"
                                                                for j in np.flatnonzero(bad)[:MAX_EXAMPLES]))
        rows = index.get_indexer(items)
        unknown = (rows < 0) & ~bad
        if unknown.any():
            report.add_many("interaction_unknown_item", int(unknown.sum()),
                            (f"user {users[j][:12]} item {items[j]}" for j in np.flatnonzero(unknown)[:MAX_EXAMPLES]))
        keep = ~(bad | unknown)
        if "price" in batch.schema.names:
            text = pc.utf8_trim_whitespace(batch.column("price")).to_numpy(zero_copy_only=False)
            price = pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(np.float64)
            unreadable = keep & np.isnan(price) & (np.asarray(text, object) != "")
            if unreadable.any():
                report.add_many("bad_price", int(unreadable.sum()), (f"{path.name}: {text[j]!r}" for j in np.flatnonzero(unreadable)[:MAX_EXAMPLES]))
            paid = keep & ~np.isnan(price)
            c = pd.DataFrame({"row": rows[paid], "price": price[paid]}).groupby(["row", "price"]).size()
            counts = c if counts is None else counts.add(c, fill_value=0)
        idx = np.flatnonzero(keep)
        writer.write_table(pa.table({"user": user.take(idx), "item": art.take(idx), "timestamp": pa.array(ts[idx], pa.timestamp("ns")),
                                     "weight": pa.array(np.ones(len(idx)), pa.float64())}))
        report.interactions = writer.rows
    bar.close()
    if bad_rows:
        report.add_many("interaction_bad_csv_row", len(bad_rows), bad_rows)
    return median_prices(counts, len(item_ids))


def median_prices(counts: pd.Series | None, n_items: int) -> np.ndarray:
    """Per item row, the median of its paid prices from (row, price) -> units counts (NaN: none);
    the mean of the two middle prices for an even count, as `statistics.median`."""
    out = np.full(n_items, np.nan)
    if counts is None or not len(counts):
        return out
    counts = counts.sort_index()
    rows = counts.index.get_level_values(0).to_numpy()
    price = counts.index.get_level_values(1).to_numpy(np.float64)
    units = counts.to_numpy(np.int64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    for s, e in zip(starts, ends):
        cum = np.cumsum(units[s:e])
        n = cum[-1]
        lo = price[s + np.searchsorted(cum, (n - 1) // 2, side="right")]
        hi = price[s + np.searchsorted(cum, n // 2, side="right")]
        out[rows[s]] = (lo + hi) / 2
    return out


# ----------------------------------------------------------------------------- plain JSONL / CSV
PLAIN_FIELDS = ("id", "title", "description", "attributes", "category", "colour", "color", "price", "image", "images", "group_id")


def _plain_product(obj: dict, base: Path, ref: str, report: ImportReport) -> Product:
    images = obj.get("images") or ([obj["image"]] if obj.get("image") else [])
    if isinstance(images, str):
        images = [s.strip() for s in images.split("|") if s.strip()]
    images = [clean(i) for i in images if isinstance(i, str) and clean(i)]
    category = obj.get("category") or []
    if isinstance(category, str):
        category = [c.strip() for c in category.split(">") if c.strip()]
    attributes = obj.get("attributes") or {}
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes)
        except json.JSONDecodeError:
            attributes = None
    if not isinstance(attributes, dict):
        report.add("bad_attributes", f"{ref}: attributes is not a JSON object, left empty")
        attributes = {}
    extra = {snake(k): clean(v) for k, v in obj.items() if k not in PLAIN_FIELDS and clean(v) and not isinstance(v, (dict, list))}
    attributes = {**extra, **{str(k): flat_value(v) for k, v in attributes.items() if flat_value(v)}}
    colour = clean(obj.get("colour") or obj.get("color") or attributes.get("colour"))
    if colour:
        attributes.setdefault("colour", colour)
    return Product(
        id=clean(obj.get("id")),
        title=clean(obj.get("title")),
        description=" ".join(text_list(obj.get("description"))),
        attributes=attributes,
        category=text_list(category),
        colour=colour,
        price=parse_price(obj.get("price"), ref, report),
        image_paths=[i if Path(i).is_absolute() else str((base / i).resolve()) for i in images],
        group_id=clean(obj.get("group_id")),
    )


def import_plain(source: str | Path, out: str | Path, verify_images: bool = True,
                 local_image_dir: str | Path | None = None) -> tuple[Catalog, ImportReport]:
    """Plain schema: a .jsonl or .csv of products (id, title, description, attributes, category,
    colour, price, image|images, group_id; other columns become attributes), or a folder holding
    products.{jsonl,csv} and optionally interactions.{jsonl,csv} (user, item, timestamp, weight).
    Relative image paths are under `local_image_dir`, else under the products file's folder."""
    source = Path(source)
    files = [source] if source.is_file() else [source / f"products.{ext}" for ext in ("jsonl", "csv")]
    pfile = next((f for f in files if f.exists()), None)
    if pfile is None:
        raise FileNotFoundError(f"no products.jsonl or products.csv at {source}")
    base = _need_dir(local_image_dir, "--local-image-dir") or pfile.parent
    report = ImportReport("jsonl", str(source))
    collector = ProductCollector(report, verify_images)
    for ref, obj in tqdm(iter_rows(pfile, report), desc="products", unit="item", mininterval=2):
        try:
            p = _plain_product(obj, base, ref, report)
        except (ValueError, TypeError, AttributeError) as err:  # a shape no field rule foresaw
            report.add("bad_row", f"{ref}: {err}")
            continue
        collector.add(p, ref)

    interactions: list[Record] = []
    folder = pfile.parent
    ifile = next((folder / f"interactions.{e}" for e in ("jsonl", "csv") if (folder / f"interactions.{e}").exists()), None)
    if ifile is not None and not source.is_file():
        for ref, obj in iter_rows(ifile, report, "interactions"):
            user, item, ts = clean(obj.get("user")), clean(obj.get("item")), parse_timestamp(obj.get("timestamp"))
            weight = parse_weight(obj.get("weight"))
            if not user or not item or ts is None or weight is None:
                report.add("bad_interaction", f"{ref}: {json.dumps(obj, default=str, ensure_ascii=False)[:120]}")
                continue
            interactions.append((user, item, ts, weight))
    return finish(collector, interactions, out)


# ----------------------------------------------------------------------------- Amazon Reviews 2023
# details keys (lower case) -> whyrec attribute keys the vocabulary reads; other details keep snake_case keys
AMAZON_DETAIL_KEYS = {
    "color": "colour", "colour": "colour", "color name": "colour",
    "material": "material", "fabric type": "material", "material type": "material", "material composition": "material",
    "outer material": "material", "shell material": "material",
    "pattern": "pattern", "pattern type": "pattern",
    "fit type": "fit", "fit": "fit",
    "department": "department",
    "brand": "brand", "brand name": "brand",
    "style": "style",
}


def _url_file_names(url: str) -> list[str]:
    """File names a downloaded Amazon image may have: the URL's own, and without the size code
    ('41qfjSfqNyL._AC_SR38,50_.jpg' -> '41qfjSfqNyL.jpg')."""
    name = unquote(Path(urlparse(url).path).name)
    if "." not in name:
        return [name] if name else []
    return list(dict.fromkeys([name, f"{name.split('.')[0]}.{name.rsplit('.', 1)[-1]}"]))


def amazon_local_images(item_id: str, images, image_dir: Path, names: set[str]) -> tuple[list[str], bool]:
    """(local paths found, whether the item lists any image). Looks for <item_id>.jpg (or .jpeg,
    .png, .webp), then for each listed image the file name of its hi_res, large or thumb URL.
    `names` is the set of file names in `image_dir` (listed once: a category has millions of items)."""
    found: list[str] = []
    own = next((f"{item_id}{s}" for s in IMAGE_SUFFIXES if f"{item_id}{s}" in names), None)
    if own:
        found.append(str(image_dir / own))
    entries = images if isinstance(images, list) else []
    listed = bool(entries)
    # the MAIN picture first, in the listed order otherwise
    entries = sorted(entries, key=lambda e: not (isinstance(e, dict) and e.get("variant") == "MAIN"))
    for entry in entries:
        urls = [entry.get(k) for k in ("hi_res", "large", "thumb")] if isinstance(entry, dict) else [entry]
        for url in urls:
            hit = next((n for n in _url_file_names(url) if n in names), None) if isinstance(url, str) else None
            if hit is not None:
                path = str(image_dir / hit)
                if path not in found:
                    found.append(path)
                break
    return found, listed


def _amazon_product(obj: dict, ref: str, report: ImportReport, image_dir: Path | None, names: set[str]) -> tuple[Product, bool]:
    """A meta record as a Product, and whether it lists images that whyrec could not find locally."""
    item_id = clean(obj.get("parent_asin") or obj.get("asin"))
    details = obj.get("details") if isinstance(obj.get("details"), dict) else {}
    attrs: dict[str, str] = {}
    for key, value in details.items():
        value = flat_value(value)
        if value:
            attrs.setdefault(AMAZON_DETAIL_KEYS.get(str(key).strip().lower(), snake(str(key))), value)
    categories = text_list(obj.get("categories"))
    main_category = clean(obj.get("main_category"))
    if main_category:
        attrs["main_category"] = main_category
    if clean(obj.get("store")):
        attrs["store"] = clean(obj.get("store"))
    if categories:
        attrs.setdefault("product_type", categories[-1])  # the leaf category names what the item is
    if "department" not in attrs:  # ["Clothing, Shoes & Jewelry", "Women", ...]: a level below the root
        dept = next((c for c in categories[1:3] if canonical("department", c)), "")
        if dept:
            attrs["department"] = dept
    for key in ("average_rating", "rating_number"):
        if clean(obj.get(key)):
            attrs[key] = clean(obj.get(key))
    description = " ".join(text_list(obj.get("description")) + text_list(obj.get("features")))
    images: list[str] = []
    missing = False
    if image_dir is not None:
        images, listed = amazon_local_images(item_id, obj.get("images"), image_dir, names)
        missing = listed and not images
    return Product(
        id=item_id,
        title=clean(obj.get("title")),
        description=description,
        attributes=attrs,
        category=categories or ([main_category] if main_category else []),
        colour=attrs.get("colour", ""),
        price=parse_price(obj.get("price"), ref, report),
        image_paths=images,
    ), missing


def import_amazon2023(source: str | Path, out: str | Path, verify_images: bool = True,
                      local_image_dir: str | Path | None = None,
                      reviews: str | Path | None = None) -> tuple[Catalog, ImportReport]:
    """Amazon Reviews 2023: meta_<Category>.jsonl(.gz) (a file, or a folder of them) and reviews
    (user_id, parent_asin, timestamp in ms, rating -> interaction weight) from `reviews` or the
    <Category>.jsonl(.gz) beside each meta file. Images are local files under `local_image_dir`
    (<parent_asin>.jpg or the file name of an image URL); without it, items are text-only:
    whyrec never downloads."""
    source = Path(source)
    if source.is_dir():
        metas = sorted(source.glob("meta_*.jsonl")) + sorted(source.glob("meta_*.jsonl.gz"))
        if not metas:
            raise FileNotFoundError(f"no meta_*.jsonl(.gz) in {source}")
    else:
        metas = [source]
    if reviews is not None:
        review_files = [Path(reviews)]
        if not review_files[0].is_file():
            raise FileNotFoundError(f"reviews file {reviews} not found")
    else:
        review_files = [m.with_name(m.name[len("meta_"):]) for m in metas if m.name.startswith("meta_")]
        review_files = [r for r in review_files if r.is_file()]
    image_dir = _need_dir(local_image_dir, "--local-image-dir")
    image_dir = image_dir.resolve() if image_dir else None
    names = {e.name for e in os.scandir(image_dir) if e.is_file()} if image_dir else set()
    report = ImportReport("amazon2023", str(source))
    collector = ProductCollector(report, verify_images)
    with_urls = 0
    for meta in metas:
        for ref, obj in tqdm(iter_jsonl(meta, report), desc=meta.name, unit="item", mininterval=2):
            p, missing = _amazon_product(obj, ref, report, image_dir, names)
            if collector.add(p, ref):
                with_urls += bool(obj.get("images"))
                if missing:
                    report.add("image_missing", f"{p.id}: no {p.id}.jpg nor an image URL's file name in {image_dir}")
    if image_dir is None and with_urls:
        report.notes.append(f"{with_urls} items list image URLs, but no --local-image-dir was given: "
                            "they are text-only (whyrec never downloads images)")

    interactions: list[Record] = []
    for rfile in review_files:
        for ref, obj in tqdm(iter_jsonl(rfile, report, "interactions"), desc=rfile.name, unit="review", mininterval=2):
            user, item = clean(obj.get("user_id")), clean(obj.get("parent_asin") or obj.get("asin"))
            ts = parse_timestamp(obj.get("timestamp"))
            if not user or not item or ts is None:
                report.add("bad_interaction", f"{ref}: user {user[:12]!r} item {item!r} timestamp {obj.get('timestamp')!r}")
                continue
            rating = parse_weight(obj.get("rating"), default=None)
            if rating is None:
                report.add("interaction_no_rating", f"{ref}: rating {obj.get('rating')!r}, weight 1")
                rating = 1.0
            interactions.append((user, item, ts, rating))
    if not review_files:
        report.notes.append("no reviews file: no interactions")
    return finish(collector, interactions, out)


# ----------------------------------------------------------------------------- Amazon Berkeley Objects
ABO_ENGLISH = ("en_US", "en_GB", "en_CA", "en_AU", "en_IN", "en_SG", "en_AE")
# ABO listing field -> whyrec attribute key (values taken in English where the listing has it)
ABO_ATTRIBUTES = {
    "brand": "brand", "color": "colour", "material": "material", "fabric_type": "fabric_type", "pattern": "pattern",
    "style": "style", "model_name": "model_name", "item_shape": "item_shape", "finish_type": "finish_type",
}


def abo_values(entries) -> list[str]:
    """Values of an ABO multilingual field ([{language_tag, value}, ...]): the en_US ones, else other
    English ones, else those without a language tag, else all of them."""
    if not isinstance(entries, list):
        return text_list(entries)
    items = [e for e in entries if isinstance(e, dict) and clean(e.get("value"))]
    for keep in (lambda t: t == "en_US", lambda t: t.startswith("en_"), lambda t: not t, lambda t: True):
        chosen = [clean(e["value"]) for e in items if keep(clean(e.get("language_tag")))]
        if chosen:
            return list(dict.fromkeys(chosen))
    return []


def _find_abo_images_csv(source: Path, image_dir: Path | None) -> Path | None:
    start = source if source.is_dir() else source.parent
    bases = [start, *list(start.parents)[:2]]
    if image_dir is not None:
        bases = [image_dir, image_dir.parent, image_dir.parent.parent] + bases
    for base in bases:
        for sub in ("", "metadata", "images/metadata", "abo-images-small/images/metadata"):
            for name in ("images.csv.gz", "images.csv"):
                path = base / sub / name
                if path.is_file():
                    return path
    return None


def import_abo(source: str | Path, out: str | Path, verify_images: bool = True,
               local_image_dir: str | Path | None = None,
               images_csv: str | Path | None = None) -> tuple[Catalog, ImportReport]:
    """Amazon Berkeley Objects: listings_*.json(.gz) JSON lines (a file, or a folder: also looked
    for in listings/metadata), images.csv(.gz) (image_id,height,width,path) from `images_csv` or
    found beside them, and the image files under `local_image_dir` (default: the `small` folder
    beside images.csv's metadata folder)."""
    source = Path(source)
    if source.is_dir():
        listings: list[Path] = []
        for sub in ("", "metadata", "listings/metadata", "abo-listings/listings/metadata"):
            listings += sorted((source / sub).glob("listings_*.json*"))
        if not listings:
            raise FileNotFoundError(f"no listings_*.json(.gz) in {source} (nor in its listings/metadata)")
    else:
        listings = [source]
    image_dir = _need_dir(local_image_dir, "--local-image-dir")
    if images_csv is not None and not Path(images_csv).is_file():
        raise FileNotFoundError(f"images table {images_csv} not found")
    table = Path(images_csv) if images_csv is not None else _find_abo_images_csv(source, image_dir)
    report = ImportReport("abo", str(source))

    image_paths: dict[str, str] = {}
    image_root: Path | None = None
    if table is None:
        if image_dir is not None:
            raise FileNotFoundError(f"--local-image-dir given but no images.csv(.gz) found near {source} or {image_dir}: "
                                    "give --images-csv")
        report.notes.append("no images.csv(.gz) found: items are text-only")
    else:
        small = table.parent.parent / "small"
        image_root = (image_dir or (small if small.is_dir() else table.parent)).resolve()
        for ref, row in iter_csv(table, report, "images", required=("image_id", "path")):
            if clean(row["image_id"]) and clean(row["path"]):
                image_paths[clean(row["image_id"])] = clean(row["path"])
            else:
                report.add("image_table_bad_row", f"{ref}: no image_id or path")

    collector = ProductCollector(report, verify_images)
    for lfile in listings:
        for ref, obj in tqdm(iter_jsonl(lfile, report), desc=lfile.name, unit="item", mininterval=2):
            attrs = {key: ", ".join(abo_values(obj.get(f))) for f, key in ABO_ATTRIBUTES.items() if abo_values(obj.get(f))}
            ptype = [v.replace("_", " ").lower() for v in abo_values(obj.get("product_type"))]
            if ptype:
                attrs["product_type"] = ptype[0]
            if "material" not in attrs and "fabric_type" in attrs:
                attrs["material"] = attrs["fabric_type"]
            keywords = abo_values(obj.get("item_keywords"))
            if keywords:
                attrs["keywords"] = ", ".join(keywords)
            nodes = obj.get("node") if isinstance(obj.get("node"), list) else []
            node_name = next((clean(n.get("node_name")) for n in nodes if isinstance(n, dict) and clean(n.get("node_name"))), "")
            category = [c.strip() for c in node_name.split("/") if c.strip()]
            if category and category[0].lower() == "categories":
                category = category[1:]
            item_id = clean(obj.get("item_id"))
            wanted = text_list(obj.get("main_image_id")) + text_list(obj.get("other_image_id"))
            paths = []
            if image_root is not None:
                for image_id in wanted:
                    if image_id in image_paths:
                        paths.append(str(image_root / image_paths[image_id]))
                    else:
                        report.add("image_unknown_id", f"{item_id}: image {image_id} is not in {table.name}")
            p = Product(
                id=item_id,
                title=" ".join(abo_values(obj.get("item_name"))[:1]),
                description=" ".join(abo_values(obj.get("product_description")) + abo_values(obj.get("bullet_point"))),
                attributes=attrs,
                category=category,
                colour=attrs.get("colour", ""),
                image_paths=paths,
            )
            collector.add(p, ref)
    return finish(collector, [], out)


# ----------------------------------------------------------------------------- registry
IMPORTERS: dict[str, Callable[..., tuple[Catalog, ImportReport]]] = {
    "hm": import_hm,
    "amazon2023": import_amazon2023,
    "abo": import_abo,
    "jsonl": import_plain,
    "csv": import_plain,
}


def import_catalog(fmt: str, source: str | Path, out: str | Path, verify_images: bool = True,
                   **options) -> tuple[Catalog, ImportReport]:
    """Import `source` in format `fmt` (see IMPORTERS) into a catalog folder `out`. `options` are
    the importer's own keyword arguments (local_image_dir, reviews, images_csv); None ones are ignored."""
    if fmt not in IMPORTERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(IMPORTERS)}")
    if not Path(source).exists():
        raise FileNotFoundError(f"{source} does not exist")
    importer = IMPORTERS[fmt]
    options = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(importer).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise ValueError(f"format {fmt} does not take {', '.join('--' + k.replace('_', '-') for k in unknown)}")
    return importer(source, out, verify_images=verify_images, **options)
