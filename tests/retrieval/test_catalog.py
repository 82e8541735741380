import pandas as pd
import pytest

from retrieval.catalog import Catalog, Product, product_text


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
    inter = [("u1", "a", pd.Timestamp("2020-01-02"), 1.0), ("u1", "b", pd.Timestamp("2020-01-03"), 2.0)]
    Catalog(products, inter).save(tmp_path)
    c = Catalog.load(tmp_path)
    assert list(c.products) == products
    assert [(i.user, i.item, i.weight) for i in c.interactions_frame().itertuples()] == [("u1", "a", 1.0), ("u1", "b", 2.0)]
    assert c["b"].image_path is None and c.image_file(c["b"]) is None
    # product groups come from the stored columns; an item without a group is its own group
    assert c.groups() == ["g1", "b"] == Catalog(products).groups()


def test_duplicate_ids_are_refused_and_missing_catalog_is_explained(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        Catalog([Product("a", "x"), Product("a", "y")])
    with pytest.raises(FileNotFoundError, match="data import"):
        Catalog.load(tmp_path)


def test_image_paths_are_stored_relative_and_survive_a_move(tmp_path):
    """A catalog built on the host and mounted elsewhere (a container) with its images still finds
    them: paths are stored relative to the catalog folder and resolved at load."""
    import json
    import shutil

    from PIL import Image

    from retrieval.importers import import_catalog

    src = tmp_path / "host" / "data"
    (src / "img").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(src / "img" / "a.jpg")
    (src / "products.jsonl").write_text(json.dumps({"id": "a", "title": "Red top", "image": "img/a.jpg"}) + "\n")
    import_catalog("jsonl", src, tmp_path / "host" / "var" / "catalog")
    stored = json.loads(pd.read_parquet(tmp_path / "host" / "var" / "catalog" / "products.parquet")["image_paths"][0])
    assert stored == ["../../data/img/a.jpg"]
    shutil.move(tmp_path / "host", tmp_path / "container")
    moved = Catalog.load(tmp_path / "container" / "var" / "catalog")
    path = moved.image_file(moved["a"])
    assert path.is_file() and path.is_absolute() and "container" in str(path)
    moved.save(tmp_path / "container" / "var" / "copy")  # saved elsewhere: relative to the new folder
    again = Catalog.load(tmp_path / "container" / "var" / "copy")
    assert again.image_file(again["a"]) == path


def test_old_catalogs_with_absolute_image_paths_still_load(tmp_path):
    from PIL import Image

    image = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8)).save(image)
    Catalog([Product("a", "Top", image_paths=[str(image)])]).save(tmp_path / "cat")
    frame = pd.read_parquet(tmp_path / "cat" / "products.parquet")
    frame["image_paths"] = [f'["{image}"]']  # what catalogs written before held
    frame.to_parquet(tmp_path / "cat" / "products.parquet", index=False)
    old = Catalog.load(tmp_path / "cat")
    assert old.image_file(old["a"]) == image and old["a"].image_paths == [str(image)]
