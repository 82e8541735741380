"""The one query reader: terms, price bounds and free words."""
from retrieval.query import Query, read_query


def test_reads_terms_price_and_free_words():
    q = read_query("red dress under 30 euros for a garden party")
    assert isinstance(q, Query)
    assert q.values("colour") == ["red"] and q.values("product_type") == ["dress"]
    assert (q.price_min, q.price_max) == (None, 30.0)
    assert "garden" in q.words and "party" in q.words and "euros" not in q.words


def test_price_range_and_lower_bound():
    assert (read_query("jeans between 20 and 10").price_min, read_query("jeans between 20 and 10").price_max) == (10.0, 20.0)
    assert read_query("boots over $50").price_min == 50.0
    assert read_query("a sofa from 2018").price_min is None


def test_excluded_values_are_not_wanted():
    q = read_query("a skirt, not black")
    assert q.values("colour", negated=True) == ["black"] and "black" not in q.values("colour")


def test_negation_ends_where_the_negated_phrase_ends():
    q = read_query("dress without sleeves in black")
    assert q.values("colour") == ["black"] and q.values("product_type") == ["dress"]
    assert q.excluded_words == ("sleeves",) and "sleeves" not in q.lexical_words
    q = read_query("not too tight black jeans")
    assert q.values("fit", negated=True) == ["slim"] and q.values("colour") == ["black"] and "jeans" in q.values("product_type")
    q = read_query("a top with no lace or sequins, in red")
    assert set(q.values("pattern", negated=True)) == {"lace", "sparkly"} and q.values("colour") == ["red"]
    assert read_query("a dress not for kids").values("department", negated=True) == ["kids"]
    assert read_query("not black but navy").values("colour") == ["dark blue"]


def test_a_product_word_before_a_part_noun_is_a_modifier():
    q = read_query("shirt with cap sleeves")
    assert q.values("product_type") == ["shirt"] and q.lexical_words == ["shirt", "cap", "sleeves"]


def test_one_reader_for_queries_and_claims():
    from retrieval.query import read_terms

    text = "a black dress, not red"
    assert [(t.kind, t.value, t.negated) for t in read_terms(text)] == [(t.kind, t.value, t.negated) for t in read_query(text).terms]


def test_anything_but_excludes_and_a_plain_but_does_not():
    q = read_query("a scarf, anything but grey")
    assert q.values("colour", negated=True) == ["grey"] and not q.values("colour")
    q = read_query("black jeans but not too tight")
    assert q.values("colour") == ["black"] and q.values("fit", negated=True) == ["slim"]
