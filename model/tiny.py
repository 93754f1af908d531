"""`rl-tiny-model OUT_DIR [--seed N]`: a tiny random-weight MiniCPM-V 4.5 checkpoint, the fixture of every test.

Same architecture, parameter names, processor, special tokens and chat template as the release; small sizes
(LLM hidden 128 = one resampler head, head_dim 32 for vLLM's CPU attention). Weights are drawn with a larger
initializer range than a real init so that the output distribution is peaked: a wrong computation shows up in
log-probabilities instead of hiding in a near-uniform softmax. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from .checkpoint import REMOTE_CODE
from .modeling import MiniCPMV
from .remote_code.configuration_minicpm import MiniCPMVConfig
from .remote_code.image_processing_minicpmv import MiniCPMVImageProcessor
from .tokenizer import save_tokenizer

IMAGE_PROCESSOR_AUTO_MAP = {
    "AutoImageProcessor": "image_processing_minicpmv.MiniCPMVImageProcessor",
    "AutoProcessor": "processing_minicpmv.MiniCPMVProcessor",
}
# Presets: (LLM fields, vision fields). "tiny" is the test fixture; "small" (~25M) is for end-to-end benchmarks;
# "qwen3-0.6b" has the LLM shapes of Qwen3-0.6B
# (with this project's small vocabulary) and a 4-layer slice of the released vision encoder, for benchmarks.
PRESETS = {
    "tiny": (dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, initializer_range=0.1),
             dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)),
    "small": (dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                   num_key_value_heads=4, head_dim=64, max_position_embeddings=8192, initializer_range=0.05),
              dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2)),
    "qwen3-0.6b": (dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                        num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, initializer_range=0.02),
                   dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=4, num_attention_heads=16)),
}


def tiny_config(vocab_size: int, bos: int, eos: int, pad: int, preset: str = "tiny", **overrides) -> MiniCPMVConfig:
    llm, vision = PRESETS[preset]
    fields = dict(llm, vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False, drop_vision_last_layer=False,
                  query_num=64, image_size=448, patch_size=14,
                  vision_config=dict(vision, image_size=980, patch_size=14),
                  slice_config={"max_slice_nums": 9, "patch_size": 14}, torch_dtype="float32")
    fields.update(overrides)
    return MiniCPMVConfig(**fields)


def write_processor_files(out: Path, config: MiniCPMVConfig) -> None:
    """preprocessor/processor configs and the modules vLLM loads by auto_map."""
    for name in ("configuration_minicpm.py", "image_processing_minicpmv.py", "processing_minicpmv.py"):
        shutil.copy(REMOTE_CODE / name, out / name)
    image_processor = MiniCPMVImageProcessor(
        max_slice_nums=config.slice_config.get("max_slice_nums", 9), scale_resolution=config.image_size,
        patch_size=config.patch_size, use_image_id=config.use_image_id, image_feature_size=config.query_num,
        slice_mode=config.slice_mode, version=config.version)
    payload = image_processor.to_dict()
    payload.update(auto_map=IMAGE_PROCESSOR_AUTO_MAP, processor_class="MiniCPMVProcessor")
    (out / "preprocessor_config.json").write_text(json.dumps(payload, indent=2) + "\n")
    processor = {"processor_class": "MiniCPMVProcessor",
                 "auto_map": {"AutoProcessor": IMAGE_PROCESSOR_AUTO_MAP["AutoProcessor"]}}
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")


def build_tiny_checkpoint(out_dir: str | Path, seed: int = 0, preset: str = "tiny",
                          dtype: torch.dtype = torch.float32) -> Path:
    """A random-weight MiniCPM-V 4.5 checkpoint; `dtype=torch.bfloat16` stores it as the release does."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = save_tokenizer(out)
    config = tiny_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                         preset=preset)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = MiniCPMV(config)
    model.resampler.init_weights(std=config.initializer_range)
    torch.random.set_rng_state(generator_state)
    model.to(dtype)
    config.dtype = str(dtype).removeprefix("torch.")
    model.save_pretrained(out)
    write_processor_files(out, config)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rl-tiny-model", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the stored dtype (the release stores bfloat16)")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS),
                        help="tiny: the test fixture; small, qwen3-0.6b (Qwen3-0.6B LLM shapes): for benchmarks")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        out = build_tiny_checkpoint(args.out_dir, args.seed, args.preset, getattr(torch, args.dtype))
    except OSError as e:  # a folder that cannot be written: one line naming it
        if args.debug:
            raise
        print(f"rl-tiny-model: error: {args.out_dir}: {e.strerror or e}", file=sys.stderr)
        return 1
    n = sum(p.numel() for p in MiniCPMV.from_pretrained(out).parameters())
    print(f"wrote a random-weight MiniCPM-V 4.5 (preset {args.preset}, {n / 1e6:.2f}M parameters) to {out} "
          f"in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
