"""LoRA on MiniCPM-V with PEFT: the default targets, and the merged full weights for syncing to vLLM."""

from __future__ import annotations

import torch
from peft.tuners.lora import LoraLayer

from .targets import LLM_LORA_TARGETS  # noqa: F401 - re-exported


@torch.no_grad()
def merged_weights(peft_model) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs in the checkpoint's names with every active LoRA delta merged into its base weight.
    The model is not modified (unlike `merge_and_unload`), so training goes on with the adapter."""
    base = peft_model.get_base_model()
    return merged_state(base, base.state_dict())


@torch.no_grad()
def merged_state(base, state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """`state` (the PEFT-wrapped base model's state dict, as whole tensors) in the checkpoint's names, with every
    active LoRA delta merged: W + scaling * B @ A (transposed for fan_in_fan_out layers), as PEFT merges."""
    state = dict(state)
    for module_name, module in base.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        key = f"{module_name}.base_layer.weight"
        weight = state[key].clone()
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                a, b = (state[f"{module_name}.lora_{m}.{adapter}.weight"] for m in ("A", "B"))
                delta = b @ a
                weight += (delta.T if module.fan_in_fan_out else delta).mul(module.scaling[adapter]).to(weight.dtype)
        state[key] = weight
    return [(name.replace(".base_layer.", "."), t) for name, t in state.items() if ".lora_" not in name]
