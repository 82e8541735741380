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
