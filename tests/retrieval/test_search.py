"""End to end on the bundled demo catalog: import -> encode (real towers + shipped heads) -> FAISS -> search."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.search import Filters, parse_filters
from retrieval.vocabulary import item_values

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_colour_and_type_words_pull_matching_items_to_the_top(demo_searcher):
    hits = demo_searcher.search("black dress", k=5)
    assert len(hits) == 5
    for h in hits:
        v = item_values(demo_searcher.catalog[h.id])
        assert "black" in v["colour"] and "dress" in v["product_type"], (h, v)
        assert set(h.matched) == {"black", "dress"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_late_fusion_beats_dense_only_on_fact_words(demo_searcher):
    from retrieval.search import SearchConfig, Searcher

    dense = Searcher(demo_searcher.catalog, demo_searcher.encoder, demo_searcher.index, SearchConfig(attribute_weight=0.0))

    def fits(item_id):
        v = item_values(demo_searcher.catalog[item_id])
        return "white" in v["colour"] and "t-shirt" in v["product_type"]

    def good(s):
        return sum(fits(h.id) for h in s.search("white t-shirt", k=5))

    available = sum(fits(i) for i in demo_searcher.catalog.ids)
    assert available >= 2
    assert good(demo_searcher) == min(5, available)  # every white t-shirt the catalog has comes first
    assert good(demo_searcher) >= good(dense)


def test_negated_words_push_items_down(demo_searcher):
    hits = demo_searcher.search("dress not black", k=5)
    assert not any("black" in item_values(demo_searcher.catalog[h.id])["colour"] for h in hits)


def test_filters_hold_and_still_fill_k(demo_searcher):
    hits = demo_searcher.search("top", k=8, filters={"colour": "black"})
    assert len(hits) == 8 and all("black" in item_values(demo_searcher.catalog[h.id])["colour"] for h in hits)
    prices = [p.price for p in demo_searcher.catalog.products if p.price is not None]
    lo, hi = np.percentile(prices, [25, 50])
    hits = demo_searcher.search("jacket", k=5, filters=Filters(price_min=lo, price_max=hi))
    assert hits and all(lo <= demo_searcher.catalog[h.id].price <= hi for h in hits)
    hits = demo_searcher.search("anything", k=5, filters={"category": "Shoes"})
    assert hits and all("shoes" in " ".join(demo_searcher.catalog[h.id].category).lower() for h in hits)


def test_image_search_finds_the_item_itself_first(demo_searcher):
    p = next(p for p in demo_searcher.catalog.products if p.image_paths)
    hits = demo_searcher.search_image(p.image_paths[0], k=3)
    assert hits[0].id == p.id
    with Image.open(p.image_paths[0]) as im:
        assert demo_searcher.search_image(im.copy(), k=1)[0].id == p.id


def test_similar_excludes_the_item_and_recommend_excludes_history(demo_searcher):
    item = demo_searcher.catalog.ids[0]
    hits = demo_searcher.similar(item, k=5)
    assert len(hits) == 5 and item not in [h.id for h in hits]
    with pytest.raises(KeyError):
        demo_searcher.similar("nope")
    user = demo_searcher.catalog.interactions_frame().user[0]
    history = demo_searcher.history_of(user)
    recs = demo_searcher.recommend(history, k=5)
    assert len(recs) == 5 and not set(history) & {h.id for h in recs}
    assert all(h.because in history for h in recs)
    steered = demo_searcher.recommend(history, k=5, query="black")
    assert sum("black" in item_values(demo_searcher.catalog[h.id])["colour"] for h in steered) >= 4
    with pytest.raises(ValueError):
        demo_searcher.recommend(["nope"], k=5)


def test_bad_queries_and_filters_are_explained(demo_searcher):
    with pytest.raises(ValueError, match="empty"):
        demo_searcher.search("   ")
    with pytest.raises(ValueError, match="unknown filter"):
        parse_filters(["size=M"])
    with pytest.raises(ValueError, match="price"):
        parse_filters(["price=cheap"])
    assert parse_filters(["price=..0.05", "color=navy"]) == Filters(colour="navy", price_max=0.05)


def run_cli(*args, cfg_path):
    return subprocess.run([sys.executable, "-m", "api.cli", "search", "--config", str(cfg_path), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def test_cli_search_table_json_and_query_file(demo_config, tmp_path):
    import yaml

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(demo_config))
    table = run_cli("black strap top", "-k", "3", cfg_path=cfg_path)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["#", "score", "id"] and len(table.stdout.splitlines()) == 4
    (tmp_path / "q.txt").write_text("black strap top\n\nwhite trainers\n")
    lines = run_cli("--queries", str(tmp_path / "q.txt"), "-k", "4", "--filter", "colour=black", cfg_path=cfg_path)
    assert lines.returncode == 0, lines.stderr
    answers = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [a["query"] for a in answers] == ["black strap top", "white trainers"]
    assert all(len(a["results"]) == 4 and {"id", "score"} <= set(a["results"][0]) for a in answers)
    bad = run_cli("x", "--filter", "size=M", cfg_path=cfg_path)
    assert bad.returncode == 2 and "unknown filter" in bad.stderr


# ---------------------------------------------------------------------- hybrid retrieval (issue 9) and bugs 1, 2, 8 (issue 10)
def test_the_index_folder_holds_vocabulary_bm25_and_fitted_fusion(demo_config, demo_searcher):
    import json as _json

    index_dir = Path(demo_config["index"]["dir"])
    assert (index_dir / "vocabulary.json").exists() and (index_dir / "lexical" / "ids.json").exists()
    report = _json.loads((index_dir / "fusion.json").read_text())
    assert report["queries"] >= 100 and report["seconds"] > 0 and set(report["held_out_scores"]) == {"dense", "facts", "bm25", "rrf", "fitted"}
    assert report["held_out_scores"]["fitted"] > report["held_out_scores"]["dense"]
    assert demo_searcher.vocab.part is not None and demo_searcher.default_ranker == "fitted"
    assert demo_searcher.read("black dress") == demo_searcher.read("black dress")


def test_every_ranker_answers_and_bm25_alone_ranks_by_words(demo_searcher):
    for ranker in ("dense", "facts", "bm25", "rrf", "fitted"):
        hits = demo_searcher.search("striped shirt", k=7, ranker=ranker)
        assert len(hits) == 7 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = demo_searcher.search("swimsuit", k=3, ranker="bm25")
    assert all(h.bm25 > 0 and "swimsuit" in demo_searcher.catalog[h.id].title.lower() + demo_searcher.catalog[h.id].description.lower()
               for h in top)
    with pytest.raises(ValueError, match="ranker"):
        demo_searcher.search("dress", ranker="magic")


def test_category_filter_matches_whole_levels_not_substrings(demo_searcher):
    def paths(hits):
        return [[level.lower() for level in demo_searcher.catalog[h.id].category] for h in hits]

    # "Men" is inside "Garment" and "Womens": it must match only a whole level called "Men" (none on H&M)
    assert demo_searcher.search("trousers", k=20, filters={"category": "Men"}) == []
    menswear = demo_searcher.search("trousers", k=20, filters={"category": "menswear"})
    assert menswear and all("menswear" in p for p in paths(menswear))
    two = demo_searcher.search("top", k=10, filters={"category": "Ladieswear > Garment Upper body"})
    assert two and all(p[:2] == ["ladieswear", "garment upper body"] for p in paths(two))


def test_k_beyond_the_candidate_pool_still_returns_k(demo_searcher):
    assert demo_searcher.cfg.candidates < 300
    for ranker in ("fitted", "dense", "bm25"):
        hits = demo_searcher.search("dress", k=300, ranker=ranker)
        assert len(hits) == 300 and len({h.id for h in hits}) == 300


def test_negation_does_not_swallow_the_next_words(demo_searcher):
    hits = demo_searcher.search("dress without sleeves in black", k=5)
    assert all("black" in demo_searcher.vocab.item_values(demo_searcher.catalog[h.id])["colour"] for h in hits)
    values = {i: demo_searcher.vocab.item_values(demo_searcher.catalog[i]) for i in demo_searcher.catalog.ids}
    wanted = {i for i, v in values.items() if "black" in v["colour"] and "trousers" in v["product_type"] and "slim" not in v["fit"]}
    assert wanted
    hits = demo_searcher.search("not too tight black trousers", k=5)
    n = min(5, len(wanted))
    assert {h.id for h in hits[:n]} <= wanted  # the black trousers that are not slim come first
    assert not any("slim" in values[h.id]["fit"] for h in hits)


def test_cli_fit_fusion_rewrites_the_report(demo_config, tmp_path):
    import yaml

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(demo_config))
    out = subprocess.run([sys.executable, "-m", "api.cli", "index", "fit-fusion", "--config", str(cfg_path), "--queries", "40"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["queries"] == 40 and report["settings"]["kind"] in ("linear", "rrf")
    saved = json.loads((Path(demo_config["index"]["dir"]) / "fusion.json").read_text())
    assert saved["queries"] == 40


def test_price_words_in_the_query_bound_the_results(demo_searcher):
    """"under X" keeps priced items at or below X (demo prices are H&M's scaled ones, ~0.01-0.1)."""
    prices = {p.id: p.price for p in demo_searcher.catalog.products}
    cut = float(np.nanmedian([v for v in prices.values() if v is not None]))
    hits = demo_searcher.search(f"black dress under {cut}", k=20)
    assert len(hits) == 20 and all(prices[h.id] is None or prices[h.id] <= cut for h in hits)
    unbounded = demo_searcher.search("black dress", k=20)
    assert any(prices[h.id] is not None and prices[h.id] > cut for h in unbounded)  # the bound is what removed them


def test_filter_postings_select_exactly_the_matching_items(demo_searcher):
    """The per-value postings intersected per query pick the same items a scan of every product does."""
    s = demo_searcher
    products = s.products
    prices = [p.price for p in products if p.price is not None]
    lo, hi = (float(v) for v in np.percentile(prices, [20, 70]))
    cases = [
        ({"category": "Ladieswear"}, lambda p: "ladieswear" in [c.lower() for c in p.category]),
        ({"price_min": lo, "price_max": hi}, lambda p: p.price is not None and lo <= p.price <= hi),
        ({"price_max": hi}, lambda p: p.price is not None and p.price <= hi),
    ]
    black = set(np.flatnonzero(s.term_credit(s.read("black").terms[0]) > 0).tolist())
    cases.append(({"colour": "black", "price_max": hi}, lambda p: s.index.row[p.id] in black and p.price is not None and p.price <= hi))
    for spec, holds in cases:
        rows = s.filter_rows(parse_filters(spec))
        assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)
        assert rows.tolist() == [r for r, p in enumerate(products) if holds(p)], spec
        assert len(rows) > 0, spec


def test_searcher_over_milvus_gives_the_faiss_results(demo_searcher):
    """The same Searcher over a Milvus index of the same vectors (both exact here) ranks the same,
    filters (Milvus expressions) included."""
    pytest.importorskip("pymilvus")
    from retrieval.index import IndexParams, build_index
    from retrieval.search import Searcher

    s = demo_searcher
    milvus = build_index(np.asarray(s.index.vectors), s.index.ids, IndexParams(backend="milvus", recall_queries=0))
    try:
        other = Searcher(s.catalog, s.encoder, milvus, s.cfg, s.vocab, s.lexical, s.fusion)
        for query, filters in [("black top", None), ("dress", {"colour": "blue"}), ("trousers", {"category": "Menswear"})]:
            want = [h.id for h in s.search(query, k=8, filters=filters)]
            assert want and [h.id for h in other.search(query, k=8, filters=filters)] == want
        item = s.index.ids[3]
        assert [h.id for h in other.similar(item, k=5)] == [h.id for h in s.similar(item, k=5)]
    finally:
        milvus.drop()


def test_a_reload_keeps_what_is_unchanged_on_disk_and_reloads_what_changed(demo_config, tmp_path):
    import shutil

    from retrieval.catalog import Catalog, Product
    from retrieval.search import Searcher

    shutil.copytree(demo_config["catalog"]["dir"], tmp_path / "catalog")
    cfg = {**demo_config, "catalog": {"dir": str(tmp_path / "catalog")}}
    first = Searcher.from_config(cfg)
    same = Searcher.from_config(cfg, previous=first)
    assert same.catalog is first.catalog and same.index is first.index and same.encoder is first.encoder
    assert same.lexical is first.lexical and same.fact_tables is first.fact_tables
    assert [h.id for h in same.search("black dress", 5)] == [h.id for h in first.search("black dress", 5)]

    cat = Catalog.load(tmp_path / "catalog")  # the catalog re-imported: one title changed, rewritten atomically
    pid = cat.ids[0]
    products = list(cat.products)
    products[0] = Product(**{**products[0].__dict__, "title": "a wholly new title"})
    Catalog(products, cat.interactions).save(tmp_path / "catalog")
    after = Searcher.from_config(cfg, previous=same)
    assert after.catalog is not same.catalog and after.catalog.by_id[pid].title == "a wholly new title"
    assert after.index is same.index and after.encoder is same.encoder  # the index folder did not change
    assert after.fact_tables is not same.fact_tables  # facts are per catalog: read again
