import numpy as np

from retrieval.catalog import Product
from retrieval.vocabulary import Term, accepts, canonical, extract_terms, item_values, matches


def kv(text):
    return {(t.kind, t.value, t.negated) for t in extract_terms(text)}


def test_synonyms_map_to_catalog_values():
    assert ("colour", "dark blue", False) in kv("navy blazer for the office")
    assert ("product_type", "blazer", False) in kv("navy blazer for the office")
    assert ("product_type", "sneakers", False) in kv("white trainers")
    assert ("pattern", "lace", False) in kv("lacy bra")
    assert ("pattern", "dotted", False) in kv("polka dot dress")
    assert ("department", "sport", False) in kv("something for the gym")


def test_longest_phrase_wins_and_plurals_are_known():
    assert {("product_type", "vest top", False)} == {x for x in kv("tank top") if x[0] == "product_type"}
    assert ("product_type", "dress", False) in kv("summer dresses")
    assert ("colour", "light blue", False) in kv("light blue shirt") and ("colour", "blue", False) not in kv("light blue shirt")


def test_negation_is_marked_and_ends_at_but():
    terms = kv("something black for the gym, not too tight")
    assert ("fit", "slim", True) in terms and ("colour", "black", False) in terms
    terms = kv("not black but navy")
    assert ("colour", "black", True) in terms and ("colour", "dark blue", False) in terms
    assert ("pattern", "lace", True) in kv("a bra without lace")


def test_family_values_accept_their_members():
    assert "dark blue" in accepts("colour", "blue")
    assert "blue" not in accepts("colour", "dark blue")
    assert "sneakers" in accepts("product_type", "shoes")


def test_item_values_read_structured_facts_and_description():
    p = Product("1", "Slim jeans", "5-pocket jeans in washed stretch denim with a high waist.",
                {"product_type": "Trousers", "colour": "Dark Blue", "pattern": "Denim", "index_group": "Ladieswear",
                 "garment_group": "Trousers Denim"}, colour="Dark Blue")
    v = item_values(p)
    assert v["colour"] == {"dark blue"}
    assert {"trousers", "jeans"} <= v["product_type"]
    assert "denim" in v["material"] and "women" in v["department"]
    assert "slim" in v["fit"] and "high waist" in v["fit"]
    assert matches(Term("colour", "blue", "blue"), v) is True
    assert matches(Term("colour", "black", "black"), v) is False
    assert matches(Term("colour", "black", "black", negated=True), v) is True
    assert matches(Term("material", "wool", "wool"), {"material": set()}) is None


def test_canonical_maps_catalog_spellings():
    assert canonical("colour", "Greenish Khaki") == "khaki"
    assert canonical("pattern", "All over pattern") == "all-over print"
    assert "all-over print" in accepts("pattern", "printed")
    assert canonical("colour", "Unknown") is None


def test_punctuation_ends_a_negation_and_compounds_keep_their_words():
    assert ("colour", "black", False) in kv("not too tight, black")
    assert {("department", "sport", False), ("product_type", "bra", False)} <= kv("sports bra")
    assert {("pattern", "denim", False), ("product_type", "jacket", False)} <= kv("oversized denim jacket")
    assert ("department", "kids", False) in kv("pink dress for a little girl")


def test_structured_values_can_be_read_without_the_description():
    p = Product("1", "Bra", "Soft bra in lace.", {"product_type": "Bra", "pattern": "Solid", "colour": "Light Pink",
                                                   "colour_master": "Lilac Purple"})
    assert "lace" in item_values(p)["pattern"] and "lace" not in item_values(p, text=False)["pattern"]
    assert {"light pink", "purple"} <= item_values(p, text=False)["colour"]  # both colour facts count


# ---------------------------------------------------------------------- a catalog's own vocabulary
import pytest  # noqa: E402

from retrieval.catalog import Catalog  # noqa: E402
from retrieval.vocabulary import Vocabulary  # noqa: E402


def _furniture() -> Catalog:
    rows = [
        ("1", "BILLY Bookcase", "Bookcase", "White"), ("2", "HEMNES Bookcase", "Bookcase", "Black-brown"),
        ("3", "LOHALS Rug", "Rug, flatwoven", "Natural"), ("4", "STOCKHOLM Rug", "Rug, high pile", "Grey"),
        ("5", "NORNS Table", "Table", "White,pine"), ("6", "LACK Side table", "Side table", "Black"),
        ("7", "ARSTID Table lamp", "Table lamp", "White"), ("8", "KTISTER Two-seat sofa", "Two-seat sofa", "Beige"),
        ("9", "SVALA Wall lamp", "Wall lamp", "Stainless steel"), ("10", "DUKTIG Play kitchen", "Play kitchen", ""),
    ]
    return Catalog([Product(i, t, "", {"colour": c, "rooms": f"room-{i}"} if c else {"rooms": f"room-{i}"}, [cat], c)
                    for i, t, cat, c in rows])


def _fashion() -> Catalog:
    rows = [("1", "Nike Running", "Sports Shoes", "White", "Sports", "Men"), ("2", "Clarks Oxford", "Formal Shoes", "Black", "Formal", "Men"),
            ("3", "Titan Analog", "Watches", "Black", "Casual", "Men"), ("4", "Puma Tee", "Tshirts", "Navy Blue", "Sports", "Women"),
            ("5", "Levis 511", "Jeans", "Blue", "Casual", "Men"), ("6", "Bata Heels", "Heels", "Red", "Casual", "Women")]
    return Catalog([Product(i, t, "", {"articleType": a, "baseColour": c, "usage": u, "gender": g}, [], c) for i, t, a, c, u, g in rows])


def test_catalog_columns_become_values_split_by_kind_and_grouped_by_head_noun():
    vocab = Vocabulary.from_catalog(_furniture())
    assert vocab.part.columns.get("category") == "product_type" and "rooms" not in vocab.part.columns
    values = {p.id: vocab.item_values(p, text=False) for p in _furniture().products}
    assert values["5"]["colour"] == {"white"} and "pine" in values["5"]["material"]  # "White,pine" mixes kinds
    assert values["2"]["colour"] == {"black", "brown"}  # "Black-brown"
    assert "steel" in values["9"]["material"]
    q = {(t.kind, t.value) for t in vocab.extract_terms("white bookcase")}
    assert q == {("colour", "white"), ("product_type", "bookcase")}
    assert [(t.kind, t.value) for t in vocab.extract_terms("flatwoven rug")] == [("product_type", "rug, flatwoven")]
    rug = vocab.extract_terms("a rug")[0]
    assert {"rug, flatwoven", "rug, high pile"} <= vocab.accepts("product_type", rug.value)
    lamp = vocab.extract_terms("lamp")[0]
    assert {"table lamp", "wall lamp"} <= vocab.accepts("product_type", lamp.value)
    assert "table lamp" not in vocab.accepts("product_type", "table")  # a table lamp is a lamp, not a table
    wood = vocab.extract_terms("wooden table")
    assert any(t.kind == "material" and "pine" in vocab.accepts("material", t.value) for t in wood)
    couch = [t for t in vocab.extract_terms("a grey couch") if t.kind == "product_type"]  # the pack's equivalents
    assert couch and "two-seat sofa" in vocab.accepts("product_type", couch[0].value)
    assert not [t for t in vocab.extract_terms("kitchen spices") if t.kind == "product_type"]  # "kitchen" modifies spices


def test_a_second_fashion_shop_reads_through_its_own_columns():
    cat = _fashion()
    vocab = Vocabulary.from_catalog(cat)
    assert vocab.part.columns == {"articleType": "product_type", "baseColour": "colour", "usage": "usage", "gender": "department"}
    terms = {(t.kind, t.value) for t in vocab.extract_terms("formal black shoes for men")}
    assert {("usage", "formal"), ("colour", "black"), ("department", "men")} <= terms
    shoes = next(t for t in vocab.extract_terms("formal black shoes") if t.kind == "product_type")
    assert {"formal shoes", "sports shoes"} <= vocab.accepts("product_type", shoes.value)
    sneakers = next(t for t in vocab.extract_terms("white sneakers") if t.kind == "product_type")
    assert "sports shoes" in vocab.accepts("product_type", sneakers.value)  # the catalog says "Sports Shoes"
    watch = next(t for t in vocab.extract_terms("black watch") if t.kind == "product_type")
    assert "watches" in vocab.accepts("product_type", watch.value)
    navy = vocab.item_values(cat["4"], text=False)
    assert navy["colour"] == {"dark blue"} and navy["product_type"] == {"t-shirt"}


def test_catalog_vocabulary_saves_and_loads(tmp_path):
    vocab = Vocabulary.from_catalog(_furniture())
    vocab.save(tmp_path)
    again = Vocabulary.load(tmp_path)
    for text in ("white bookcase", "flatwoven rug", "black-brown shelf", "a lamp", "grey couch"):
        assert again.extract_terms(text) == vocab.extract_terms(text)
    for p in _furniture().products:
        assert again.item_values(p) == vocab.item_values(p)


@pytest.mark.slow
def test_words_the_catalog_does_not_use_are_read_by_the_text_tower():
    from retrieval.encoders.towers import TextTower

    tower = TextTower()
    vocab = Vocabulary.from_catalog(_furniture(), embed=tower.features)
    lamp = [t for t in vocab.extract_terms("bedside lamp", similar=True) if t.kind == "product_type"]
    assert len(lamp) == 1 and lamp[0].similarity is not None
    assert {lamp[0].value, *lamp[0].also} <= {"table lamp", "wall lamp"}  # narrowed inside the lamp family
    assert not vocab.extract_terms("quantum physics", similar=True)  # nothing close enough: no term


def test_the_phrase_vector_cache_stays_bounded_and_still_answers():
    """A long-running server embeds many phrases: the cache is emptied when full, and the call that
    fills it still gets its vectors (it used to clear them before reading them back)."""
    from retrieval.vocabulary import Vocabulary

    v = Vocabulary("en")
    v.embed = lambda texts: np.ones((len(texts), 4), np.float32)
    v.EMBED_CACHE_MAX = 3
    assert v.embed_texts(["a", "b"]).shape == (2, 4)
    out = v.embed_texts(["c", "d"])  # 2 + 2 > 3: the cache is emptied first
    assert out.shape == (2, 4) and len(v._embed_cache) == 2
