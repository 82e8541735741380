"""Encoders behind one interface (`encode_text`, `encode_image` -> L2-normalised float32), made by
`create_encoder(cfg)` from an `EncoderConfig`."""
from __future__ import annotations

from retrieval.encoders.base import Encoder, EncoderConfig, ItemVectorConfig, encode_queries, item_vectors, l2_normalise

ENCODERS = ("lit", "zeroshot", "openclip")


def create_encoder(cfg: EncoderConfig) -> Encoder:
    """The encoder a config names (`lit`, the offline default; `zeroshot`, no training at all;
    `openclip`), wrapped in its residual adapter when `cfg.adapter` names one."""
    if cfg.name == "lit":
        from retrieval.encoders.lit import LitEncoder

        if not cfg.heads:
            raise ValueError("encoder.heads must name a folder of trained heads for the lit encoder")
        encoder = LitEncoder(cfg.heads, cfg.cache_dir, cfg.batch_size, cfg.threads, cfg.query_runtime, cfg.onnx_dir)
    elif cfg.name == "zeroshot":
        from retrieval.encoders.zeroshot import ZeroShotEncoder

        encoder = ZeroShotEncoder(cfg.cache_dir, cfg.batch_size, cfg.threads, query_runtime=cfg.query_runtime, onnx_dir=cfg.onnx_dir)
    elif cfg.name == "openclip":
        if cfg.query_runtime != "torch":
            raise ValueError("encoder.query_runtime onnx/int8 runs the MiniLM text tower (lit, zeroshot); openclip takes torch")
        from retrieval.encoders.openclip import OpenClipEncoder

        encoder = OpenClipEncoder(cfg.model, cfg.pretrained, cfg.model_config, cfg.batch_size, cfg.threads)
    else:
        raise ValueError(f"unknown encoder {cfg.name!r}; choose one of {', '.join(ENCODERS)}")
    if cfg.adapter:
        from retrieval.encoders.adapter import AdapterEncoder

        encoder = AdapterEncoder(encoder, cfg.adapter)
    return encoder


__all__ = ["ENCODERS", "Encoder", "EncoderConfig", "ItemVectorConfig", "create_encoder", "encode_queries", "item_vectors", "l2_normalise"]
