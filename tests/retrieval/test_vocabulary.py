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
