"""The EfficientNet-Lite0 vision tower: ImageTower's features as patch tokens, Auto-class round trip."""
from __future__ import annotations

import torch
from PIL import Image
from transformers import AutoConfig, AutoModel, LlavaForConditionalGeneration

from llava_tuning.presets import create_model
from llava_tuning.vision import EfficientNetImageProcessor, EfficientNetVisionConfig, EfficientNetVisionModel


def test_tokens_are_image_tower_grid(tmp_path):
    """At 224 px the tower yields 49 tokens of 1280-d, equal to ImageTower's 7x7 grid for the same photo."""
    from retrieval.encoders.towers import ImageTower

    tower = EfficientNetVisionModel(EfficientNetVisionConfig())
    tower.load_packaged_weights()
    tower.train()  # BatchNorm must stay frozen even in training mode
    assert not tower.encoder.training
    im = Image.new("RGB", (60, 90), (180, 40, 40))
    im.paste((20, 20, 160), (10, 30, 50, 80))
    px = EfficientNetImageProcessor(224)([im])["pixel_values"]
    with torch.no_grad():
        tokens = tower(px).hidden_states[-1]
    assert tokens.shape == (1, 49, 1280) and tower.config.num_patches == 49
    grid = ImageTower().grid_features([im])  # (1, 1280, 7, 7)
    assert torch.allclose(tokens, grid.flatten(2).transpose(1, 2), atol=1e-4)


def test_auto_classes_round_trip(tmp_path):
    """A LLaVA with the custom tower saves and loads back through the stock classes."""
    bundle = create_model("tiny-random")
    model = bundle.model
    model.save_pretrained(tmp_path)
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert cfg.vision_config.model_type == "whyrec_efficientnet_vision"
    assert isinstance(AutoModel.from_config(cfg.vision_config), EfficientNetVisionModel)
    loaded = LlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    enc = bundle.processor.encode([{"from": "human", "value": "<image>\nhi"}], add_generation_prompt=True)
    batch = bundle.processor.pad([enc])
    px = bundle.processor.pixel_values([Image.new("RGB", (40, 60), (0, 90, 0))])
    with torch.no_grad():
        a = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=px).logits
        b = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=px).logits
    assert torch.equal(a, b)
    # the image changes the output: the tower is really wired in
    with torch.no_grad():
        c = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  pixel_values=bundle.processor.pixel_values([Image.new("RGB", (40, 60), (250, 250, 0))])).logits
    assert not torch.allclose(a, c)
