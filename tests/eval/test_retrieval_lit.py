"""The retrieval evaluation on the real offline encoder: frozen towers + heads trained here on a tiny catalog."""
import numpy as np
import pytest
from PIL import Image

from eval.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval, held_out_ids
from retrieval.catalog import product_text

COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 160, 30), "yellow": (220, 200, 30)}
SHAPES = ["dress", "shirt", "trousers"]


@pytest.mark.slow
def test_lit_encoder_retrieval(tmp_path):
    import torch

    from retrieval.catalog import Catalog, Product
    from retrieval.encoders.lit import HeadTrainConfig, LitEncoder, train_encoder

    torch.set_num_threads(1)
    products = []
    for s, shape in enumerate(SHAPES):
        for name, rgb in COLOURS.items():
            im = Image.new("RGB", (64, 96), (255, 255, 255))
            box = [(16, 8, 48, 88), (8, 16, 56, 60), (20, 8, 44, 90)][s]
            im.paste(rgb, box)
            path = tmp_path / f"{shape}-{name}.png"
            im.save(path)
            products.append(Product(f"{shape}-{name}", f"{name} {shape}", attributes={"colour": name}, colour=name,
                                    image_paths=[str(path)], group_id=shape))
    cat = Catalog(products, root=tmp_path)
    heads = tmp_path / "heads"
    train_encoder(cat, heads, HeadTrainConfig(kind="linear", dim=16, epochs=20, batch_size=8, holdout=0.34, seed=0),
                  cache_dir=tmp_path / "cache", threads=1)
    held = held_out_ids(heads)
    assert held  # whole groups are held out
    enc = LitEncoder(heads, cache_dir=tmp_path / "cache", threads=1)
    res = evaluate_retrieval(cat, enc, held, RetrievalEvalConfig(bootstrap=50))
    assert res["gallery_items"] == len(held) == 4
    # the reported figures are the true ones: recompute R@1, R@5 and MRR from the encoder's own
    # embeddings (a 4-item gallery puts everything in the top 10, so R@10 would say nothing)
    items = [cat[i] for i in held]
    T = enc.encode_text([product_text(p) for p in items])
    I = enc.encode_image([p.image_paths[0] for p in items])
    S = T @ I.T
    rank = np.array([1 + int((S[i] > S[i, i]).sum()) for i in range(len(items))])
    t2i = res["tasks"]["text_to_image"]
    assert t2i["queries"] == 4
    assert t2i["r@1"]["mean"] == pytest.approx((rank == 1).mean())
    assert t2i["r@5"]["mean"] == 1.0 and t2i["mrr"]["mean"] == pytest.approx((1 / rank).mean())
    full = evaluate_retrieval(cat, enc, None, RetrievalEvalConfig(bootstrap=50))
    assert full["gallery_items"] == 12 and full["tasks"]["image_to_image"]["queries"] == 12
    # the items the heads were trained on: their own pairs come first far above chance (R@1 1/12)
    trained = [p.id for p in products if p.id not in held]
    seen = evaluate_retrieval(cat, enc, None, RetrievalEvalConfig(bootstrap=50), query_ids=trained)["tasks"]["text_to_image"]
    assert seen["queries"] == 8 and seen["r@1"]["mean"] >= 0.75, seen
