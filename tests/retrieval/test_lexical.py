"""BM25 over item text (bm25s): stemming, category levels, storage."""
import numpy as np

from retrieval.catalog import Product
from retrieval.lexical import LexicalIndex, lexical_text

PRODUCTS = [
    Product("a", "BILLY Bookcase", "Adjustable shelves for books.", {}, ["Bookcase"]),
    Product("b", "KRYDDIG Spice mill", "Grinds spices.", {}, ["Spice mill"]),
    Product("c", "MALM Chest", "Storage for clothes.", {}, ["Chest of 2 drawers"]),
    Product("d", "LACK Side table", "Small table for the sofa.", {}, ["Side table"]),
]


def test_scores_rank_the_item_that_uses_the_words():
    lex = LexicalIndex.build(PRODUCTS)
    s = lex.scores(["spice"])  # stemmed: "spices" and "spice" meet
    assert int(np.argmax(s)) == 1 and s[1] > 0 and (s[[0, 2, 3]] == 0).all()
    s = lex.scores(["drawers"])  # only the category path says it
    assert "drawers" in lexical_text(PRODUCTS[2]).lower() and int(np.argmax(s)) == 2
    assert not lex.scores(["zebra"]).any() and not lex.scores([]).any()


def test_saved_index_loads_with_the_same_scores(tmp_path):
    lex = LexicalIndex.build(PRODUCTS)
    first = lex.save(tmp_path)
    again = LexicalIndex.load(tmp_path)
    assert again.ids == lex.ids
    assert np.allclose(again.scores(["small", "table"]), lex.scores(["small", "table"]))
    other = LexicalIndex.build(PRODUCTS[:2])
    second = other.save(tmp_path)  # a second save replaces the first whole, leaving no temporary folder behind
    assert second == first and LexicalIndex.load(tmp_path).ids == other.ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lexical"]


def test_a_catalog_without_words_scores_nothing_and_round_trips(tmp_path):
    """Photos-only catalogs (every text blank) still build, save and load; BM25 just has nothing to say."""
    blank = [Product(id=p.id, title="") for p in PRODUCTS]
    lex = LexicalIndex.build(blank)
    assert not lex.scores(["table"]).any() and len(lex.scores(["table"])) == len(blank)
    lex.save(tmp_path)
    again = LexicalIndex.load(tmp_path)
    assert again.ids == [p.id for p in blank] and not again.scores(["table"]).any()
