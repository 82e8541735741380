import pandas as pd
import pytest

from retrieval.catalog import Catalog, Interaction, Product, product_text


def test_product_text_puts_title_salient_attributes_and_description_together():
    p = Product("1", "Strap top", "Jersey top with narrow shoulder straps.", {"product_type": "Vest top", "colour": "Black", "section": "Basics"}, colour="Black")
    text = product_text(p)
    assert text.startswith("Strap top. Vest top, Black")
    assert "narrow shoulder straps" in text


def test_save_and_load_roundtrip_keeps_every_field(tmp_path):
    products = [
        Product("a", "Dress", "Long dress.", {"colour": "Red", "størrelse": "M"}, ["Ladieswear", "Dress"], "Red", 0.05, ["/x/a.jpg"], "g1"),
        Product("b", "Cap", "", {}, [], "", None, [], ""),
    ]
    inter = [Interaction("u1", "a", pd.Timestamp("2020-01-02"), 1.0), Interaction("u1", "b", pd.Timestamp("2020-01-03"), 2.0)]
    Catalog(products, inter).save(tmp_path)
    c = Catalog.load(tmp_path)
    assert c.products == products
    assert [(i.user, i.item, i.weight) for i in c.interactions] == [("u1", "a", 1.0), ("u1", "b", 2.0)]
    assert c["b"].image_path is None and c.image_file(c["b"]) is None


def test_duplicate_ids_are_refused_and_missing_catalog_is_explained(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        Catalog([Product("a", "x"), Product("a", "y")])
    with pytest.raises(FileNotFoundError, match="data import"):
        Catalog.load(tmp_path)
