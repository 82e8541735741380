"""`openclip`: any open_clip architecture, with a pretrained tag or a local checkpoint file.

Users with CLIP weights (often their own fine-tuned CLIP) point `encoder.model` at the architecture
and `encoder.pretrained` at a tag or a file. Tags download from a hub, which this offline machine
cannot do; a local file always works. Tests build a tiny random config of the same classes.

`finetune_openclip` (`whyrec encoder train` with `encoder: {name: openclip}`) fine-tunes the model
contrastively on a catalog's image-text pairs (open_clip's ClipLoss, AdamW, warmup + cosine,
bf16 autocast on CUDA, optional LiT-style locked towers) and writes `model.pt`, a checkpoint
`encoder.pretrained` loads back. Whole product groups are held out as for the lit heads.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from retrieval.artifacts import atomic_path, atomic_write_json, atomic_write_text
from retrieval.catalog import Catalog, product_text
from retrieval.encoders.base import l2_normalise
from retrieval.encoders.towers import open_image

log = logging.getLogger(__name__)

CHECKPOINT = "model.pt"


def create_model(model: str, pretrained: str | None = None, model_config: dict | None = None, device: str = "cpu"):
    """(model, train transform, eval transform, tokenizer) for an architecture name, optionally given inline."""
    import open_clip

    if model_config:  # an architecture given inline (tests: a tiny random one)
        open_clip.factory._MODEL_CONFIGS[model] = model_config
    net, train_tf, eval_tf = open_clip.create_model_and_transforms(model, pretrained=pretrained or None, device=device)
    return net, train_tf, eval_tf, open_clip.get_tokenizer(model)


class OpenClipEncoder:
    name = "openclip"

    def __init__(self, model: str = "ViT-B-32", pretrained: str | None = None, model_config: dict | None = None,
                 batch_size: int = 32, threads: int = 2):
        self.threads = threads
        self.batch_size = batch_size
        self.model, _, self.preprocess, self.tokenizer = create_model(model, pretrained, model_config)
        self.model.eval()
        with torch.inference_mode():
            self.dim = int(self.model.encode_text(self.tokenizer(["probe"])).shape[-1])
        self.name = f"openclip:{model}:{pretrained or 'random'}"

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        torch.set_num_threads(self.threads)
        out = []
        for i in tqdm(range(0, len(texts), self.batch_size), desc="openclip text", disable=len(texts) <= self.batch_size):
            out.append(self.model.encode_text(self.tokenizer(list(texts[i : i + self.batch_size]))).float().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    @torch.inference_mode()
    def encode_image(self, images: Sequence) -> np.ndarray:
        torch.set_num_threads(self.threads)
        out = []
        for i in tqdm(range(0, len(images), self.batch_size), desc="openclip images", disable=len(images) <= self.batch_size):
            batch = torch.stack([self.preprocess(open_image(im)) for im in images[i : i + self.batch_size]])
            out.append(self.model.encode_image(batch).float().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)


@dataclass
class ClipTrainConfig:
    """`encoder_train:` section when `encoder.name` is openclip: contrastive fine-tuning."""

    epochs: int = 5
    batch_size: int = 256  # per step; contrastive learning wants it large (GPU)
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 100
    holdout: float = 0.1  # share of product groups held out (for evaluation)
    seed: int = 0
    lock_image: bool = False  # LiT: keep the image tower frozen, tune the text tower only
    lock_text: bool = False
    grad_checkpointing: bool = False
    device: str = "auto"  # auto = cuda when available
    workers: int = 4  # DataLoader processes decoding photos
    extra_catalogs: list[str] = field(default_factory=list)  # more catalogs whose pairs join training

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2")
        if not 0.0 <= self.holdout < 1.0:
            raise ValueError("holdout must lie in [0, 1)")


class PairDataset(torch.utils.data.Dataset):
    """(transformed photo, tokenised product text) per catalog item."""

    def __init__(self, files: Sequence[str], texts: Sequence[str], transform, tokenizer):
        self.files, self.texts, self.transform, self.tokenizer = list(files), list(texts), transform, tokenizer

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        return self.transform(open_image(self.files[i])), self.tokenizer([self.texts[i]])[0]


def catalog_pairs(catalogs: Sequence[Catalog], holdout: float, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Photo files and product texts of every item outside the held-out groups; the held-out ids."""
    from retrieval.encoders.lit import split_groups

    files, texts, held_ids = [], [], []
    for catalog in catalogs:
        held = split_groups(catalog.groups(), holdout, seed)
        for p, h in zip(catalog.products, held):
            f = catalog.image_file(p)
            if h:
                held_ids.append(p.id)
            elif f is not None:
                files.append(str(f))
                texts.append(product_text(p))
    return files, texts, held_ids


def finetune_openclip(catalogs: Sequence[Catalog], out: str | Path, cfg: ClipTrainConfig, model: str, pretrained: str | None = None,
                      model_config: dict | None = None, threads: int = 2, command: str = "") -> dict:
    """Fine-tune an open_clip model on the catalogs' image-text pairs; write `out/model.pt` (+ json)."""
    from open_clip.loss import ClipLoss

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    net, train_tf, _, tokenizer = create_model(model, pretrained, model_config, device)
    if cfg.lock_image:
        net.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    if cfg.lock_text:
        net.lock_text_tower(unlocked_layers=0)
    if cfg.grad_checkpointing:
        net.set_grad_checkpointing(True)
    files, texts, held_ids = catalog_pairs(catalogs, cfg.holdout, cfg.seed)
    if len(files) < 2:
        raise ValueError("need at least two items with photos outside the held-out split to fine-tune")
    loader = torch.utils.data.DataLoader(PairDataset(files, texts, train_tf, tokenizer), batch_size=min(cfg.batch_size, len(files)),
                                         shuffle=True, drop_last=True, num_workers=cfg.workers, pin_memory=device == "cuda",
                                         persistent_workers=cfg.workers > 0)
    # open_clip's recipe: no weight decay on gains, biases, embeddings and the temperature
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    flat = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    opt = torch.optim.AdamW([{"params": [p for n, p in params if flat(n, p)], "weight_decay": 0.0},
                             {"params": [p for n, p in params if not flat(n, p)], "weight_decay": cfg.weight_decay}],
                            lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    total = cfg.epochs * len(loader)
    warmup = min(cfg.warmup_steps, max(1, total // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    loss_fn = ClipLoss()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    t0, losses = time.time(), []
    net.train()
    for epoch in range(cfg.epochs):
        bar = tqdm(loader, desc=f"fine-tuning {model} epoch {epoch + 1}/{cfg.epochs}", unit="batch")
        for images, tokens in bar:
            images, tokens = images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)
            with autocast:
                zi = net.encode_image(images, normalize=True)
                zt = net.encode_text(tokens, normalize=True)
                loss = loss_fn(zi, zt, net.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                net.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    net.eval()
    out = Path(out)
    with atomic_path(out / CHECKPOINT) as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
    stats = {"train_pairs": len(files), "steps": len(losses), "seconds": round(time.time() - t0, 1), "device": device,
             "first_loss": losses[0] if losses else None, "final_loss": float(np.mean(losses[-20:])) if losses else None}
    meta = {"model": model, "pretrained": pretrained, "model_config": model_config or {}, "config": asdict(cfg), "stats": stats,
            "held_out_items": len(held_ids), "command": command,
            "use_with": {"encoder": {"name": "openclip", "model": model, "pretrained": str(out / CHECKPOINT),
                                     **({"model_config": model_config} if model_config else {})}}}
    atomic_write_json(out / "finetune.json", meta, indent=2)
    atomic_write_text(out / "held_out_ids.txt", "\n".join(held_ids))
    log.info("fine-tuned %s on %d pairs (%d steps) in %.1fs on %s", model, len(files), len(losses), stats["seconds"], device)
    return meta
