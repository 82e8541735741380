"""Encoders behind one interface (`encode_text`, `encode_image` -> L2-normalised float32), made by
`create_encoder(cfg)` from an `EncoderConfig`."""
from __future__ import annotations

from retrieval.encoders.base import Encoder, EncoderConfig, ItemVectorConfig, item_vectors, l2_normalise


def create_encoder(cfg: EncoderConfig) -> Encoder:
    """The encoder a config names: `lit` (offline default) or `openclip`."""
    if cfg.name == "lit":
        from retrieval.encoders.lit import LitEncoder

        if not cfg.heads:
            raise ValueError("encoder.heads must name a folder of trained heads for the lit encoder")
        return LitEncoder(cfg.heads, cfg.cache_dir, cfg.batch_size, cfg.threads)
    if cfg.name == "openclip":
        from retrieval.encoders.openclip import OpenClipEncoder

        return OpenClipEncoder(cfg.model, cfg.pretrained, cfg.model_config, cfg.batch_size, cfg.threads)
    raise ValueError(f"unknown encoder {cfg.name!r}; choose lit or openclip")


__all__ = ["Encoder", "EncoderConfig", "ItemVectorConfig", "create_encoder", "item_vectors", "l2_normalise"]
