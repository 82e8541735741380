"""The retrieval evaluation on the real offline encoder: frozen towers + heads trained here on a tiny catalog."""
import numpy as np
import pytest
from PIL import Image

from eval.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval, held_out_ids

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
    for task in ("text_to_image", "image_to_text", "image_to_image"):
        t = res["tasks"][task]
        assert 0.0 <= t["mrr"]["mean"] <= 1.0 and t["r@10"]["mean"] == 1.0  # 4 items: everything is in the top 10
    full = evaluate_retrieval(cat, enc, None, RetrievalEvalConfig(bootstrap=50))
    assert full["gallery_items"] == 12 and full["tasks"]["image_to_image"]["queries"] == 12
