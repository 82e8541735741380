import numpy as np
import pytest
import torch

from retrieval.encoders.base import ItemVectorConfig, item_vectors, l2_normalise
from retrieval.encoders.lit import HeadTrainConfig, load_heads, save_heads, split_groups, train_heads
from retrieval.encoders.towers import FeatureCache, cached_features, colour_histogram


def paired_features(n=600, seed=0):
    """Synthetic 'image' and 'text' features that share a hidden latent through different maps."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 16)).astype(np.float32)
    img = z @ rng.standard_normal((16, 48)).astype(np.float32) + 0.1 * rng.standard_normal((n, 48)).astype(np.float32)
    txt = z @ rng.standard_normal((16, 24)).astype(np.float32) + 0.1 * rng.standard_normal((n, 24)).astype(np.float32)
    return img, txt


@pytest.mark.parametrize("kind", ["residual", "linear"])
def test_heads_learn_to_pair_images_with_their_texts(kind, tmp_path):
    torch.set_num_threads(1)
    img, txt = paired_features()
    cfg = HeadTrainConfig(kind=kind, dim=32, hidden=64, epochs=40, batch_size=128, lr=3e-3, holdout=0)
    heads, stats = train_heads(img[:500], txt[:500], cfg, threads=1)
    with torch.no_grad():
        zi = heads.image(torch.from_numpy(img[500:])).numpy()
        zt = heads.text(torch.from_numpy(txt[500:])).numpy()
    r1 = np.mean(np.argmax(zt @ zi.T, axis=1) == np.arange(100))  # held-out text -> image
    assert r1 > 0.5, r1  # chance is 0.01
    assert np.allclose(np.linalg.norm(zi, axis=1), 1, atol=1e-5)
    save_heads(heads, cfg, tmp_path, {"stats": stats})
    # saving needs the real tower names; loading checks them
    loaded, meta = load_heads(tmp_path)
    with torch.no_grad():
        assert np.allclose(loaded.image(torch.from_numpy(img[:5])).numpy(), heads.image(torch.from_numpy(img[:5])).numpy(), atol=1e-6)
    assert meta["config"]["kind"] == kind


def test_group_split_keeps_colour_variants_together():
    groups = [f"g{i // 3}" for i in range(300)]
    held = split_groups(groups, 0.2, seed=1)
    by_group = {}
    for g, h in zip(groups, held):
        by_group.setdefault(g, set()).add(bool(h))
    assert all(len(v) == 1 for v in by_group.values())
    assert 0.15 < held.mean() < 0.25


def test_feature_cache_computes_only_missing_and_survives_reload(tmp_path):
    calls = []

    def compute(batch):
        calls.append(len(batch))
        return np.array([[float(x), 1.0] for x in batch], np.float32)

    cache = FeatureCache(tmp_path, "tower", 2)
    out = cached_features(cache, ["a", "b", "c"], [1, 2, 3], compute, batch_size=2, desc="t")
    assert out[:, 0].tolist() == [1, 2, 3] and sum(calls) == 3
    again = FeatureCache(tmp_path, "tower", 2)
    out = cached_features(again, ["c", "d"], [3, 4], compute, batch_size=2, desc="t")
    assert out[:, 0].tolist() == [3, 4] and sum(calls) == 4  # only "d" was computed


def test_colour_histogram_tells_colours_apart_and_ignores_white_background():
    from PIL import Image

    def garment(rgb):
        im = Image.new("RGB", (60, 90), (255, 255, 255))
        im.paste(Image.new("RGB", (30, 50), rgb), (15, 20))
        return colour_histogram(im)

    red, red2, navy, black = garment((200, 20, 20)), garment((190, 30, 25)), garment((20, 30, 110)), garment((10, 10, 10))
    assert red @ red2 > 0.95
    assert red @ navy < 0.2 and red @ black < 0.2 and navy @ black < 0.5


class FakeFreeEncoder:
    """A real (deterministic) encoder over a toy space: texts and images map by their first letter."""

    name, dim = "letters", 26

    def encode_text(self, texts):
        return l2_normalise(np.stack([np.eye(26)[ord(t[0].lower()) - 97] + 0.01 for t in texts]))

    def encode_image(self, images):
        return l2_normalise(np.stack([np.eye(26)[ord(str(i).split("/")[-1][0]) - 97] + 0.01 for i in images]))


def test_item_vectors_fuse_image_and_text_and_keep_text_only_items(tmp_path):
    from retrieval.catalog import Catalog, Product

    cat = Catalog([Product("1", "apple", image_paths=[str(tmp_path / "zebra.jpg")]), Product("2", "banana")], root=tmp_path)
    enc = FakeFreeEncoder()
    fused = item_vectors(enc, cat, ItemVectorConfig("fusion", 0.5))
    assert fused[0, 0] > 0.5 and fused[0, 25] > 0.5  # text 'a' and image 'z'
    assert fused[1, 1] > 0.99  # no image: the text vector alone
    img = item_vectors(enc, cat, ItemVectorConfig("image"))
    assert img[0, 25] > 0.99 and img[1, 1] > 0.99
    with pytest.raises(ValueError):
        ItemVectorConfig("both")


def test_openclip_encoder_runs_a_tiny_random_architecture(tmp_path):
    from PIL import Image

    from retrieval.encoders import EncoderConfig, create_encoder

    tiny = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    enc = create_encoder(EncoderConfig(name="openclip", model="whyrec-tiny-test", model_config=tiny, threads=1))
    t = enc.encode_text(["black strap top", "white trainers"])
    Image.new("RGB", (40, 60), (10, 200, 10)).save(tmp_path / "g.jpg")
    i = enc.encode_image([str(tmp_path / "g.jpg")])
    assert t.shape == (2, 32) and i.shape == (1, 32) and enc.dim == 32
    assert np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert not np.allclose(t[0], t[1])
    # a local checkpoint file loads back into the same architecture
    import torch as _t

    _t.save(enc.model.state_dict(), tmp_path / "tiny.pt")
    again = create_encoder(EncoderConfig(name="openclip", model="whyrec-tiny-test", pretrained=str(tmp_path / "tiny.pt"), model_config=tiny, threads=1))
    assert np.allclose(again.encode_text(["black strap top"]), t[:1], atol=1e-5)
