import numpy as np
import pytest

from eval.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval, held_out_ids, retrieval_markdown
from retrieval.catalog import Catalog, Product


def unit(*xs):
    v = np.array(xs, np.float32)
    return v / np.linalg.norm(v)


# hand-placed vectors (see the expected ranks in the test)
TEXT = {"a": unit(1, 0, 0, 0), "b": unit(1, 0, 0, 0.2), "c": unit(0, 1, 0, 0), "d": unit(1, 1, 0, 0)}
IMAGE = {"a": unit(1, 0, 0, 0), "b": unit(1, 0, 0, 1), "c": unit(0, 1, 0, 0), "d": unit(0, 0.1, 1, 0)}


class TableEncoder:
    """An encoder whose space is written out by hand, so ranks can be checked on paper."""

    name, dim = "table", 4

    def encode_text(self, texts):
        return np.stack([TEXT[t.rstrip(".")] for t in texts])

    def encode_image(self, images):
        return np.stack([IMAGE[str(p).rsplit("/", 1)[-1][0]] for p in images])


def catalog():
    groups = {"a": "g1", "b": "g1", "c": "g2", "d": "g3"}
    return Catalog([Product(x, x, image_paths=[f"/imgs/{x}.jpg"], group_id=g) for x, g in groups.items()]
                   + [Product("e", "e", group_id="g4")])  # no image: not in the gallery


def test_hand_computed_retrieval():
    res = evaluate_retrieval(catalog(), TableEncoder(), cfg=RetrievalEvalConfig(ks=[1, 5], bootstrap=50))
    t = res["tasks"]
    assert res["gallery_items"] == 4 and res["items_without_image"] == 1
    # text->image ranks: a 1, b 2 (a's image is closer), c 1, d 4 (its image is far from its text)
    assert t["text_to_image"]["r@1"]["mean"] == 0.5 and t["text_to_image"]["r@5"]["mean"] == 1.0
    assert t["text_to_image"]["mrr"]["mean"] == pytest.approx((1 + 0.5 + 1 + 0.25) / 4)
    # any colour of the product counts: b's text finds a's image first
    assert t["text_to_image_group"]["mrr"]["mean"] == pytest.approx((1 + 1 + 1 + 0.25) / 4)
    # image->text: a 1, b 1, c 1, d 2 (c's text scores 0.0995, d's 0.0704)
    assert t["image_to_text"]["r@1"]["mean"] == 0.75 and t["image_to_text"]["mrr"]["mean"] == pytest.approx(0.875)
    # image->image: only a and b have another colour; each finds the other first (itself excluded)
    assert t["image_to_image"]["queries"] == 2 and t["image_to_image"]["r@1"]["mean"] == 1.0
    assert "| image_to_text | 4 |" in retrieval_markdown(res)


def test_subset_and_errors(tmp_path):
    res = evaluate_retrieval(catalog(), TableEncoder(), ["c", "d"], RetrievalEvalConfig(bootstrap=20))
    assert res["gallery_items"] == 2 and "image_to_image" not in res["tasks"]
    # within {c, d}: d's text (1,1,0,0) meets c's image 0.707 and its own 0.07 -> rank 2
    assert res["tasks"]["text_to_image"]["mrr"]["mean"] == pytest.approx((1 + 0.5) / 2)
    with pytest.raises(ValueError):
        evaluate_retrieval(catalog(), TableEncoder(), ["zz"])
    with pytest.raises(FileNotFoundError):
        held_out_ids(tmp_path)
    with pytest.raises(ValueError):
        RetrievalEvalConfig(gallery="train")


def test_query_subset_against_full_gallery():
    # queries {a, d} against all four images: a's text finds a first, d's text finds its image last (rank 4)
    res = evaluate_retrieval(catalog(), TableEncoder(), None, RetrievalEvalConfig(bootstrap=20), query_ids=["a", "d"])
    assert res["gallery_items"] == 4 and res["query_items"] == 2
    assert res["tasks"]["text_to_image"]["mrr"]["mean"] == pytest.approx((1 + 0.25) / 2)
    assert res["tasks"]["image_to_image"]["queries"] == 1  # only a has another colour
    with pytest.raises(ValueError):
        evaluate_retrieval(catalog(), TableEncoder(), None, RetrievalEvalConfig(), query_ids=["e"])
    with pytest.raises(ValueError):
        RetrievalEvalConfig(queries="some")
