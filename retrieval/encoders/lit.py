"""`lit`: the offline default encoder. Two frozen pretrained towers + projection heads trained
contrastively (symmetric InfoNCE, learnable temperature) on the catalog's own image-text pairs.

Head kinds (all measured in bench/encoder_quality.py):
- `anchored`: the output space is the text tower's own (MiniLM). The image head is the zero-shot
  map (retrieval.encoders.zeroshot: ImageNet classes + colour, in MiniLM space) plus a learned,
  zero-initialised residual; the text head is MiniLM plus an optional zero-initialised residual.
  An `anchor` penalty keeps the residuals small, so items the heads never saw keep their
  zero-shot meaning and are not pushed below the trained ones.
- `residual`: linear projection + zero-initialised MLP residual into a new `dim`-d space.
- `linear`: a plain linear projection.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from retrieval.artifacts import atomic_path, atomic_write_json, atomic_write_text
from retrieval.catalog import Catalog, product_text
from retrieval.encoders.base import l2_normalise
from retrieval.encoders.towers import FeatureCache, ImageTower, TextTower, cached_features, image_key, open_image, text_key

log = logging.getLogger(__name__)

HEADS_FILE = "heads.pt"
HEAD_KINDS = ("anchored", "residual", "linear", "adapter")  # adapter: on a joint space (retrieval.encoders.adapter)
HEADS_META = "heads.json"


@dataclass
class HeadTrainConfig:
    """`encoder_train:` section: how the projection heads are trained."""

    kind: str = "residual"  # anchored | residual | linear
    dim: int = 256  # output size (anchored: always the text tower's)
    hidden: int = 1024  # MLP width of the residual (anchored image head: 0 = a linear residual)
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 0.05
    dropout: float = 0.1
    holdout: float = 0.1  # share of product groups held out of training (for evaluation)
    seed: int = 0
    anchor: float = 0.0  # anchored: weight of the penalty on the residuals' size (keeps the zero-shot meaning)
    text_residual: bool = True  # anchored: adapt the text side too (False: queries stay plain MiniLM)
    extra_catalogs: list[str] = field(default_factory=list)  # more catalogs whose pairs join training (mixing)
    residual_scale: float = 1.0  # anchored/adapter: the learned residual's weight when ENCODING (training uses 1);
    # below 1 pulls every vector towards the anchor (zero-shot) space, which is what transfers to other catalogs

    def __post_init__(self):
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {', '.join(HEAD_KINDS)}, not {self.kind!r}")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError("holdout must lie in [0, 1)")


class ProjectionHead(nn.Module):
    """Standardise tower features, project to the shared space, optionally add an MLP residual."""

    def __init__(self, in_dim: int, out_dim: int, kind: str = "residual", hidden: int = 1024, dropout: float = 0.1):
        super().__init__()
        if kind not in ("residual", "linear"):
            raise ValueError(f"head kind must be residual or linear, not {kind!r}")
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.proj = nn.Linear(in_dim, out_dim)
        self.mlp = None
        if kind == "residual":
            self.mlp = nn.Sequential(nn.LayerNorm(out_dim), nn.Linear(out_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def fit_standardiser(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj((x - self.mean) / self.std)
        if self.mlp is not None:
            y = y + self.mlp(y)
        return F.normalize(y, dim=-1)


class ResidualOnAnchor(nn.Module):
    """`normalise(anchor(x) + residual(x))`: a fixed base space plus a small learned correction.

    The residual's last layer starts at zero, so an untrained head is exactly the anchor.
    `residual_norm` (the mean squared size of the last correction) feeds the anchor penalty."""

    def __init__(self, anchor: nn.Module, in_dim: int, out_dim: int, hidden: int = 0, dropout: float = 0.1, trainable: bool = True):
        super().__init__()
        self.anchor = anchor
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.residual = None
        if trainable:
            layers = [nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)] if hidden else [nn.Linear(in_dim, out_dim)]
            self.residual = nn.Sequential(*layers)
            nn.init.zeros_(self.residual[-1].weight)
            nn.init.zeros_(self.residual[-1].bias)
        self.residual_norm = torch.tensor(0.0)
        self.scale = 1.0  # weight of the residual when encoding (eval mode); training always uses 1

    def fit_standardiser(self, x: torch.Tensor) -> None:
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-4))

    def forward(self, x: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """`base`: the anchor's output for `x` when already at hand (it is fixed: training computes it once)."""
        base = self.anchor(x) if base is None else base
        if self.residual is None:
            return base
        delta = self.residual((x - self.mean) / self.std)
        self.residual_norm = (delta ** 2).sum(-1).mean()
        return F.normalize(base + (delta if self.training else self.scale * delta), dim=-1)


class UnitNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


class Heads(nn.Module):
    def __init__(self, image_dim: int, text_dim: int, cfg: HeadTrainConfig, zeroshot: nn.Module | None = None):
        super().__init__()
        self.kind = cfg.kind
        if cfg.kind == "adapter":  # both sides already share a space: a residual on each, anchored at identity
            if image_dim != text_dim:
                raise ValueError(f"an adapter needs one joint space; got image {image_dim}-d and text {text_dim}-d")
            self.image = ResidualOnAnchor(UnitNorm(), image_dim, image_dim, cfg.hidden, cfg.dropout)
            self.text = ResidualOnAnchor(UnitNorm(), text_dim, text_dim, cfg.hidden, cfg.dropout, trainable=cfg.text_residual)
        elif cfg.kind == "anchored":
            if zeroshot is None:
                raise ValueError("anchored heads need the zero-shot map (retrieval.encoders.zeroshot.ZeroShotMap)")
            self.image = ResidualOnAnchor(zeroshot, image_dim, text_dim, cfg.hidden, cfg.dropout)
            self.text = ResidualOnAnchor(UnitNorm(), text_dim, text_dim, 0, cfg.dropout, trainable=cfg.text_residual)
        else:
            self.image = ProjectionHead(image_dim, cfg.dim, cfg.kind, cfg.hidden, cfg.dropout)
            self.text = ProjectionHead(text_dim, cfg.dim, cfg.kind, cfg.hidden, cfg.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.set_residual_scale(cfg.residual_scale)

    def set_residual_scale(self, scale: float) -> None:
        """How much of the learned residual encoding keeps (anchored and adapter heads; 1 = all)."""
        if not 0.0 <= scale <= 1.0:
            raise ValueError("residual_scale must lie in [0, 1]")
        for head in (self.image, self.text):
            if isinstance(head, ResidualOnAnchor):
                head.scale = float(scale)

    @property
    def dim(self) -> int:
        if self.kind == "anchored":
            return self.image.anchor.dim
        return self.image.mean.shape[0] if self.kind == "adapter" else self.image.proj.out_features

    def residual_penalty(self) -> torch.Tensor:
        return sum((h.residual_norm for h in (self.image, self.text) if isinstance(h, ResidualOnAnchor)), torch.tensor(0.0))


def split_groups(groups: Sequence[str], holdout: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out items: whole groups (all colour variants of a product) at once."""
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(uniq, size=int(round(holdout * len(uniq))), replace=False)) if holdout > 0 else set()
    return np.array([g in held for g in groups])


def train_heads(image_feats: np.ndarray, text_feats: np.ndarray, cfg: HeadTrainConfig, threads: int = 2,
                zeroshot: nn.Module | None = None) -> tuple[Heads, dict]:
    """Train image and text heads so each item's image and text meet (symmetric InfoNCE, plus the
    anchor penalty for `anchored` heads, which need `zeroshot`: the fixed image map)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(threads)
    xi = torch.from_numpy(np.asarray(image_feats, np.float32))
    xt = torch.from_numpy(np.asarray(text_feats, np.float32))
    heads = Heads(xi.shape[1], xt.shape[1], cfg, zeroshot)
    heads.image.fit_standardiser(xi)
    heads.text.fit_standardiser(xt)
    anchored = isinstance(heads.image, ResidualOnAnchor)
    if anchored:  # the anchors are fixed maps: their outputs are computed once, not every epoch
        with torch.no_grad():
            base_i, base_t = heads.image.anchor(xi), heads.text.anchor(xt)
    opt = torch.optim.AdamW(heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(xi)
    steps = cfg.epochs * max(1, math.ceil(n / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    losses = []
    heads.train()
    bar = tqdm(range(cfg.epochs), desc=f"training {cfg.kind} heads", unit="epoch")
    for _ in bar:
        perm = torch.randperm(n)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue
            if anchored:
                zi, zt = heads.image(xi[idx], base_i[idx]), heads.text(xt[idx], base_t[idx])
            else:
                zi, zt = heads.image(xi[idx]), heads.text(xt[idx])
            logits = heads.logit_scale.exp().clamp(max=100) * zi @ zt.T
            labels = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            if cfg.anchor:
                loss = loss + cfg.anchor * heads.residual_penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    heads.eval()
    stats = {"train_items": n, "seconds": round(time.time() - t0, 1), "final_loss": float(np.mean(losses[-10:])),
             "temperature": float(1 / heads.logit_scale.detach().exp())}
    return heads, stats


def save_heads(heads: Heads, cfg: HeadTrainConfig, directory: str | Path, meta: dict) -> Path:
    """heads.pt + heads.json, each written atomically (a reader sees the old file or the new one)."""
    directory = Path(directory)
    with atomic_path(directory / HEADS_FILE) as tmp:
        torch.save(heads.state_dict(), tmp)
    on_anchor = cfg.kind in ("anchored", "adapter")
    image_dim = heads.image.mean.shape[0] if on_anchor else heads.image.proj.in_features
    text_dim = heads.text.mean.shape[0] if on_anchor else heads.text.proj.in_features
    info = {"config": asdict(cfg), "image_tower": ImageTower.name, "text_tower": TextTower.name,  # meta may name other towers (adapters)
            "image_dim": int(image_dim), "text_dim": int(text_dim), **meta}
    if cfg.kind == "anchored":
        info["zeroshot"] = asdict(heads.image.anchor.settings)
    atomic_write_json(directory / HEADS_META, info, indent=2)
    return directory


def load_heads(directory: str | Path, towers: tuple[str, str] = (ImageTower.name, TextTower.name)) -> tuple[Heads, dict]:
    """Heads saved by `save_heads`; `towers` are the (image, text) feature sources they must have been trained on."""
    directory = Path(directory)
    meta_path = directory / HEADS_META
    if not meta_path.exists():
        raise FileNotFoundError(f"no trained heads at {directory}; run `whyrec encoder train` first")
    meta = json.loads(meta_path.read_text())
    if (meta["image_tower"], meta["text_tower"]) != tuple(towers):
        raise ValueError(f"heads at {directory} were trained for other towers ({meta['image_tower']}, {meta['text_tower']})")
    cfg = HeadTrainConfig(**meta["config"])
    zeroshot = None
    if cfg.kind == "anchored":  # the class/colour embeddings come from heads.pt, the classifier from the package
        from retrieval.encoders.zeroshot import COLOUR_NAMES, ZeroShotMap, ZeroShotSettings

        zeroshot = ZeroShotMap(np.zeros((1000, meta["text_dim"]), np.float32), np.zeros((len(COLOUR_NAMES), meta["text_dim"]), np.float32),
                               ZeroShotSettings(**meta.get("zeroshot", {})))
    heads = Heads(meta["image_dim"], meta["text_dim"], cfg, zeroshot)
    heads.load_state_dict(torch.load(directory / HEADS_FILE, map_location="cpu", weights_only=True))
    return heads.eval(), meta


class Towers:
    """Both frozen towers with their feature caches (loaded lazily: the text tower alone serves queries)."""

    def __init__(self, cache_dir: str | Path | None = "var/cache/features", batch_size: int = 32, threads: int = 2,
                 query_runtime: str = "torch", onnx_dir: str | Path = "var/cache/onnx"):
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.threads = threads
        self.query_runtime = query_runtime
        self.onnx_dir = onnx_dir
        self._image: ImageTower | None = None
        self._text: TextTower | None = None
        self._query_text = None
        self._caches: dict[str, FeatureCache] = {}

    def _cache(self, name: str, dim: int) -> FeatureCache | None:
        if self.cache_dir is None:
            return None
        if name not in self._caches:
            self._caches[name] = FeatureCache(self.cache_dir, name, dim)
        return self._caches[name]

    @property
    def image(self) -> ImageTower:
        if self._image is None:
            self._image = ImageTower()
        return self._image

    @property
    def text(self) -> TextTower:
        if self._text is None:
            self._text = TextTower()
        return self._text

    @property
    def query_text(self):
        """The text tower queries go through: the torch one, or MiniLM on ONNX Runtime (`query_runtime`)."""
        if self.query_runtime == "torch":
            return self.text
        if self._query_text is None:
            from retrieval.encoders.onnx_text import OnnxTextTower

            self._query_text = OnnxTextTower(self.query_runtime, self.onnx_dir, self.threads)
        return self._query_text

    def query_text_features(self, texts: Sequence[str]) -> np.ndarray:
        """Text features of a few queries (never cached on disk), on the configured query runtime."""
        if self.query_runtime == "torch":
            torch.set_num_threads(self.threads)
        return self.query_text.features(list(texts))

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        torch.set_num_threads(self.threads)
        if len(texts) <= self.batch_size:  # queries: never written to the cache
            return self.text.features(texts)
        cache = self._cache(TextTower.name, TextTower.dim)
        return cached_features(cache, [text_key(t) for t in texts], list(texts), self.text.features, 256, "text tower")

    def image_features(self, images: Sequence) -> np.ndarray:
        torch.set_num_threads(self.threads)
        paths = all(isinstance(i, (str, Path)) for i in images)
        if not paths or len(images) <= self.batch_size:
            return self.image.features([open_image(i) for i in images])
        cache = self._cache(ImageTower.name, ImageTower.dim)
        load = lambda batch: self.image.features([open_image(p) for p in batch])  # noqa: E731
        return cached_features(cache, [image_key(p) for p in images], list(images), load, self.batch_size, "image tower")

    def catalog_features(self, catalog: Catalog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image features, text features, has-image mask) for every item, cached."""
        text = self.text_features([product_text(p) for p in catalog.products])
        files = [catalog.image_file(p) for p in catalog.products]
        has = np.array([f is not None for f in files])
        image = np.zeros((len(files), ImageTower.dim), np.float32)
        if has.any():
            image[has] = self.image_features([str(f) for f in files if f is not None])
        return image, text, has


class LitEncoder:
    """Frozen towers + trained heads: `encode_text` / `encode_image` into one shared space."""

    name = "lit"

    def __init__(self, heads_dir: str | Path, cache_dir: str | Path | None = "var/cache/features", batch_size: int = 32, threads: int = 2,
                 query_runtime: str = "torch", onnx_dir: str | Path = "var/cache/onnx"):
        self.heads, self.meta = load_heads(heads_dir)
        self.dim = self.heads.dim
        self.towers = Towers(cache_dir, batch_size, threads, query_runtime, onnx_dir)

    @torch.inference_mode()
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Shopper queries, through the query runtime's text tower (items use `encode_text`)."""
        feats = torch.from_numpy(self.towers.query_text_features(list(texts)))
        return l2_normalise(self.heads.text(feats).numpy())

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        feats = torch.from_numpy(self.towers.text_features(list(texts)))
        return l2_normalise(self.heads.text(feats).numpy())

    @torch.inference_mode()
    def encode_image(self, images: Sequence) -> np.ndarray:
        feats = torch.from_numpy(self.towers.image_features(list(images)))
        return l2_normalise(self.heads.image(feats).numpy())


def training_pairs(catalogs: Sequence[Catalog], towers: Towers, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Image and text tower features of every item with a photo outside the held-out groups, over
    all `catalogs` (mixing catalogs), and the ids held out (whole groups, per catalog)."""
    images, texts, held_ids = [], [], []
    for catalog in catalogs:
        image, text, has = towers.catalog_features(catalog)
        held = split_groups(catalog.groups(), holdout, seed)
        images.append(image[has & ~held])
        texts.append(text[has & ~held])
        held_ids += [p.id for p, h in zip(catalog.products, held) if h]
    return np.concatenate(images), np.concatenate(texts), held_ids


def train_encoder(catalog: Catalog, out: str | Path, cfg: HeadTrainConfig | None = None, cache_dir: str | Path = "var/cache/features",
                  threads: int = 2, command: str = "") -> dict:
    """`whyrec encoder train`: tower features (cached) -> heads trained on non-held-out items -> `out`.
    `cfg.extra_catalogs` (catalog folders) add their pairs to training, with the same group split."""
    cfg = cfg or HeadTrainConfig()
    if cfg.kind == "adapter":
        raise ValueError("kind adapter trains on an encoder's joint space: use `whyrec encoder train --adapter` with that encoder")
    towers = Towers(cache_dir, threads=threads)
    catalogs = [catalog] + [Catalog.load(d) for d in cfg.extra_catalogs]
    image, text, held_ids = training_pairs(catalogs, towers, cfg.holdout, cfg.seed)
    if len(image) < 2:
        raise ValueError("need at least two items with images outside the held-out split to train heads")
    zeroshot = None
    if cfg.kind == "anchored":
        from retrieval.encoders.zeroshot import ZeroShotMap

        zeroshot = ZeroShotMap.build(towers.text_features)
    heads, stats = train_heads(image, text, cfg, threads, zeroshot)
    meta = {"stats": stats, "catalog_items": sum(len(c) for c in catalogs), "held_out_items": len(held_ids), "command": command}
    save_heads(heads, cfg, out, meta)
    atomic_write_text(Path(out) / "held_out_ids.txt", "\n".join(held_ids))
    log.info("trained %s heads on %d pairs in %.1fs", cfg.kind, len(image), stats["seconds"])
    return meta
