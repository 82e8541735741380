"""The search yardstick: query files, relevance by catalog attributes, and the runner's metrics."""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from eval.search_eval import (
    TFIDF,
    blank_text_config,
    check_fields,
    evaluate_search,
    judge,
    load_queries,
    relevant_ids,
)
from retrieval.catalog import Catalog
from retrieval.search import Hit, Searcher

REPO = Path(__file__).resolve().parents[2]
QUERIES = REPO / "eval" / "queries"
DEMO = REPO / "data" / "demo"

# hm importer attribute key -> articles.csv column, to judge H&M rules independently of eval.search_eval
HM_COLUMNS = {"product_type": "product_type_name", "colour": "colour_group_name", "colour_master": "perceived_colour_master_name",
              "pattern": "graphical_appearance_name", "index_group": "index_group_name", "garment_group": "garment_group_name"}


def _shared() -> Path | None:
    """../shared beside the clone, or two levels up (a git worktree under wt/)."""
    env = os.environ.get("WHYREC_SHARED")
    for base in ([Path(env)] if env else []) + [REPO.parent / "shared", REPO.parent.parent / "shared"]:
        if (base / "data").is_dir():
            return base / "data"
    return None


@pytest.fixture(scope="module")
def demo_catalog(tmp_path_factory) -> Catalog:
    from retrieval.importers import import_catalog

    catalog, _ = import_catalog("hm", DEMO, tmp_path_factory.mktemp("demo-cat") / "catalog", verify_images=False)
    return catalog


# ----------------------------------------------------------------------------- query files
@pytest.mark.parametrize("name,minimum", [("hm.yaml", 40), ("ikea.yaml", 40), ("shop2.yaml", 30)])
def test_query_files_parse_with_both_splits(name, minimum):
    queries = load_queries(QUERIES / name)
    splits = {q.split for q in queries}
    assert len(queries) >= minimum
    assert splits == {"dev", "heldout"}
    held = load_queries(QUERIES / name, "heldout")
    assert 0 < len(held) < len(queries) and all(q.split == "heldout" for q in held)


def test_bad_query_files_are_refused(tmp_path):
    bad = {
        "colour: [Black]": "FIELD_OP",  # a field with no operator
        "colour_like: [Black]": "FIELD_OP",
        "colour_any: []": "non-empty list",
    }
    for rule, why in bad.items():
        f = tmp_path / "q.yaml"
        f.write_text(f"queries:\n  - q: black socks\n    split: dev\n    relevant: {{{rule}}}\n")
        with pytest.raises(ValueError, match=why):
            load_queries(f)
    f.write_text("queries:\n  - q: black socks\n    split: train\n    relevant: {colour_any: [Black]}\n")
    with pytest.raises(ValueError, match="dev or heldout"):
        load_queries(f)


# ----------------------------------------------------------------------------- relevance
def _independent_hm(rule: dict, rows: list[dict]) -> set[str] | None:
    """The ids a rule of only `_any` / `_not` entries on mapped columns selects, read straight from articles.csv."""
    keep = set()
    for key in rule:
        field, _, op = key.rpartition("_")
        if field not in HM_COLUMNS or op not in ("any", "not"):
            return None
    for row in rows:
        ok = True
        for key, values in rule.items():
            field, _, op = key.rpartition("_")
            hit = row[HM_COLUMNS[field]].lower() in {v.lower() for v in values}
            ok &= hit if op == "any" else not hit
        if ok:
            keep.add(row["article_id"].zfill(10))
    return keep


def test_hm_rules_judge_as_the_source_data_says(demo_catalog):
    with open(DEMO / "articles.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    checked = nonempty = 0
    for q in load_queries(QUERIES / "hm.yaml"):
        expected = _independent_hm(q.relevant, rows)
        if expected is None:
            continue
        got = relevant_ids(demo_catalog, q.relevant)
        assert got == expected, q.text
        checked += 1
        nonempty += bool(got)
    assert checked >= 50 and nonempty >= 20  # most queries are checked, and many select real items


def test_judge_operators_on_a_real_product(demo_catalog):
    p = next(p for p in demo_catalog.products if p.colour and p.title and p.attributes.get("product_type"))
    assert judge(p, {"colour_any": [p.colour.upper()]})
    assert not judge(p, {"colour_not": [p.colour]})
    assert not judge(p, {"colour_any": [p.colour], "product_type_any": ["no such type"]})  # every entry must hold
    assert judge(p, {"any_of": [{"colour_any": ["no such colour"]}, {"product_type_any": [p.attributes["product_type"]]}]})
    word = re.findall(r"[A-Za-z]{3,}", p.title)[0]
    assert judge(p, {"title_has": [word.lower()]}) and not judge(p, {"title_lacks": [word]})
    assert judge(p, {"category_any": [p.category[0]]})  # any level of the path
    with pytest.raises(ValueError, match="in no product"):
        check_fields(demo_catalog, load_queries(QUERIES / "ikea.yaml"))  # IKEA rules do not fit H&M


def test_ikea_rules_against_the_csv(tmp_path):
    data = _shared()
    if data is None or not (data / "ikea" / "products.csv").is_file():
        pytest.skip("../shared/data/ikea not found")
    from retrieval.importers import import_catalog

    catalog, _ = import_catalog("csv", data / "ikea" / "products.csv", tmp_path / "catalog", verify_images=False)
    queries = load_queries(QUERIES / "ikea.yaml")
    check_fields(catalog, queries)
    sizes = {q.text: len(relevant_ids(catalog, q.relevant)) for q in queries}
    assert min(sizes.values()) >= 1, [q for q, n in sizes.items() if n == 0]
    with open(data / "ikea" / "products.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    q = next(q for q in queries if q.text == "white bookcase")
    cats = {"bookcase", "bookcase with glass door", "shelving unit"}
    expected = {r["id"] for r in rows if r["category"].lower() in cats and re.search(r"(?<![\w-])white(?![\w-])", r["colour"].lower())}
    assert relevant_ids(catalog, q.relevant) == expected and expected
    by_id = {p.id: p for p in catalog.products}
    mixed = next(r["id"] for r in rows if r["colour"] == "White,pine")  # a value that mixes kinds
    assert judge(by_id[mixed], {"colour_any": ["pine"]}) and judge(by_id[mixed], {"colour_any": ["white"]})
    blackbrown = next(r["id"] for r in rows if r["colour"] == "Black-brown")
    assert not judge(by_id[blackbrown], {"colour_any": ["black"]}) and not judge(by_id[blackbrown], {"colour_has": ["black"]})


# ----------------------------------------------------------------------------- the runner
class WithRankers:
    """The real demo searcher plus two more rankers: `random` (seeded random items) and `oracle`
    (relevant items first), to show the metrics follow the ranking."""

    def __init__(self, searcher: Searcher, relevant: dict[str, set[str]]):
        self.searcher = searcher
        self.catalog = searcher.catalog
        self.relevant = relevant
        self.rng = np.random.default_rng(0)

    def search(self, query, k=10, filters=None, ranker=None):
        if ranker == "random":
            return [Hit(i, 0.0, 0.0) for i in self.rng.choice(self.catalog.ids, size=k, replace=False)]
        if ranker == "oracle":
            return [Hit(i, 1.0, 1.0) for i in sorted(self.relevant[query])[:k]]
        if ranker == "real":
            return self.searcher.search(query, k, filters)
        raise ValueError(f"unknown ranker {ranker!r}")


def _some(catalog: Catalog, n: int) -> list:
    """The n queries of each split of hm.yaml with the most relevant items in `catalog`, plus one
    with none (few queries, for speed; many relevant items, so precision has room to differ)."""
    queries = load_queries(QUERIES / "hm.yaml")
    size = {q.text: len(relevant_ids(catalog, q.relevant)) for q in queries}
    out = []
    for split in ("dev", "heldout"):
        out += sorted((q for q in queries if q.split == split and size[q.text]), key=lambda q: -size[q.text])[:n]
    return out + [q for q in queries if not size[q.text]][:1]


def test_precision_follows_the_ranking(demo_searcher):
    queries = _some(demo_searcher.catalog, 8)
    relevant = {q.text: relevant_ids(demo_searcher.catalog, q.relevant) for q in queries}
    s = WithRankers(demo_searcher, relevant)
    res = evaluate_search(s, queries, rankers=["real", "random", "oracle", "missing"], baseline=False)
    summary = res.summary()
    assert "missing" in res.errors and "missing" not in summary  # a ranker that fails is reported, not scored
    real, rand, oracle = (summary[r]["all"] for r in ("real", "random", "oracle"))
    assert real["p@10"] > rand["p@10"] + 0.2 and real["ndcg@10"] > rand["ndcg@10"] + 0.2, (real, rand, res.ceiling())
    assert oracle["p@10"] == pytest.approx(res.ceiling()["all"], abs=1e-3) and oracle["ndcg@10"] == pytest.approx(1.0)
    assert res.no_relevant == [q.text for q in queries if not relevant[q.text]]  # left out, and said so
    assert res.splits["dev"] and res.splits["heldout"]


def test_every_named_ranker_of_the_searcher_is_scored(demo_searcher):
    """The real Searcher takes `ranker`: each asked ranker is scored on its own, beside the TF-IDF baseline."""
    queries = [q for q in _some(demo_searcher.catalog, 4) if q.split == "dev"]
    res = evaluate_search(demo_searcher, queries, rankers=["dense", "bm25", "rrf"])
    summary = res.summary()
    assert set(summary) == {"dense", "bm25", "rrf", TFIDF} and not res.errors
    assert all(0 < summary[r]["dev"]["p@10"] <= 1 for r in summary)


@pytest.mark.slow
def test_blank_text_searches_images_and_judges_originals(demo_config, demo_searcher, tmp_path):
    cfg = blank_text_config(demo_config, tmp_path)
    blank = Searcher.from_config(cfg)
    original = demo_searcher.catalog
    assert blank.catalog.ids == original.ids
    assert all(not p.title and not p.description and not p.attributes and not p.category for p in blank.catalog.products)
    assert [blank.catalog.image_file(p) for p in blank.catalog.products] == [original.image_file(p) for p in original.products]
    queries = _some(original, 10)
    relevant = {q.text: relevant_ids(original, q.relevant) for q in queries}
    res = evaluate_search(WithRankers(blank, relevant), queries, rankers=["real", "random"], judge_catalog=original, baseline=False)
    s = res.summary()
    assert s["real"]["all"]["p@10"] > s["random"]["all"]["p@10"]  # photos alone still find colour + type


def test_cli_prints_json(demo_config, tmp_path, capsys):
    import yaml

    from api.cli import main

    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(demo_config))
    few = tmp_path / "few.yaml"
    picked = [q for q in _some(Catalog.load(demo_config["catalog"]["dir"]), 2)]
    few.write_text(yaml.safe_dump({"queries": [{"q": q.text, "split": q.split, "relevant": q.relevant} for q in picked]}))
    out = tmp_path / "result.json"
    assert main(["eval", "search", "--config", str(cfg), "--queries", str(few), "--split", "heldout", "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert set(printed["queries"]) == {"heldout", "all"} and printed["results"]
    for ranker in printed["results"].values():
        assert 0 <= ranker["heldout"]["p@10"] <= 1


def test_second_shop_export_keeps_held_out_items_and_its_own_column_names(tmp_path):
    """bench/second_shop.py: the renamed CSV imports through the plain importer, its rules' fields exist,
    and the held-out items come first."""
    import importlib.util

    from retrieval.importers import import_catalog

    spec = importlib.util.spec_from_file_location("second_shop", REPO / "bench" / "second_shop.py")
    shop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shop)
    with open(DEMO / "articles.csv", newline="", encoding="utf-8") as f:
        ids = [r["article_id"].zfill(10) for r in csv.DictReader(f)]
    held = set(ids[::7])
    info = shop.export_csv(DEMO, held, 100, tmp_path / "shop", titles=False)
    assert info == {"items": 100, "held_out_items": len(held)}
    catalog, _ = import_catalog("csv", tmp_path / "shop" / "products.csv", tmp_path / "catalog", verify_images=False)
    assert held <= set(catalog.ids) and all(p.title == p.id and not p.description for p in catalog.products)
    check_fields(catalog, load_queries(QUERIES / "shop2.yaml"))  # articleType, baseColour ... survive the import
    assert not any("product_type" in p.attributes for p in catalog.products)
