"""LoRA on MiniCPM-V with PEFT: the default targets, and the merged full weights for syncing to vLLM."""

from __future__ import annotations

import torch
from peft.tuners.lora import LoraLayer

# The LLM's linear layers (attention and MLP). The vision tower has q/k/v projections of the same names, so the
# targets are a regex anchored on `llm.`.
LLM_LORA_TARGETS = r".*llm\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


@torch.no_grad()
def merged_weights(peft_model) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs in the checkpoint's names with every active LoRA delta merged into its base weight.
    The model is not modified (unlike `merge_and_unload`), so training goes on with the adapter."""
    base = peft_model.get_base_model()
    state = {}
    for name, tensor in base.state_dict().items():
        if ".lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor
    for module_name, module in base.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        key = f"{module_name}.weight"
        weight = state[key].clone()
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                weight += module.get_delta_weight(adapter).to(weight.dtype)
        state[key] = weight
    return list(state.items())
