"""A linear category head on frozen image vectors: photo -> product type ("predicted category").

The head is multinomial logistic regression (scikit-learn) on the configured encoder's image vectors,
so it costs nothing at serving time beyond the vector `/search/image` computes anyway. Trained on
the catalog's own labels (`product_type`, else the last category level, or any attribute named by
`field`) with whole product groups held out; the held-out top-1/3/5 accuracy and macro-F1 are
saved with it (`category_head.json`) and printed by `whyrec encoder category` and
bench/category_head.py.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.artifacts import atomic_path, atomic_write_json
from retrieval.catalog import Catalog, Product

log = logging.getLogger(__name__)

WEIGHTS_FILE = "category_head.npz"
META_FILE = "category_head.json"


@dataclass
class CategoryHeadConfig:
    """`category_head:` section."""

    field: str = ""  # "" = product_type, else the last category level; or an attribute name, or "category"
    holdout: float = 0.1  # share of product groups held out for the reported scores
    seed: int = 0
    min_count: int = 2  # labels with fewer training photos are left out of the head
    C: float = 10.0  # inverse L2 strength of the logistic regression
    max_iter: int = 500

    def __post_init__(self):
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError("holdout must lie in [0, 1)")
        if self.C <= 0:
            raise ValueError("C must be positive")


def item_label(p: Product, field: str = "") -> str:
    if field == "category":
        return " > ".join(p.category)
    if field:
        return p.attributes.get(field, "")
    return p.attributes.get("product_type") or (p.category[-1] if p.category else "")


class CategoryHead:
    """Softmax over `labels` of `vectors @ weight.T + bias`."""

    def __init__(self, labels: Sequence[str], weight: np.ndarray, bias: np.ndarray, meta: dict | None = None):
        self.labels = list(labels)
        self.weight = np.asarray(weight, np.float32)
        self.bias = np.asarray(bias, np.float32)
        self.meta = meta or {}
        if self.weight.ndim != 2 or self.weight.shape[0] != len(self.labels) or self.bias.shape != (len(self.labels),):
            raise ValueError("category head: one weight row and one bias per label")

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.atleast_2d(np.asarray(vectors, np.float32))
        if vectors.shape[1] != self.dim:
            raise ValueError(f"category head expects {self.dim}-d image vectors, got {vectors.shape[1]}-d; retrain it for this encoder")
        logits = vectors @ self.weight.T + self.bias
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def predict(self, vectors: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """The k most likely labels per vector, with their probabilities."""
        p = self.probabilities(vectors)
        top = np.argsort(-p, axis=1)[:, :k]
        return [[(self.labels[j], float(p[i, j])) for j in row] for i, row in enumerate(top)]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            np.savez(tmp, weight=self.weight, bias=self.bias)
        atomic_write_json(directory / META_FILE, {**self.meta, "labels": self.labels}, indent=1)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "CategoryHead":
        directory = Path(directory)
        if not (directory / META_FILE).exists():
            raise FileNotFoundError(f"no category head at {directory}; run `whyrec encoder category` first")
        meta = json.loads((directory / META_FILE).read_text())
        data = np.load(directory / WEIGHTS_FILE, allow_pickle=False)
        return cls(meta.pop("labels"), data["weight"], data["bias"], meta)


def fit(vectors: np.ndarray, labels: Sequence[str], cfg: CategoryHeadConfig) -> CategoryHead:
    """Multinomial logistic regression on the vectors of labels seen at least `min_count` times."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels)
    names, counts = np.unique(labels, return_counts=True)
    keep_labels = set(names[counts >= cfg.min_count])
    keep = np.array([y in keep_labels for y in labels])
    if len(keep_labels) < 2:
        raise ValueError(f"need at least two labels with {cfg.min_count}+ photos to train a category head")
    model = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter)
    model.fit(vectors[keep], labels[keep])
    weight, bias = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # scikit-learn keeps one row for two classes: softmax([0, z]) = sigmoid(z)
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
    return CategoryHead([str(c) for c in model.classes_], weight, bias)


def scores(head: CategoryHead, vectors: np.ndarray, labels: Sequence[str]) -> dict:
    """Top-1/3/5 accuracy and macro-F1 (over the true labels present) of the head's predictions."""
    from sklearn.metrics import f1_score

    if len(labels) == 0:
        raise ValueError("no labelled items to score the category head on")
    p = head.probabilities(vectors)
    order = np.argsort(-p, axis=1)
    names = np.array(head.labels)
    truth = np.asarray(labels)
    out = {f"top{k}": round(float(np.mean([t in names[row[:k]] for t, row in zip(truth, order)])), 4) for k in (1, 3, 5)}
    pred = names[order[:, 0]]
    out["macro_f1"] = round(float(f1_score(truth, pred, labels=sorted(set(truth)), average="macro", zero_division=0)), 4)
    out["items"] = int(len(truth))
    out["labels_in_test"] = int(len(set(truth)))
    out["test_items_with_unseen_label"] = round(float(np.mean([t not in set(head.labels) for t in truth])), 4)
    return out


def train_and_score(vectors: np.ndarray, catalog: Catalog, has: np.ndarray, cfg: CategoryHeadConfig) -> tuple[CategoryHead, dict]:
    """Fit on the training groups, score on the held-out groups (items with a photo and a label)."""
    from retrieval.encoders.lit import split_groups

    labels = np.array([item_label(p, cfg.field) for p in catalog.products])
    held = split_groups(catalog.groups(), cfg.holdout, cfg.seed)
    usable = has & (labels != "")
    train, test = usable & ~held, usable & held
    t0 = time.time()
    head = fit(vectors[train], labels[train], cfg)
    report = {"train_items": int(train.sum()), "labels": len(head.labels), "fit_seconds": round(time.time() - t0, 1),
              "held_out": scores(head, vectors[test], labels[test]) if test.any() else None}
    return head, report


def catalog_image_vectors(encoder, catalog: Catalog) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's image vector of every item with a photo (zeros elsewhere) and the has-photo mask."""
    files = [catalog.image_file(p) for p in catalog.products]
    has = np.array([f is not None for f in files])
    vectors = np.zeros((len(files), encoder.dim), np.float32)
    if has.any():
        vectors[has] = encoder.encode_image([str(f) for f in files if f is not None])
    return vectors, has


def train_category_head_from_config(config, catalog_dir: str | None = None, out: str | None = None, field: str | None = None,
                                    holdout: float | None = None, command: str = "", save: bool = True) -> dict:
    """`whyrec encoder category`: image vectors of the configured encoder -> head -> saved + report."""
    from retrieval.config import load_yaml, section
    from retrieval.encoders import EncoderConfig, create_encoder
    from retrieval.search import CatalogConfig

    cfg = config if isinstance(config, dict) else load_yaml(config)
    catalog_dir = catalog_dir or section(cfg, "catalog", CatalogConfig).dir
    ecfg = section(cfg, "encoder", EncoderConfig)
    hcfg = section(cfg, "category_head", CategoryHeadConfig, field=field, holdout=holdout)
    out = out or ecfg.category_head
    if save and not out:
        raise ValueError("give --out or encoder.category_head in the config")
    catalog = Catalog.load(catalog_dir)
    encoder = create_encoder(ecfg)
    vectors, has = catalog_image_vectors(encoder, catalog)
    head, report = train_and_score(vectors, catalog, has, hcfg)
    report = {"catalog": str(catalog_dir), "encoder": getattr(encoder, "name", ecfg.name), "heads": ecfg.heads,
              "field": hcfg.field or "product_type|category", **report}
    head.meta = {**report, "config": asdict(hcfg), "command": command}
    if save:
        head.save(out)
        report["saved"] = str(out)
    return report


def load_for_config(config) -> CategoryHead | None:
    """The category head a config names (encoder.category_head), or None when it names none or
    none was trained yet (the service then simply predicts no category)."""
    from retrieval.config import load_yaml, section
    from retrieval.encoders import EncoderConfig

    cfg = config if isinstance(config, dict) else load_yaml(config)
    path = section(cfg, "encoder", EncoderConfig).category_head
    if not path or not (Path(path) / META_FILE).exists():
        if path:
            log.warning("no category head at %s (run `whyrec encoder category`); predicted categories are off", path)
        return None
    return CategoryHead.load(path)
