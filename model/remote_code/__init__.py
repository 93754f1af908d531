"""Self-contained modules that are copied into every checkpoint directory this project writes.

vLLM (and `transformers.Auto*` with `trust_remote_code=True`) load them by the `auto_map` entries of
config.json / preprocessor_config.json / processor_config.json. They import only transformers, torch, numpy
and PIL, and only each other by relative import, so that the copy in a checkpoint runs anywhere.
The `model` package imports the very same files: the learner and vLLM share one implementation of the
configuration and of the image preprocessing. One exception: `modeling_minicpmv.py`, what `AutoModel` loads, is
this toolkit's model (`model.modeling.MiniCPMV`) and needs the toolkit installed.
"""
