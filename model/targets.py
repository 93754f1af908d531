"""Names of the model's parts that configs refer to, importable without torch (rl.config reads them)."""

# The LLM's linear layers (attention and MLP). The vision tower has q/k/v projections of the same names, so the
# targets are a regex anchored on `llm.`.
LLM_LORA_TARGETS = r".*llm\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
