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


# ----------------------------------------------------------------------------- zero-shot space, anchored heads
def toy_zeroshot(text_dim=24, seed=0):
    """The real ZeroShotMap code over a toy 1000-class classifier and toy name embeddings."""
    from retrieval.encoders.zeroshot import COLOUR_NAMES, ZeroShotMap, ZeroShotSettings

    rng = np.random.default_rng(seed)
    weight = torch.from_numpy(rng.standard_normal((1000, 1280)).astype(np.float32) * 0.05)
    classes = l2_normalise(rng.standard_normal((1000, text_dim)))
    colours = l2_normalise(rng.standard_normal((len(COLOUR_NAMES), text_dim)))
    return ZeroShotMap(classes, colours, ZeroShotSettings(temperature=1.0, top_k=5, colour_weight=0.2), classifier=(weight, torch.zeros(1000)))


def test_zeroshot_map_puts_a_photo_near_the_name_of_its_class_and_colour():
    zs = toy_zeroshot()
    feats = np.zeros((3, 1308), np.float32)
    feats[0, :1280] = 40 * zs.fc_weight[7].numpy()  # a photo the classifier calls class 7 ...
    feats[1, :1280] = 40 * zs.fc_weight[300].numpy()
    feats[2, :1280] = feats[0, :1280]
    feats[:2, 1280] = 1.0  # ... all black (histogram bin 0)
    feats[2, 1283] = 1.0  # the same thing in white (bin 3)
    with torch.no_grad():
        v = zs(torch.from_numpy(feats)).numpy()
    sims = v @ zs.classes.numpy().T
    assert sims[0].argmax() == 7 and sims[1].argmax() == 300 and sims[2].argmax() == 7
    colour = v @ zs.colours.numpy().T  # the black photo sits nearer "black", the white one nearer "white"
    assert colour[0, 0] > colour[2, 0] and colour[2, 3] > colour[0, 3]
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)


def test_class_names_are_imagenet_in_classifier_order():
    from retrieval.encoders.zeroshot import class_names

    names = class_names()
    # the ImageNet indices the queries rely on (torchvision's meta lists the same order)
    assert names[409] == "analog clock" and names[414] == "backpack" and names[770] == "sneaker"
    assert names[837] == "sunglasses" and names[608] == "jeans" and names[453] == "bookcase" and names[846] == "table lamp"


def anchored_setup(n=400, seed=0):
    """Tower-like photo features and 'texts' that share a hidden 16-d latent."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 16)).astype(np.float32)
    img = z @ rng.standard_normal((16, 1308)).astype(np.float32) + 0.1 * rng.standard_normal((n, 1308)).astype(np.float32)
    img[:, 1280:] = np.abs(img[:, 1280:])
    txt = l2_normalise(z @ rng.standard_normal((16, 24)).astype(np.float32))
    return img, txt


def test_untrained_anchored_heads_are_the_zero_shot_space_and_training_stays_near_it(tmp_path):
    torch.set_num_threads(1)
    zs = toy_zeroshot()
    img, txt = anchored_setup()
    from retrieval.encoders.lit import Heads

    cfg = HeadTrainConfig(kind="anchored", hidden=0, epochs=40, batch_size=128, lr=3e-3, holdout=0)
    untrained = Heads(1308, 24, cfg, zs).eval()
    with torch.no_grad():
        assert np.allclose(untrained.image(torch.from_numpy(img[:8])).numpy(), zs(torch.from_numpy(img[:8])).numpy(), atol=1e-5)
        assert np.allclose(untrained.text(torch.from_numpy(txt[:8])).numpy(), txt[:8], atol=1e-5)

    def trained(anchor):
        heads, _ = train_heads(img[:300], txt[:300], HeadTrainConfig(**{**cfg.__dict__, "anchor": anchor}), threads=1, zeroshot=zs)
        with torch.no_grad():
            zi = heads.image(torch.from_numpy(img[300:])).numpy()
            zt = heads.text(torch.from_numpy(txt[300:])).numpy()
            drift = 1 - np.mean(np.sum(zi * zs(torch.from_numpy(img[300:])).numpy(), 1))
        return heads, float(np.mean(np.argmax(zt @ zi.T, 1) == np.arange(100))), drift

    free, r1_free, drift_free = trained(0.0)
    held, r1_held, drift_held = trained(5.0)
    assert r1_free > 0.3 and r1_held > 0.1  # held-out pairs meet (chance 0.01), even with the anchor
    assert drift_held < drift_free  # the anchor keeps new items nearer their zero-shot vectors
    # save/load: the classifier comes back from the package, the toy name embeddings from heads.pt
    save_heads(free, cfg, tmp_path, {"stats": {}})
    loaded, meta = load_heads(tmp_path)
    assert meta["config"]["kind"] == "anchored" and meta["zeroshot"]["top_k"] == 5
    assert torch.allclose(loaded.image.anchor.classes, zs.classes)
    with torch.no_grad():
        assert np.allclose(loaded.text(torch.from_numpy(txt[:4])).numpy(), free.text(torch.from_numpy(txt[:4])).numpy(), atol=1e-6)


# ----------------------------------------------------------------------------- open_clip: adapter + fine-tuning
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
COLOURS = {"red": (220, 20, 20), "green": (20, 180, 40), "blue": (20, 40, 220), "yellow": (230, 220, 20), "black": (10, 10, 10),
           "white": (250, 250, 250), "purple": (130, 30, 160), "orange": (250, 140, 0), "pink": (250, 150, 200), "grey": (128, 128, 128),
           "brown": (120, 70, 20), "teal": (0, 128, 128)}


def colour_catalog(root):
    """A real catalog on disk: one plain-colour photo per item, its text names the colour."""
    from PIL import Image

    from retrieval.catalog import Catalog, Product

    products = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        path = root / f"{name}.png"
        Image.new("RGB", (40, 40), rgb).save(path)
        products.append(Product(str(i), f"{name} thing", colour=name, image_paths=[str(path)]))
    return Catalog(products, root=root)


def pairing_r1(enc, catalog):
    from retrieval.catalog import product_text

    zi = enc.encode_image([str(catalog.image_file(p)) for p in catalog.products])
    zt = enc.encode_text([product_text(p) for p in catalog.products])
    return float(np.mean(np.argmax(zt @ zi.T, 1) == np.arange(len(zt))))


def test_residual_adapter_on_a_frozen_open_clip_encoder(tmp_path):
    from retrieval.encoders import EncoderConfig, create_encoder
    from retrieval.encoders.adapter import AdapterEncoder, train_adapter

    torch.manual_seed(0)
    catalog = colour_catalog(tmp_path)
    random = create_encoder(EncoderConfig(name="openclip", model="whyrec-tiny-adapter", model_config=TINY_CLIP, threads=1))
    torch.save(random.model.state_dict(), tmp_path / "base.pt")  # a fixed frozen encoder (a random init differs per build)
    base_cfg = EncoderConfig(name="openclip", model="whyrec-tiny-adapter", pretrained=str(tmp_path / "base.pt"), model_config=TINY_CLIP, threads=1)
    base = create_encoder(base_cfg)
    before = pairing_r1(base, catalog)
    cfg = HeadTrainConfig(kind="adapter", hidden=128, epochs=150, batch_size=12, lr=5e-3, holdout=0.0, anchor=0.01, dropout=0.0)
    train_adapter(base, [catalog], tmp_path / "adapter", cfg, threads=1)
    adapted = create_encoder(EncoderConfig(**{**base_cfg.__dict__, "adapter": str(tmp_path / "adapter")}))
    assert isinstance(adapted, AdapterEncoder) and adapted.dim == base.dim == 32
    after = pairing_r1(adapted, catalog)
    assert after >= 0.9 and after > before, (before, after)  # random tiny CLIP pairs near chance (1/12)
    with pytest.raises(ValueError):  # an adapter is for the encoder it was trained on
        AdapterEncoder(FakeFreeEncoder(), tmp_path / "adapter")


def test_open_clip_contrastive_fine_tuning_from_the_cli(tmp_path):
    import yaml

    from api.cli import main
    from retrieval.encoders import EncoderConfig, create_encoder

    catalog = colour_catalog(tmp_path)
    catalog.save(tmp_path / "catalog")
    cfg = {"catalog": {"dir": str(tmp_path / "catalog")},
           "encoder": {"name": "openclip", "model": "whyrec-tiny-ft", "model_config": TINY_CLIP, "threads": 1},
           "encoder_train": {"epochs": 60, "batch_size": 12, "lr": 3e-4, "warmup_steps": 2, "holdout": 0.0, "workers": 0, "weight_decay": 0.0}}
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    before = pairing_r1(create_encoder(EncoderConfig(name="openclip", model="whyrec-tiny-ft", model_config=TINY_CLIP, threads=1)), catalog)
    assert main(["encoder", "train", "--config", str(tmp_path / "shop.yaml"), "--out", str(tmp_path / "ft")]) == 0
    import json

    meta = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert meta["stats"]["final_loss"] < meta["stats"]["first_loss"] and meta["stats"]["steps"] == 60
    tuned = create_encoder(EncoderConfig(**meta["use_with"]["encoder"], threads=1))  # the checkpoint loads back as an encoder
    after = pairing_r1(tuned, catalog)
    assert after >= 0.9 and after > before, (before, after)


@pytest.mark.slow
def test_zeroshot_encoder_needs_no_training_and_meets_colour_words(tmp_path):
    """The real towers: the ImageNet classifier, MiniLM names, the colour histogram; no heads."""
    from PIL import Image

    from retrieval.encoders import EncoderConfig, create_encoder

    enc = create_encoder(EncoderConfig(name="zeroshot", cache_dir=str(tmp_path / "cache"), threads=1))
    for name, rgb in (("black", (15, 15, 15)), ("red", (210, 25, 25))):
        im = Image.new("RGB", (120, 180), (255, 255, 255))
        im.paste(Image.new("RGB", (70, 120), rgb), (25, 30))
        im.save(tmp_path / f"{name}.png")
    images = enc.encode_image([str(tmp_path / "black.png"), str(tmp_path / "red.png")])
    words = enc.encode_text(["black", "red"])
    assert images.shape == (2, 384) == (2, enc.dim) and np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    sims = words @ images.T  # rows: words, columns: photos
    assert sims[0, 0] > sims[0, 1] and sims[1, 1] > sims[1, 0]
