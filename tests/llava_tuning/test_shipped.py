"""The shipped adapter (data/demo/llava): small, and served by `LlavaExplainer(model="data/demo/llava")`
on a fresh model cache, as in a fresh clone (the base is assembled from the packaged weights on first
use). Slow: assembling the base de-quantises the packaged GGUF (~20-45 s)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "demo" / "llava"

pytestmark = pytest.mark.slow


def test_the_shipped_adapter_is_small_and_documented():
    files = {f.name: f.stat().st_size for f in SHIPPED.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "whyrec_model.json", "README.md"} <= set(files)
    assert sum(files.values()) < 20 * 2**20  # LoRA + projector only, not a model
    meta = json.loads((SHIPPED / "whyrec_model.json").read_text())
    assert meta["preset"]["name"] == "tiny-offline" and meta["init_projector"] == ""
    readme = (SHIPPED / "README.md").read_text()
    assert "whyrec synth generate --config configs/tune-tiny-offline.yaml" in readme
    assert "whyrec tune --config configs/tune-tiny-offline.yaml" in readme


def test_a_fresh_cache_serves_llava_rationales(tmp_path, monkeypatch):
    from llava_tuning.generate import GenerationSettings, LlavaExplainer
    from retrieval.catalog import Product
    from synth_data.explain import gather_evidence

    photo = REPO / "data" / "demo" / "images"
    image = next(iter(sorted(photo.rglob("*.jpg"))), None)
    if image is None:
        pytest.skip("no demo photo")
    ex = LlavaExplainer(model=str(SHIPPED), cache_dir=str(tmp_path / "models"), settings=GenerationSettings(max_new_tokens=48))
    assert list((tmp_path / "models").glob("llava-efficientnet-smollm2-*"))  # assembled here, from the packaged weights
    item = Product(id="x1", title="Strap top", description="Jersey top with narrow shoulder straps.",
                   attributes={"product_type": "Vest top", "colour": "Black", "pattern": "Solid", "index_group": "Ladieswear"},
                   colour="Black", image_paths=[str(image)])
    out = ex.explain_batch([("a black top", item, gather_evidence("a black top", item)),
                            ("a red dress", item, gather_evidence("a red dress", item))])
    assert len(out) == 2
    for r in out:
        assert r.text.strip()
        assert r.backend == "llava" or r.fallback_reason  # a replaced text always says why
