"""Search quality on shopper queries whose relevance is judged by the catalog's own attributes.

A query file (eval/queries/*.yaml) lists queries a shopper would type, each tagged `dev` (may be
looked at while tuning) or `heldout` (only for the final figures), with a relevance rule written
in the catalog's attribute values, never as a list of item ids:

    catalog: ikea
    queries:
      - q: white bookcase
        split: dev
        kind: type+colour
        relevant: {category_any: [Bookcase, Shelving unit], colour_has: [white]}

A rule is a mapping `FIELD_OP: [values]`; every entry must hold (AND), any value of an entry
may (OR). FIELD is an attribute key of the product, compared without case, `_` or spaces (so
`articleType` and `article_type` are one field), or `category` (any level of the path), `colour`,
`title`, `description`, `text` (title + description). OP is one of
- `any`:   the field's value, or one of its comma / `|` separated parts, equals a listed value
           ("White,pine" is white and pine; "Black-brown" is neither black nor brown);
- `has`:   the value contains a listed word or phrase as whole words ("High-gloss white" has white);
- `not`:   the negation of `any`;  `lacks`: the negation of `has`.
`any_of: [RULE, RULE, ...]` holds when one of the sub-rules holds.

Relevance is always judged on the ORIGINAL products (also when the searched catalog has its text
blanked), so every ranker is scored against the same truth. The external baseline is a plain
TF-IDF over `product_text`, computed here.
"""
from __future__ import annotations

import copy
import inspect
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from eval.metrics import bootstrap_ci, ndcg_at_k, precision_at_k, ranks_in_list
from retrieval.catalog import Catalog, Product, product_text

log = logging.getLogger(__name__)

SPLITS = ("dev", "heldout")
OPS = ("any", "has", "not", "lacks")
RANKERS = ("dense", "facts", "bm25", "rrf", "fitted")  # Searcher.search(..., ranker=NAME) once it takes one
DEFAULT = "default"  # Searcher.search without a ranker argument
TFIDF = "tfidf"
SPECIAL_FIELDS = ("category", "colour", "title", "description", "text")


# ----------------------------------------------------------------------------- query files
@dataclass
class SearchQuery:
    """One shopper query, its split, a free tag of its kind, and its relevance rule."""

    text: str
    split: str
    relevant: dict
    kind: str = ""


def _norm_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _check_rule(rule: Any, where: str) -> None:
    if not isinstance(rule, dict) or not rule:
        raise ValueError(f"{where}: a relevance rule is a non-empty mapping FIELD_OP: [values]")
    for key, values in rule.items():
        if key == "any_of":
            if not isinstance(values, list) or not values:
                raise ValueError(f"{where}: any_of takes a non-empty list of rules")
            for i, sub in enumerate(values):
                _check_rule(sub, f"{where} any_of[{i}]")
            continue
        fieldname, _, op = str(key).rpartition("_")
        if not fieldname or op not in OPS:
            raise ValueError(f"{where}: rule key {key!r} must be FIELD_OP with OP one of {', '.join(OPS)} (or any_of)")
        if not isinstance(values, list) or not values or not all(isinstance(v, (str, int, float)) for v in values):
            raise ValueError(f"{where}: {key} takes a non-empty list of values")


def load_queries(path: str | Path, split: str = "all") -> list[SearchQuery]:
    """The queries of a YAML query file (optionally one split), checked for shape."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"query file {path} not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    items = data.get("queries") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a top-level `queries:` list")
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be dev, heldout or all, not {split!r}")
    out, seen = [], set()
    for n, item in enumerate(items):
        where = f"{path} query {n + 1}"
        if not isinstance(item, dict) or not str(item.get("q", "")).strip():
            raise ValueError(f"{where}: each query needs a non-empty `q`")
        q = SearchQuery(str(item["q"]).strip(), str(item.get("split", "")), item.get("relevant"), str(item.get("kind", "")))
        if q.split not in SPLITS:
            raise ValueError(f"{where} ({q.text!r}): split must be dev or heldout, not {q.split!r}")
        if q.text.lower() in seen:
            raise ValueError(f"{where}: duplicate query {q.text!r}")
        seen.add(q.text.lower())
        _check_rule(q.relevant, f"{where} ({q.text!r})")
        if split in ("all", q.split):
            out.append(q)
    return out


# ----------------------------------------------------------------------------- relevance
def field_values(p: Product, fieldname: str) -> list[str]:
    """The product's values for a rule field (see the module docstring for the special fields)."""
    key = _norm_key(fieldname)
    if key == "title":
        return [p.title]
    if key == "description":
        return [p.description]
    if key == "text":
        return [p.title, p.description]
    out = [v for k, v in p.attributes.items() if _norm_key(k) == key and v]
    if key == "category":
        out += list(p.category)
    if key in ("colour", "color") and p.colour:
        out += [p.colour] + [v for k, v in p.attributes.items() if _norm_key(k) == "color" and v]
    return [str(v) for v in out if str(v).strip()]


def _parts(value: str) -> set[str]:
    low = value.strip().lower()
    return {low} | {s.strip() for s in re.split(r"[,|]", low) if s.strip()}


def _has(value: str, phrase: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(phrase.strip().lower()) + r"(?![\w-])", value.lower()) is not None


def judge(p: Product, rule: dict) -> bool:
    """Whether product `p` is relevant under `rule` (every entry holds)."""
    for key, values in rule.items():
        if key == "any_of":
            if not any(judge(p, sub) for sub in values):
                return False
            continue
        fieldname, _, op = key.rpartition("_")
        have = field_values(p, fieldname)
        wanted = [str(v).strip().lower() for v in values]
        if op in ("any", "not"):
            hit = any(w in _parts(v) for v in have for w in wanted)
        else:
            hit = any(_has(v, w) for v in have for w in wanted)
        if hit != (op in ("any", "has")):
            return False
    return True


def rule_fields(rule: dict) -> set[str]:
    out = set()
    for key, values in rule.items():
        if key == "any_of":
            for sub in values:
                out |= rule_fields(sub)
        else:
            out.add(key.rpartition("_")[0])
    return out


def relevant_ids(catalog: Catalog, rule: dict) -> set[str]:
    return {p.id for p in catalog.products if judge(p, rule)}


def check_fields(catalog: Catalog, queries: Sequence[SearchQuery]) -> None:
    """A rule naming a field no product has is a typo (or the wrong catalog): say so."""
    present = {_norm_key(k) for p in catalog.products for k in p.attributes} | set(SPECIAL_FIELDS) | {"color"}
    for q in queries:
        missing = sorted(f for f in rule_fields(q.relevant) if _norm_key(f) not in present)
        if missing:
            raise ValueError(f"query {q.text!r}: field(s) {missing} are in no product of this catalog")


# ----------------------------------------------------------------------------- rankers
def tfidf_ranker(catalog: Catalog) -> Callable[[str, int], list[str]]:
    """The external baseline: cosine over sublinear TF-IDF (words and word pairs) of product_text."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1)
    docs = vec.fit_transform([product_text(p) for p in catalog.products])
    ids = catalog.ids

    def rank(query: str, k: int) -> list[str]:
        scores = (docs @ vec.transform([query]).T).toarray().ravel()
        top = np.argsort(-scores, kind="stable")[:k]
        return [ids[i] for i in top if scores[i] > 0]

    return rank


def accepts_ranker(searcher) -> bool:
    """Whether `searcher.search` takes a `ranker` argument (the hybrid search interface)."""
    try:
        return "ranker" in inspect.signature(searcher.search).parameters
    except (TypeError, ValueError):
        return False


def searcher_ranker(searcher, name: str) -> Callable[[str, int], list[str]]:
    if name == DEFAULT:
        return lambda q, k: [h.id for h in searcher.search(q, k=k)]
    return lambda q, k: [h.id for h in searcher.search(q, k=k, ranker=name)]


# ----------------------------------------------------------------------------- the evaluation
@dataclass
class SearchEvalResult:
    """Means per ranker and split, plus per-query values (see `to_dict`)."""

    k: int
    n_items: int
    interface: str
    splits: dict[str, list[str]]  # split -> query texts evaluated
    per_query: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # ranker -> query -> metrics
    relevant: dict[str, int] = field(default_factory=dict)  # query -> number of relevant items
    kinds: dict[str, str] = field(default_factory=dict)  # query -> its kind tag
    no_relevant: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # ranker -> why it could not run
    ms_per_query: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, dict[str, Any]]]:
        """ranker -> split -> {p@k, ndcg@k, p@k_ci95, n}."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for ranker, per in self.per_query.items():
            out[ranker] = {}
            for split, texts in self.splits.items():
                p = [per[q][f"p@{self.k}"] for q in texts if q in per]
                n = [per[q][f"ndcg@{self.k}"] for q in texts if q in per]
                if not p:
                    continue
                ci = bootstrap_ci(p, n_boot=1000, seed=0)
                out[ranker][split] = {f"p@{self.k}": round(float(np.mean(p)), 3), f"ndcg@{self.k}": round(float(np.mean(n)), 3),
                                      f"p@{self.k}_ci95": [round(ci.low, 3), round(ci.high, 3)], "n": len(p)}
        return out

    def by_kind(self) -> dict[str, dict[str, float]]:
        """ranker -> kind tag -> mean p@k over all evaluated queries of that kind (where each part of a
        tag like `type+colour` counts the query once)."""
        out: dict[str, dict[str, float]] = {}
        for ranker, per in self.per_query.items():
            groups: dict[str, list[float]] = {}
            for q, m in per.items():
                for part in (self.kinds.get(q) or "untagged").split("+"):
                    groups.setdefault(part, []).append(m[f"p@{self.k}"])
            out[ranker] = {kind: round(float(np.mean(v)), 3) for kind, v in sorted(groups.items())}
        return out

    def ceiling(self) -> dict[str, float]:
        """Best possible mean p@k per split: a query with r < k relevant items can reach r/k."""
        return {split: round(float(np.mean([min(1.0, self.relevant[q] / self.k) for q in texts])), 3)
                for split, texts in self.splits.items() if texts}

    def to_dict(self, per_query: bool = True) -> dict:
        d = {"k": self.k, "catalog_items": self.n_items, "ranker_interface": self.interface,
             "queries": {s: len(t) for s, t in self.splits.items()}, f"ceiling_p@{self.k}": self.ceiling(),
             "results": self.summary(), f"p@{self.k}_by_kind": self.by_kind(), "ms_per_query": self.ms_per_query}
        if self.no_relevant:
            d["queries_without_relevant_items"] = self.no_relevant
        if self.errors:
            d["ranker_errors"] = self.errors
        if self.notes:
            d["notes"] = self.notes
        if per_query:
            d["per_query"] = {q: {"relevant_items": self.relevant[q], **{r: per[q][f"p@{self.k}"] for r, per in self.per_query.items() if q in per}}
                              for texts in (self.splits.get("dev", []), self.splits.get("heldout", [])) for q in texts}
        return d


def evaluate_search(searcher, queries: Sequence[SearchQuery], rankers: Sequence[str] | None = None, k: int = 10,
                    judge_catalog: Catalog | None = None, baseline: bool = True,
                    extra: dict[str, Callable[[str, int], list[str]]] | None = None) -> SearchEvalResult:
    """precision@k and nDCG@k of each ranker of `searcher` (and of TF-IDF) on `queries`.

    `rankers`: names for `searcher.search(..., ranker=NAME)`; None = all of RANKERS when the
    searcher takes a ranker, else its default ranking only. `judge_catalog`: the catalog whose
    products judge relevance (default: the searched one). `extra`: more named rankers
    (query, k) -> ids, scored the same way.
    """
    catalog = searcher.catalog
    truth = judge_catalog or catalog
    check_fields(truth, queries)
    takes = accepts_ranker(searcher)
    if rankers is None:
        rankers = list(RANKERS) if takes else [DEFAULT]
    rankers = list(rankers)
    if takes:
        interface = "Searcher.search(query, k, filters, ranker)"
    else:
        interface = "Searcher.search has no ranker argument: only its default ranking is evaluated, as 'default'"
        dropped = [r for r in rankers if r != DEFAULT]
        rankers = [DEFAULT]
        if dropped:
            log.warning("Searcher.search takes no ranker: evaluating the default ranking instead of %s", dropped)
    n_items = len(catalog)
    rel: dict[str, set[str]] = {}
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    result = SearchEvalResult(k, n_items, interface, splits)
    for q in queries:
        r = relevant_ids(truth, q.relevant) & set(catalog.ids)
        result.relevant[q.text] = len(r)
        result.kinds[q.text] = q.kind
        if not r:
            result.no_relevant.append(q.text)
            continue
        rel[q.text] = r
        splits[q.split].append(q.text)
    if result.no_relevant:
        log.warning("%d queries have no relevant item in this catalog and are left out: %s", len(result.no_relevant), result.no_relevant[:5])
    splits["all"] = splits["dev"] + splits["heldout"]
    result.splits = {s: t for s, t in splits.items() if t}
    if not splits["all"]:
        raise ValueError("no query has a relevant item in this catalog: wrong query file for this catalog?")

    named: dict[str, Callable[[str, int], list[str]]] = {r: searcher_ranker(searcher, r) for r in rankers}
    if baseline:
        named[TFIDF] = tfidf_ranker(catalog)
    named.update(extra or {})
    texts = splits["all"]
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    for name, rank in named.items():
        per: dict[str, dict[str, float]] = {}
        try:
            rank(texts[0], k)  # warm-up (lazy model loading), not timed
            t0 = time.perf_counter()
            for q in (tqdm(texts, desc=f"search eval {name}", unit="query", mininterval=5, leave=False) if tqdm else texts):
                ids = rank(q, k)[:k]
                ranks = ranks_in_list(ids, rel[q], n_items)
                per[q] = {f"p@{k}": precision_at_k(ranks, k), f"ndcg@{k}": ndcg_at_k(ranks, k)}
        except (ValueError, KeyError, NotImplementedError, FileNotFoundError, RuntimeError) as err:  # e.g. a ranker this index was not built for
            result.errors[name] = f"{type(err).__name__}: {err}"
            log.warning("ranker %s failed: %s", name, err)
            continue
        result.ms_per_query[name] = round(1000 * (time.perf_counter() - t0) / len(texts), 1)
        result.per_query[name] = per
    return result


# ----------------------------------------------------------------------------- blanked text
def blank_products(catalog: Catalog) -> list[Product]:
    """The catalog's products with title, description, attributes, category and colour emptied;
    ids, prices, groups and (absolute) image paths kept."""
    out = []
    for p in catalog.products:
        img = catalog.image_file(p)
        out.append(Product(id=p.id, title="", description="", attributes={}, category=[], colour="", price=p.price,
                           image_paths=[str(img)] if img is not None else [], group_id=p.group_id))
    return out


def blank_text_config(config: dict, workdir: str | Path) -> dict:
    """A copy of `config` whose catalog is the blanked copy under `workdir`, indexed from images only.
    Builds that catalog and its index (with the config's encoder)."""
    from retrieval.config import section
    from retrieval.search import CatalogConfig, build_index

    workdir = Path(workdir)
    catalog = Catalog.load(section(config, "catalog", CatalogConfig).dir)
    blank = Catalog(blank_products(catalog), root=workdir / "catalog")
    blank.save(workdir / "catalog")
    cfg = copy.deepcopy(config)
    cfg.setdefault("catalog", {})["dir"] = str(workdir / "catalog")
    cfg["catalog"].pop("source", None)
    index = dict(cfg.get("index") or {})
    index["dir"] = str(workdir / "index")
    index["item_vectors"] = {"mode": "image", "image_weight": 1.0}
    cfg["index"] = index
    missing = sum(1 for p in blank.products if not p.image_paths)
    if missing:
        log.warning("%d of %d items have no image: their vectors come from empty text", missing, len(blank))
    build_index(cfg, command="whyrec eval search --blank-text")
    return cfg


@dataclass
class SearchEvalConfig:
    """What `whyrec eval search` runs."""

    config: str
    queries: str
    split: str = "all"
    rankers: list[str] | None = None
    k: int = 10
    blank_text: bool = False


def run_search_eval(cfg: SearchEvalConfig) -> dict:
    """Load the configured Searcher (or its blanked-text twin), evaluate, return a JSON-able dict."""
    from retrieval.config import load_yaml, section
    from retrieval.search import CatalogConfig, Searcher

    config = load_yaml(cfg.config)
    queries = load_queries(cfg.queries, cfg.split)
    t0 = time.time()
    if not cfg.blank_text:
        searcher = Searcher.from_config(config)
        res = evaluate_search(searcher, queries, cfg.rankers, cfg.k)
    else:
        original = Catalog.load(section(config, "catalog", CatalogConfig).dir)
        with tempfile.TemporaryDirectory(prefix="whyrec-blank-") as tmp:
            searcher = Searcher.from_config(blank_text_config(config, tmp))
            res = evaluate_search(searcher, queries, cfg.rankers, cfg.k, judge_catalog=original, baseline=False)
        res.notes.append("--blank-text: every title, description, attribute, category and colour blanked; item vectors "
                         "from images only; relevance judged on the original products; no TF-IDF (no text to read)")
    out = {"config": cfg.config, "queries_file": cfg.queries, "split": cfg.split, "blank_text": cfg.blank_text,
           **res.to_dict(), "wall_s": round(time.time() - t0, 1)}
    return out


def summary_table(result: dict) -> str:
    """A short Markdown table of a `run_search_eval` result: one row per ranker and split."""
    k = result["k"]
    rows = [f"| ranker | split | p@{k} | nDCG@{k} | p@{k} 95% CI | queries |", "|---|---|---|---|---|---|"]
    for ranker, per in result["results"].items():
        for split, m in per.items():
            lo, hi = m[f"p@{k}_ci95"]
            rows.append(f"| {ranker} | {split} | {m[f'p@{k}']:.3f} | {m[f'ndcg@{k}']:.3f} | [{lo:.3f}, {hi:.3f}] | {m['n']} |")
    ceiling = ", ".join(f"{s} {v:.3f}" for s, v in result[f"ceiling_p@{k}"].items())
    lines = ["\n".join(rows), f"ceiling p@{k}: {ceiling}", f"interface: {result['ranker_interface']}"]
    for key in ("ranker_errors", "queries_without_relevant_items", "notes"):
        if result.get(key):
            lines.append(f"{key}: {result[key]}")
    return "\n".join(lines)

