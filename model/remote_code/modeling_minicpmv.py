"""`AutoModel.from_pretrained(path, trust_remote_code=True)` for a checkpoint this toolkit wrote (an export, the tiny
model): config.json's auto_map names this module. It is the toolkit's own MiniCPM-V 4.5 (`model.modeling.MiniCPMV`:
the learner's forward, log-probs and the 3D-Resampler), so it needs the toolkit installed (`pip install -e .` of
this repository), unlike the configuration and processor modules beside it, which run anywhere. The weights are the
release's parameter names, so the released checkpoint's own remote code loads an export too."""

from model.modeling import MiniCPMV as _MiniCPMV

from .configuration_minicpm import MiniCPMVConfig


class MiniCPMV(_MiniCPMV):
    config_class = MiniCPMVConfig

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoModel") -> None:
        """transformers records the auto class of a remote-code model here; this model saves its own auto_map."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, config=None, torch_dtype=None, dtype=None,
                        **kwargs) -> "_MiniCPMV":
        """What `transformers.AutoModel` calls: the checkpoint directory, in `dtype` (or its own dtype)."""
        import torch

        dtype = dtype or torch_dtype
        if isinstance(dtype, str):
            dtype = None if dtype == "auto" else getattr(torch, dtype)
        return _MiniCPMV.from_pretrained(pretrained_model_name_or_path, dtype=dtype)
