"""MiniCPM-V 4.5 configuration: Qwen3 LLM fields flattened at the top level, plus vision and resampler fields.

The released `config.json` of openbmb/MiniCPM-V-4_5 loads with `MiniCPMVConfig.from_json_file`. Field types are
checked (huggingface_hub `strict` dataclass), so a field of the wrong type fails with an error that names it.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig, Qwen3Config, SiglipVisionConfig


@strict
class MiniCPMVConfig(Qwen3Config):
    model_type = "minicpmv"
    sub_configs = {"vision_config": SiglipVisionConfig}

    version: float = 4.5
    """Architecture version; vLLM dispatches on it (4.5 = Qwen3 LLM + SigLIP NaViT + 3D-Resampler)."""
    query_num: int = 64
    """Resampler queries: visual tokens per image slice (or per video frame package)."""
    image_size: int = 448
    """Scale resolution of one slice, in pixels."""
    patch_size: int = 14
    """Vision patch size, in pixels."""
    slice_mode: bool = True
    """LLaVA-UHD slicing of large images into a grid of slices plus a downsized source image."""
    slice_config: dict | None = None
    """{"max_slice_nums": 9, "patch_size": 14, ...}."""
    batch_vision_input: bool = True
    batch_3d_resampler: bool = True
    drop_vision_last_layer: bool = True
    """Class default of the release; the released config.json sets it to false."""
    use_image_id: bool = True
    """Prefix each image placeholder with <image_id>k</image_id>."""
    vision_batch_size: int = 16
    """Slices per chunk through the vision encoder (memory knob; does not change results)."""
    vision_config: dict | PreTrainedConfig | None = None
    """SigLIP-style NaViT encoder (loaded by transformers' Idefics2VisionTransformer)."""

    def __post_init__(self, **kwargs):
        if self.vision_config is None:
            self.vision_config = SiglipVisionConfig(
                hidden_size=1152, image_size=980, intermediate_size=4304,
                num_attention_heads=16, num_hidden_layers=27, patch_size=14,
            )
        elif isinstance(self.vision_config, dict):
            fields = {k: v for k, v in self.vision_config.items() if k != "model_type"}
            self.vision_config = SiglipVisionConfig(**fields)
        if self.slice_config is None:
            self.slice_config = {"max_slice_nums": 9, "patch_size": self.patch_size}
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        super().validate_architecture()
        if self.hidden_size % 128:
            raise ValueError(
                f"hidden_size={self.hidden_size}: the 3D-Resampler uses hidden_size // 128 heads, "
                "so hidden_size must be a multiple of 128")
        if self.query_num < 1:
            raise ValueError(f"query_num={self.query_num} must be >= 1")


__all__ = ["MiniCPMVConfig"]
