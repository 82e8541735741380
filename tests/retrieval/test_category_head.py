import numpy as np
import pytest

from retrieval.category_head import CategoryHead, CategoryHeadConfig, fit, scores, train_and_score


def clustered(n_per=30, labels=("Trousers", "Dress", "Sneakers", "Bookcase"), dim=16, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(labels), dim))
    x = np.concatenate([c + noise * rng.standard_normal((n_per, dim)) for c in centres]).astype(np.float32)
    y = [lab for lab in labels for _ in range(n_per)]
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_linear_head_names_the_category_of_unseen_photos_and_round_trips(tmp_path):
    x, y = clustered()
    xt, yt = clustered(n_per=10, seed=0, noise=0.5)  # same centres, new draws
    rng = np.random.default_rng(1)
    xt = xt + 0.05 * rng.standard_normal(xt.shape).astype(np.float32)
    head = fit(x, y, CategoryHeadConfig())
    s = scores(head, xt, yt)
    assert s["top1"] > 0.9 and s["macro_f1"] > 0.9 and s["top5"] == 1.0
    assert s["items"] == 40 and s["labels_in_test"] == 4
    guesses = head.predict(xt[:1], k=3)[0]
    assert guesses[0][0] == yt[0] and len(guesses) == 3 and guesses[0][1] >= guesses[1][1]
    head.meta = {"note": "t"}
    head.save(tmp_path / "cat")
    again = CategoryHead.load(tmp_path / "cat")
    assert again.labels == head.labels and np.allclose(again.probabilities(xt), head.probabilities(xt))
    with pytest.raises(ValueError):
        head.predict(np.zeros((1, 8), np.float32))  # vectors of another encoder


def test_unseen_labels_count_as_misses_and_two_classes_work():
    x, y = clustered(labels=("Vase", "Rug"))
    head = fit(x, y, CategoryHeadConfig())
    assert head.labels == ["Rug", "Vase"] and head.weight.shape == (2, 16)
    assert scores(head, x, y)["top1"] > 0.95
    s = scores(head, x[:4], ["Lamp"] * 4)
    assert s["top1"] == 0.0 and s["test_items_with_unseen_label"] == 1.0


def test_held_out_split_keeps_groups_out_of_training():
    from retrieval.catalog import Catalog, Product

    x, y = clustered(n_per=20)
    products = [Product(str(i), f"item {i}", attributes={"product_type": lab}, group_id=f"g{i // 2}") for i, lab in enumerate(y)]
    head, report = train_and_score(x, Catalog(products), np.ones(len(y), bool), CategoryHeadConfig(holdout=0.25, seed=0))
    held = report["held_out"]
    assert report["train_items"] + held["items"] == len(y) and 12 <= held["items"] <= 28
    assert held["top1"] > 0.8
