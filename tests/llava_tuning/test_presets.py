"""Presets as data, the factory, and the llava-1.5-7b QLoRA recipe on a tiny random LLaVA of the same classes."""
from __future__ import annotations

import pytest
import torch

from llava_tuning.presets import (PRESETS, create_model, get_preset, lora_config, prepare_for_training,
                                  quantization_config, tiny_tokenizer)


def test_presets_by_name_yaml_and_overrides(tmp_path):
    p = get_preset("tiny-offline", cache_dir="/x", image_size=None)
    assert p.cache_dir == "/x" and p.image_size == 224 and PRESETS["tiny-offline"].cache_dir == "var/cache/models"
    yaml = tmp_path / "m.yaml"
    yaml.write_text("model:\n  name: mine\n  builder: random\n  image_size: 32\n  lora: {r: 4}\n")
    mine = get_preset(str(yaml))
    assert (mine.name, mine.image_size, mine.lora.r, mine.lora.alpha) == ("mine", 32, 4, 32)
    with pytest.raises(ValueError, match="unknown model preset"):
        get_preset("gpt-9")
    yaml.write_text("model:\n  imag_size: 32\n")
    with pytest.raises(ValueError, match="imag_size"):
        get_preset(str(yaml))
    with pytest.raises(ValueError, match="builder"):
        create_model("tiny-random", builder="nope")


@pytest.fixture(scope="module")
def tiny_llava_hf_dir(tmp_path_factory):
    """A llava-hf style directory (CLIP vision + Llama text, tokenizer, CLIP image processor), tiny and random."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    d = tmp_path_factory.mktemp("llava-hf")
    tok = tiny_tokenizer()
    tok.add_tokens(["<image>"], special_tokens=True)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=28, patch_size=14, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=8, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                      image_seq_length=4)  # (28/14)^2 patches; the CLS token is dropped ("default" strategy)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}).save_pretrained(d)
    return str(d)


def test_qlora_quantisation_and_lora_configs_build():
    preset = get_preset("llava-1.5-7b")
    q = quantization_config(preset)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert {"vision_tower", "multi_modal_projector"} <= set(q.llm_int8_skip_modules)
    lora = lora_config(preset)
    assert (lora.r, lora.lora_alpha) == (64, 16) and lora.modules_to_save == ["multi_modal_projector"]
    with pytest.raises(ValueError, match="nf4"):
        quantization_config(get_preset("tiny-offline"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU behaviour")
def test_nf4_without_cuda_is_a_clear_error(tiny_llava_hf_dir):
    with pytest.raises(ValueError, match="CUDA"):
        create_model("llava-1.5-7b", model_path=tiny_llava_hf_dir)


def test_llava_preset_lora_lands_on_the_language_model_only(tiny_llava_hf_dir):
    """The 7b recipe on a tiny model of the same classes: CLIP's attention also has q_proj/k_proj/...,
    and LoRA must not touch it. The kbit preparation path (prepare_model_for_kbit_training) runs too."""
    bundle = create_model("llava-1.5-7b", model_path=tiny_llava_hf_dir, quantization="none")
    assert bundle.processor.num_image_tokens == 4 and bundle.processor.chat_format == "llava-v1"
    bundle.preset = get_preset(bundle.preset, quantization="nf4")  # exercise the QLoRA preparation on CPU
    model = prepare_for_training(bundle, "lora")
    lora_names = [n for n, _ in model.named_modules() if n.endswith("lora_A")]
    assert len(lora_names) == 2 * 7  # 2 layers x (q, k, v, o, gate, up, down)
    assert all("language_model" in n and "vision_tower" not in n for n in lora_names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "multi_modal_projector" in n for n in trainable)
    assert model.base_model.model.is_gradient_checkpointing
    # a training step runs through the masked loss
    from llava_tuning.data import masked_loss
    from PIL import Image

    enc = bundle.processor.encode([{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "Red."}])
    batch = bundle.processor.pad([enc])
    batch["pixel_values"] = bundle.processor.pixel_values([Image.new("RGB", (40, 40), (255, 0, 0))])
    model.train()
    loss, n = masked_loss(model, batch)
    (loss / n).backward()
    assert all(p.grad is not None for n_, p in model.named_parameters() if p.requires_grad and "lora_B" in n_)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="4-bit NF4 loading needs CUDA (bitsandbytes)")
def test_nf4_loading_on_cuda(tiny_llava_hf_dir):
    bundle = create_model("llava-1.5-7b", model_path=tiny_llava_hf_dir)
    import bitsandbytes as bnb

    lm_4bit = [n for n, m in bundle.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert lm_4bit and all("language_model" in n for n in lm_4bit)
    model = prepare_for_training(bundle, "lora")
    assert any(p.requires_grad for p in model.parameters())


def test_accelerate_configs_parse():
    """The launch configs in configs/accelerate are valid for `accelerate launch`."""
    from pathlib import Path

    from accelerate.commands.config.config_args import ClusterConfig

    root = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
    ddp = ClusterConfig.from_yaml_file(root / "ddp.yaml")
    assert ddp.distributed_type == "MULTI_GPU" and ddp.mixed_precision == "bf16"
    zero = ClusterConfig.from_yaml_file(root / "deepspeed-zero2.yaml")
    assert zero.distributed_type == "DEEPSPEED" and zero.deepspeed_config["zero_stage"] == 2
    assert "gradient_accumulation_steps" not in zero.deepspeed_config  # DeepSpeed follows --grad-accum
