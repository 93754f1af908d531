"""`python -m model.demo CKPT_DIR`: sample short- and long-mode answers to an image question through vLLM.

The tiny checkpoint has random weights, so the answers are noise; what the demo shows is the pipeline: the chat
template's thinking switch, the image placeholders, and vLLM serving the checkpoint this project wrote.
"""

from __future__ import annotations

import argparse

from rollouts.engine import cpu_defaults, make_llm

cpu_defaults()

from .processor import Processor  # noqa: E402
from .synthetic import shapes_image  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model.demo", description=__doc__.splitlines()[0])
    parser.add_argument("ckpt_dir")
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args(argv)
    from vllm import SamplingParams

    processor = Processor.from_pretrained(args.ckpt_dir)
    llm = make_llm(args.ckpt_dir, dtype="float32")
    question = [{"role": "user", "content": [{"type": "image", "image": shapes_image(3, seed=1)},
                                             {"type": "text", "text": "How many circles are in the picture?"}]}]
    for mode in ("short", "long"):
        prompt = processor(question, mode)
        out = llm.generate([{"prompt": prompt.text, "multi_modal_data": {"image": prompt.images}}],
                           SamplingParams(n=2, max_tokens=args.max_tokens, temperature=1.0, seed=0),
                           use_tqdm=False)[0]
        print(f"\n=== {mode} mode: the prompt ends with {prompt.text[-30:]!r} "
              f"({len(prompt.input_ids)} prompt tokens, {len(prompt.pixel_values)} image slice(s))")
        for k, sample in enumerate(out.outputs):
            print(f"  sample {k}: {sample.text!r}")


if __name__ == "__main__":
    main()
