"""Importers on small fixture files written here, each with the same kinds of bad rows: broken
JSON (or CSV), a missing id, a duplicate id, a truncated JPEG, a missing image, Latin-1 bytes.
Every test asserts the exact counts and that every good row survives; one test runs on a real
slice of ../shared/data/hm, and the CLI is run as a subprocess."""
from __future__ import annotations

import csv
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from retrieval.catalog import REPORT_FILE, Catalog
from retrieval.importers import IMPORTERS, import_catalog, iter_csv, ImportReport
from retrieval.vocabulary import item_values

REPO = Path(__file__).resolve().parents[2]
LATIN1_TITLE = b"Caf\xe9 cr\xe8me top"  # "Café crème top" in Latin-1: not UTF-8


def jpeg(path: Path, seed: int = 0) -> Path:
    """A small noisy JPEG (noise keeps the scan data long enough to cut in half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    Image.frombytes("RGB", (48, 64), bytes(rng.randrange(256) for _ in range(48 * 64 * 3))).save(path, "JPEG")
    return path


def truncated_jpeg(path: Path) -> Path:
    jpeg(path, seed=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def jl(obj) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def assert_consistent(report: ImportReport, catalog: Catalog, out: Path) -> None:
    """Every row is either in the catalog or counted under a skipping reason; the saved catalog and
    report match what the import returned."""
    assert report.rows_read == report.products + report.rows_skipped
    assert report.interaction_rows_read == report.interactions + report.interaction_rows_skipped
    assert report.products == len(catalog)
    assert report.text_only == sum(1 for p in catalog.products if not p.image_paths)
    loaded = Catalog.load(out)
    assert loaded.ids == catalog.ids
    assert len(loaded.interactions) == report.interactions
    assert json.loads((out / REPORT_FILE).read_text())["problems"] == report.problems
    for p in loaded.products:
        assert "\ufffd" not in p.title + p.description  # no text replaced by the replacement character


# ----------------------------------------------------------------------------- plain JSONL
@pytest.fixture
def plain_folder(tmp_path: Path) -> Path:
    src = tmp_path / "plain"
    jpeg(src / "img" / "p1.jpg")
    truncated_jpeg(src / "img" / "p5.jpg")
    jpeg(src / "img" / "p7.jpg")
    rows = [
        jl({"id": "p1", "title": "Good dress", "colour": "black", "price": 19.99, "image": "img/p1.jpg",
            "category": "Women > Dresses", "attributes": {"material": "cotton"}, "brand": "Acme"}),
        b'{"id": "p2", "title": "Broken\n',  # broken JSON
        jl({"title": "No id here", "image": "img/p1.jpg"}),  # missing id
        jl({"id": "p1", "title": "Duplicate of p1"}),  # duplicate id
        jl({"id": "p5", "title": "Truncated photo", "image": "img/p5.jpg"}),
        jl({"id": "p6", "title": "Photo missing", "image": "img/nope.jpg"}),
        b'{"id": "p7", "title": "' + LATIN1_TITLE + b'", "image": "img/p7.jpg"}\n',
        b"\n",  # blank lines are not rows
        jl({"id": 8, "title": "No image at all", "description": ["Soft.", "Warm."]}),
        jl({"id": "p9", "title": "Odd price", "price": "ask us"}),
        b"[1, 2]\n",  # JSON, but not an object
    ]
    (src / "products.jsonl").write_bytes(b"".join(rows))
    inter = [
        jl({"user": "u1", "item": "p1", "timestamp": "2020-01-02", "weight": 2}),
        jl({"user": "u2", "item": "p7", "timestamp": 1588687728923}),  # Unix ms
        b'{"user": "u3", "item": \n',  # broken JSON
        jl({"user": "u1", "item": "zzz", "timestamp": "2020-01-03"}),  # unknown item
        jl({"item": "p1", "timestamp": "2020-01-03"}),  # no user
        jl({"user": "u1", "item": "p1", "timestamp": "2020-01-03", "weight": "heavy"}),  # bad weight
    ]
    (src / "interactions.jsonl").write_bytes(b"".join(inter))
    return src


def test_plain_jsonl_counts_every_bad_row_and_keeps_every_good_one(plain_folder: Path, tmp_path: Path):
    out = tmp_path / "cat"
    catalog, report = import_catalog("jsonl", plain_folder, out)
    assert report.rows_read == 10
    assert catalog.ids == ["p1", "p5", "p6", "p7", "8", "p9"]
    assert report.problems == {
        "broken_json": 2, "missing_id": 1, "duplicate_id": 1, "image_unreadable": 1, "image_missing": 1,
        "non_utf8": 1, "bad_price": 1,
        "interaction_broken_json": 1, "interaction_unknown_item": 1, "bad_interaction": 2,
    }
    assert report.text_only == 4  # p5 (truncated), p6 (missing), 8 and p9 (none given)
    p1 = catalog["p1"]
    assert p1.title == "Good dress" and p1.price == 19.99 and p1.category == ["Women", "Dresses"]
    assert p1.attributes == {"brand": "Acme", "colour": "black", "material": "cotton"}
    assert Path(p1.image_paths[0]) == (plain_folder / "img" / "p1.jpg").resolve()
    assert catalog["p7"].title == "Café crème top" and len(catalog["p7"].image_paths) == 1
    assert catalog["p5"].image_paths == [] and catalog["p6"].image_paths == []
    assert catalog["8"].description == "Soft. Warm."
    assert catalog["p9"].price is None
    assert report.interaction_rows_read == 6 and report.interactions == 2
    assert [(i.user, i.item, i.weight) for i in catalog.interactions_frame().itertuples()] == [("u1", "p1", 2.0), ("u2", "p7", 1.0)]
    assert str(catalog.interactions_frame().timestamp[1]).startswith("2020-05-05")
    assert_consistent(report, catalog, out)
    assert any("line 2" in e or ":2" in e for e in report.examples["broken_json"])


def test_no_verify_images_only_checks_existence(plain_folder: Path, tmp_path: Path):
    catalog, report = import_catalog("jsonl", plain_folder, tmp_path / "cat", verify_images=False)
    assert "image_unreadable" not in report.problems and report.count("image_missing") == 1
    assert len(catalog["p5"].image_paths) == 1  # the truncated file gets through unverified


# ----------------------------------------------------------------------------- plain CSV
def test_plain_csv_bad_records_do_not_swallow_good_ones(tmp_path: Path):
    src = tmp_path / "csv"
    jpeg(src / "c1.jpg")
    truncated_jpeg(src / "c5.jpg")
    lines = [
        b"id,title,description,colour,price,image,attributes,brand\n",
        b'c1,Good shirt,"Soft, with a collar",white,12.5,c1.jpg,"{""material"": ""linen""}",Acme\n',
        b'c2,"Unclosed quote,desc,red,1,,,\n',  # bad record: must not swallow the rows after it
        b",No id,,,,c1.jpg,,\n",
        b"c1,Duplicate,,,,,,\n",
        b"c5,Truncated photo,,,,c5.jpg,,\n",
        b"c6,Missing photo,,,,gone.jpg,,\n",
        b"c7," + LATIN1_TITLE + b",,,,,,\n",
        b"c8,Too few fields\n",
        b'c9,"Two\nline description",,,,,not json,\n',  # a legit multi-line field; attributes unreadable
        b"c10,Last row,,,,,,,\n",  # one trailing empty cell is tolerated
    ]
    (src / "products.csv").write_bytes(b"".join(lines))
    out = tmp_path / "cat"
    catalog, report = import_catalog("csv", src / "products.csv", out)
    assert catalog.ids == ["c1", "c5", "c6", "c7", "c9", "c10"]
    assert report.rows_read == 10
    assert report.problems == {
        "bad_csv_row": 2, "missing_id": 1, "duplicate_id": 1, "image_unreadable": 1, "image_missing": 1,
        "non_utf8": 1, "bad_attributes": 1,
    }
    assert catalog["c1"].attributes == {"brand": "Acme", "colour": "white", "material": "linen"}
    assert catalog["c1"].description == "Soft, with a collar" and catalog["c1"].price == 12.5
    assert catalog["c7"].title == "Café crème top"
    assert catalog["c9"].title == "Two\nline description"
    assert report.text_only == 5
    assert_consistent(report, catalog, out)


def test_iter_csv_unclosed_quote_running_to_the_end_loses_only_its_row(tmp_path: Path):
    path = tmp_path / "a.csv"
    path.write_text('id,title\nc1,ok\nc2,"Broken,x\nc3,fine\nc4,also\n')  # c2's field would be 2 columns wide
    report = ImportReport("x", "y")
    rows = list(iter_csv(path, report))
    assert [r["id"] for _, r in rows] == ["c1", "c3", "c4"]
    assert report.problems == {"bad_csv_row": 1} and report.rows_read == 4
    assert report.examples["bad_csv_row"][0].startswith("a.csv line 3")


def test_iter_csv_header_missing_columns_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "a.csv"
    path.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="lacks columns"):
        list(iter_csv(path, ImportReport("x", "y"), required=("article_id",)))


# ----------------------------------------------------------------------------- H&M layout
HM_HEADER = ["article_id", "product_code", "prod_name", "product_type_name", "graphical_appearance_name",
             "colour_group_name", "index_group_name", "detail_desc"]


def _hm_row(aid: str, name: str, desc: str = "A nice item.") -> str:
    return ",".join(f'"{v}"' for v in [aid, aid[:7], name, "Vest top", "Solid", "Black", "Ladieswear", desc]) + "\r\n"


def test_hm_layout_bad_rows(tmp_path: Path):
    src = tmp_path / "hm"
    jpeg(src / "images" / "010" / "0108775015.jpg")
    truncated_jpeg(src / "images" / "010" / "0108775051.jpg")
    jpeg(src / "images" / "011" / "0110065001.jpg")
    body = [
        ",".join(f'"{h}"' for h in HM_HEADER).encode() + b"\r\n",
        _hm_row("0108775015", "Strap top").encode(),
        _hm_row("", "No id").encode(),
        _hm_row("0108775015", "Duplicate").encode(),
        _hm_row("0108775051", "Truncated photo").encode(),
        _hm_row("0108775099", "Photo missing").encode(),
        _hm_row("0110065001", "Latin", "XXX").encode().replace(b"XXX", LATIN1_TITLE),
        b'"0110065002","Broken row with too few fields"\r\n',
        _hm_row("110065011", "Id without its leading zero").encode(),
    ]
    (src / "articles.csv").write_bytes(b"".join(body))
    (src / "transactions.csv").write_text(
        "t_dat,customer_id,article_id,price,sales_channel_id\n"
        "2019-01-01,cust1,0108775015,0.02,2\n"
        "2019-01-02,cust1,108775015,0.04,2\n"  # article id without its leading zero
        "2019-01-03,cust2,0999999999,0.01,1\n"  # unknown article
        "not a date,cust2,0108775015,0.01,1\n"
        "2019-01-04,cust3,0110065001,free,1\n"  # price unreadable: purchase kept
    )
    out = tmp_path / "cat"
    catalog, report = import_catalog("hm", src, out)
    assert catalog.ids == ["0108775015", "0108775051", "0108775099", "0110065001", "0110065011"]
    assert report.rows_read == 8
    assert report.problems == {
        "missing_id": 1, "duplicate_id": 1, "image_unreadable": 1, "image_missing": 2, "non_utf8": 1,
        "bad_csv_row": 1, "interaction_unknown_item": 1, "bad_interaction": 1, "bad_price": 1,
    }
    top = catalog["0108775015"]
    assert top.title == "Strap top" and top.price == pytest.approx(0.03) and top.group_id == "0108775"
    assert top.attributes["product_type"] == "Vest top" and top.colour == "Black"
    assert catalog["0110065001"].description == "Café crème top" and catalog["0110065001"].price is None
    assert report.text_only == 3  # truncated, missing, and 0110065011 (no photo in images/)
    assert report.interaction_rows_read == 5 and report.interactions == 3
    assert_consistent(report, catalog, out)


def _shared_hm() -> Path | None:
    """../shared/data/hm beside the clone (CI), or two levels up (a git worktree under wt/)."""
    env = os.environ.get("WHYREC_SHARED")
    for base in ([Path(env)] if env else []) + [REPO.parent / "shared", REPO.parent.parent / "shared"]:
        if (base / "data" / "hm" / "articles.csv").is_file():
            return base / "data" / "hm"
    return None


def test_hm_real_slice(tmp_path: Path):
    real = _shared_hm()
    if real is None:
        pytest.skip("../shared/data/hm not found")
    src = tmp_path / "hm"
    src.mkdir()
    with open(real / "articles.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, picked = rows[0], rows[1:41]
    with open(src / "articles.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, quoting=csv.QUOTE_ALL).writerows([header] + picked)
    ids = [r[0] for r in picked]
    for aid in ids:
        dest = src / "images" / aid[:3] / f"{aid}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real / "images" / aid[:3] / f"{aid}.jpg", dest)
    # one photo cut short, one gone: both items stay in, text-only
    broken = src / "images" / ids[3][:3] / f"{ids[3]}.jpg"
    broken.write_bytes(broken.read_bytes()[:2000])
    (src / "images" / ids[7][:3] / f"{ids[7]}.jpg").unlink()
    with open(real / "transactions.csv", newline="", encoding="utf-8") as fh:
        tx = list(csv.reader(fh))
    mine = [r for r in tx[1:] if r[2] in set(ids)]
    with open(src / "transactions.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([tx[0]] + mine)

    out = tmp_path / "cat"
    catalog, report = import_catalog("hm", src, out)
    assert catalog.ids == ids
    assert report.problems == {"image_unreadable": 1, "image_missing": 1}
    assert report.text_only == 2 and not catalog[ids[3]].image_paths and not catalog[ids[7]].image_paths
    assert report.interactions == len(mine) > 0
    strap = catalog[ids[0]]
    assert strap.title == picked[0][header.index("prod_name")]
    assert strap.attributes["product_type"] == picked[0][header.index("product_type_name")]
    assert strap.price is not None or not any(r[2] == ids[0] for r in mine)
    assert_consistent(report, catalog, out)


# ----------------------------------------------------------------------------- Amazon Reviews 2023
def _amazon_meta(asin: str, title, images=(), **extra) -> dict:
    d = {"main_category": "AMAZON FASHION", "title": title, "average_rating": 4.2, "rating_number": 10,
         "features": [], "description": [], "price": None, "images": list(images), "videos": [], "store": "Acme",
         "categories": [], "details": {}, "parent_asin": asin, "bought_together": None}
    d.update(extra)
    return d


def _img(name: str) -> dict:
    base = "https://m.media-amazon.com/images/I/"
    return {"thumb": f"{base}{name}._AC_SR38,50_.jpg", "large": f"{base}{name}._AC_.jpg", "variant": "MAIN", "hi_res": None}


@pytest.fixture
def amazon_folder(tmp_path: Path) -> Path:
    src = tmp_path / "amazon"
    imgs = src / "images"
    jpeg(imgs / "A1.jpg")
    jpeg(imgs / "71abcXYZ.jpg")  # A2's image, saved under the URL's file name without the size code
    truncated_jpeg(imgs / "A3.jpg")
    jpeg(imgs / "A5.jpg")
    meta = [
        jl(_amazon_meta("A1", "Wrap dress", [_img("11aaa")], price=31.99,
                        features=["90% Polyester, 10% Spandex", "Machine Wash"], description=["A flowing dress."],
                        categories=["Clothing, Shoes & Jewelry", "Women", "Clothing", "Dresses"],
                        details={"Department": "womens", "Color": "Navy", "Fabric Type": "Polyester",
                                 "Date First Available": "July 18, 2017", "Best Sellers Rank": {"Clothing": 12}})),
        jl(_amazon_meta("A2", "Canvas sneakers", [_img("71abcXYZ")], price="$12.99")),
        b'{"parent_asin": "A9", "title": "broken\n',
        jl(_amazon_meta("", "No id")),
        jl(_amazon_meta("A1", "Duplicate of A1")),
        jl(_amazon_meta("A3", "Truncated photo", [_img("33ccc")])),
        jl(_amazon_meta("A4", "Photo not downloaded", [_img("44ddd")])),
        jl(_amazon_meta("A5", "XXX", [_img("55eee")])).replace(b"XXX", LATIN1_TITLE),
        jl(_amazon_meta("A6", None, price="call")),  # no title, no images, odd price
    ]
    (src / "meta_Test.jsonl").write_bytes(b"".join(meta))
    reviews = [
        jl({"rating": 5.0, "title": "Great", "text": "Love it", "images": [], "asin": "A1x", "parent_asin": "A1",
            "user_id": "U1", "timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": True}),
        jl({"rating": 3.0, "asin": "A2", "parent_asin": "A2", "user_id": "U1", "timestamp": 1600000000000}),
        b'{"rating": 5.0, "parent_asin": \n',
        jl({"rating": 4.0, "parent_asin": "B404", "user_id": "U2", "timestamp": 1600000000000}),
        jl({"rating": 4.0, "parent_asin": "A1", "timestamp": 1600000000000}),  # no user
        jl({"parent_asin": "A5", "user_id": "U2", "timestamp": 1600000000000}),  # no rating: kept, weight 1
    ]
    (src / "Test.jsonl").write_bytes(b"".join(reviews))
    return src


def test_amazon2023_with_local_images(amazon_folder: Path, tmp_path: Path):
    out = tmp_path / "cat"
    catalog, report = import_catalog("amazon2023", amazon_folder / "meta_Test.jsonl", out,
                                     local_image_dir=amazon_folder / "images")
    assert catalog.ids == ["A1", "A2", "A3", "A4", "A5", "A6"]
    assert report.rows_read == 9
    assert report.problems == {
        "broken_json": 1, "missing_id": 1, "duplicate_id": 1, "image_unreadable": 1, "image_missing": 1,
        "non_utf8": 1, "missing_title": 1, "bad_price": 1,
        "interaction_broken_json": 1, "interaction_unknown_item": 1, "bad_interaction": 1, "interaction_no_rating": 1,
    }
    a1 = catalog["A1"]
    assert Path(a1.image_paths[0]).name == "A1.jpg" and a1.price == 31.99
    assert a1.category == ["Clothing, Shoes & Jewelry", "Women", "Clothing", "Dresses"]
    assert a1.colour == "Navy" and a1.attributes["material"] == "Polyester" and a1.attributes["store"] == "Acme"
    assert a1.attributes["date_first_available"] == "July 18, 2017"
    assert "A flowing dress." in a1.description and "Machine Wash" in a1.description
    values = item_values(a1)  # the vocabulary reads the mapped facts
    assert values["colour"] == {"dark blue"} and values["department"] == {"women"} and "dress" in values["product_type"]
    assert Path(catalog["A2"].image_paths[0]).name == "71abcXYZ.jpg" and catalog["A2"].price == 12.99
    assert catalog["A3"].image_paths == [] and catalog["A4"].image_paths == []
    assert catalog["A5"].title == "Café crème top" and len(catalog["A5"].image_paths) == 1
    assert catalog["A6"].title == "A6" and catalog["A6"].price is None
    assert report.text_only == 3
    assert report.interaction_rows_read == 6
    assert sorted((i.user, i.item, i.weight) for i in catalog.interactions_frame().itertuples()) == [("U1", "A1", 5.0), ("U1", "A2", 3.0), ("U2", "A5", 1.0)]
    assert_consistent(report, catalog, out)


def test_amazon2023_without_image_dir_is_text_only_with_a_note(amazon_folder: Path, tmp_path: Path):
    catalog, report = import_catalog("amazon2023", amazon_folder, tmp_path / "cat")  # the folder form
    assert len(catalog) == 6 and report.text_only == 6
    assert not {"image_missing", "image_unreadable"} & set(report.problems)
    assert any("--local-image-dir" in n for n in report.notes)
    assert report.interactions == 3


def test_amazon2023_missing_reviews_file_is_an_error(amazon_folder: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="reviews"):
        import_catalog("amazon2023", amazon_folder, tmp_path / "cat", reviews=amazon_folder / "nope.jsonl")


# ----------------------------------------------------------------------------- Amazon Berkeley Objects
def _lang(value, tag="en_US"):
    return [{"language_tag": tag, "value": value}]


@pytest.fixture
def abo_root(tmp_path: Path) -> Path:
    root = tmp_path / "abo"
    small = root / "images" / "small"
    jpeg(small / "14" / "14fe8812.jpg")
    truncated_jpeg(small / "da" / "daab0cad.jpg")
    jpeg(small / "77" / "77aa0001.jpg")
    (root / "images" / "metadata").mkdir(parents=True)
    table = ("image_id,height,width,path\n"
             "81iZ1,64,48,14/14fe8812.jpg\n"
             "71tr2,64,48,da/daab0cad.jpg\n"
             "61gone,64,48,ee/ee000000.jpg\n"
             "51lat,64,48,77/77aa0001.jpg\n")
    with gzip.open(root / "images" / "metadata" / "images.csv.gz", "wt") as fh:
        fh.write(table)
    listings = [
        jl({"item_id": "B1", "item_name": _lang("Leather ankle boots", "en_US") + _lang("Stiefeletten", "de_DE"),
            "brand": _lang("Stone & Beam"), "color": [{"language_tag": "en_US", "value": "Black", "standardized_values": ["Black"]}],
            "material": _lang("Leather"), "product_type": [{"value": "SHOES"}], "bullet_point": _lang("Side zip.") + _lang("Block heel."),
            "item_keywords": _lang("boots") + _lang("ankle"), "main_image_id": "81iZ1", "other_image_id": ["00unknown"],
            "node": [{"node_id": 1, "node_name": "/Categories/Shoes/Women/Boots"}], "domain_name": "amazon.com"}),
        jl({"item_id": "B2", "item_name": _lang("Truncated photo chair"), "main_image_id": "71tr2"}),
        jl({"item_id": "B3", "item_name": _lang("Photo file gone"), "main_image_id": "61gone"}),
        jl({"item_id": "B4", "item_name": _lang("Nur Deutsch", "de_DE"), "product_type": [{"value": "HOME_BED_AND_BATH"}]}),
        b'{"item_id": "B9", "item_name": [\n',
        jl({"item_name": _lang("No id")}),
        jl({"item_id": "B1", "item_name": _lang("Duplicate")}),
        b'{"item_id": "B5", "item_name": [{"language_tag": "en_US", "value": "' + LATIN1_TITLE + b'"}], "main_image_id": "51lat"}\n',
    ]
    meta = root / "listings" / "metadata"
    meta.mkdir(parents=True)
    with gzip.open(meta / "listings_0.json.gz", "wb") as fh:
        fh.write(b"".join(listings))
    return root


def test_abo_listings(abo_root: Path, tmp_path: Path):
    out = tmp_path / "cat"
    catalog, report = import_catalog("abo", abo_root, out)
    assert catalog.ids == ["B1", "B2", "B3", "B4", "B5"]
    assert report.rows_read == 8
    assert report.problems == {
        "broken_json": 1, "missing_id": 1, "duplicate_id": 1, "image_unreadable": 1, "image_missing": 1,
        "non_utf8": 1, "image_unknown_id": 1,
    }
    b1 = catalog["B1"]
    assert b1.title == "Leather ankle boots" and b1.description == "Side zip. Block heel."
    assert b1.attributes == {"brand": "Stone & Beam", "colour": "Black", "material": "Leather", "product_type": "shoes",
                             "keywords": "boots, ankle"}
    assert b1.category == ["Shoes", "Women", "Boots"]
    assert [Path(p).name for p in b1.image_paths] == ["14fe8812.jpg"]
    assert item_values(b1)["material"] == {"leather"} and item_values(b1)["colour"] == {"black"}
    assert catalog["B4"].title == "Nur Deutsch" and catalog["B4"].attributes["product_type"] == "home bed and bath"
    assert catalog["B5"].title == "Café crème top" and len(catalog["B5"].image_paths) == 1
    assert report.text_only == 3
    assert_consistent(report, catalog, out)


def test_abo_truncated_gzip_keeps_the_rows_before_it(abo_root: Path, tmp_path: Path):
    good = gzip.compress(b"".join(jl({"item_id": f"T{i}", "item_name": _lang(f"Item {i}")}) for i in range(2000)))
    path = tmp_path / "listings_9.json.gz"
    path.write_bytes(good[: len(good) * 3 // 4])
    catalog, report = import_catalog("abo", path, tmp_path / "cat", images_csv=abo_root / "images" / "metadata" / "images.csv.gz")
    assert report.count("broken_file") == 1
    assert 0 < len(catalog) < 2000 and catalog.ids == [f"T{i}" for i in range(len(catalog))]
    assert report.rows_read == report.products + report.rows_skipped


def test_import_catalog_rejects_options_a_format_does_not_take(tmp_path: Path):
    with pytest.raises(ValueError, match="--reviews"):
        import_catalog("hm", tmp_path, tmp_path / "cat", reviews="x.jsonl")
    with pytest.raises(ValueError, match="unknown format"):
        import_catalog("parquet", tmp_path, tmp_path / "cat")
    with pytest.raises(FileNotFoundError):
        import_catalog("jsonl", tmp_path / "nope", tmp_path / "cat")


# ----------------------------------------------------------------------------- CLI
def _whyrec(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_cli_data_import(plain_folder: Path, tmp_path: Path):
    out = tmp_path / "cat"
    res = _whyrec("data", "import", "jsonl", str(plain_folder), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "imported 6 products (4 text-only)" in res.stdout and "duplicate_id: 1 (skipped)" in res.stdout
    assert len(Catalog.load(out)) == 6

    res = _whyrec("data", "import", "jsonl", str(plain_folder), "--out", str(out), "--json", "--no-verify-images")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["products"] == 6 and report["rows_skipped"] == 4 and "image_unreadable" not in report["problems"]


def test_cli_bad_input_exits_2_with_a_clear_message(tmp_path: Path):
    res = _whyrec("data", "import", "hm", str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "cat"))
    assert res.returncode == 2
    assert "error" in res.stderr and "no-such-folder" in res.stderr and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr
    res = _whyrec("data", "import", "abo", str(tmp_path), "--out", str(tmp_path / "cat"))
    assert res.returncode == 2 and "no listings_" in res.stderr


def test_cli_lists_exactly_the_registered_formats():
    from retrieval.cli import IMPORT_FORMATS

    assert sorted(IMPORT_FORMATS) == sorted(IMPORTERS)


@pytest.mark.parametrize("price, kept", [(-5, None), ("-12.50", None), (float("inf"), None), ("NaN", None),
                                         (0, 0.0), ("$12.99", 12.99)])
def test_negative_nan_and_infinite_prices_are_left_empty(tmp_path: Path, price, kept):
    src = tmp_path / "src"
    src.mkdir()
    (src / "products.jsonl").write_bytes(jl({"id": "a", "title": "Top", "price": price}))
    catalog, report = import_catalog("jsonl", src, tmp_path / "cat")
    assert catalog["a"].price == kept
    assert report.count("bad_price") == (1 if kept is None and price not in ("NaN",) else 0)
