"""MiniCPM-V 4.5 processor: expands each `(<image>./</image>)` in the prompt text into its placeholder tokens,
tokenizes, and returns token ids, image bounds and the image processor's outputs.

vLLM loads it by auto_map (it needs a ProcessorMixin for the tokenizer); `model.processor` uses the same class.
"""

from __future__ import annotations

import torch
from transformers.processing_utils import ProcessorMixin

IMAGE_PATTERN = "(<image>./</image>)"


class MiniCPMVProcessor(ProcessorMixin):
    attributes = ["image_processor", "tokenizer"]
    image_processor_class = "AutoImageProcessor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    def expand_placeholders(self, text: str, image_sizes, max_slice_nums=None, use_image_id=None,
                            skip_image_idx=()) -> str:
        """Replace the k-th image pattern with the placeholder of image k (skipped frames: nothing)."""
        chunks = text.split(IMAGE_PATTERN)
        if len(chunks) - 1 != len(image_sizes):
            raise ValueError(f"the prompt has {len(chunks) - 1} image placeholders {IMAGE_PATTERN!r} "
                             f"but {len(image_sizes)} images were given")
        out, image_idx = [chunks[0]], 0
        for k, size in enumerate(image_sizes):
            if k not in skip_image_idx:
                out.append(self.image_processor.get_slice_image_placeholder(
                    tuple(int(x) for x in size), image_idx, max_slice_nums, use_image_id))
                image_idx += 1
            out.append(chunks[k + 1])
        return "".join(out)

    def image_bounds(self, input_ids: list[int]) -> torch.Tensor:
        """[n, 2] [start, end) spans of the <unk> runs that visual tokens replace."""
        unk = self.tokenizer.convert_tokens_to_ids(self.image_processor.unk_token)
        bounds, start = [], None
        for i, tok in enumerate(list(input_ids) + [None]):
            if tok == unk and start is None:
                start = i
            elif tok != unk and start is not None:
                bounds.append((start, i))
                start = None
        return torch.tensor(bounds, dtype=torch.long).reshape(-1, 2)

    def __call__(self, text, images=None, max_slice_nums=None, use_image_id=None, temporal_ids=None,
                 return_tensors="pt", **kwargs):
        """text: a prompt or a list of prompts; images: per prompt, a list of images (or None).
        Returns input_ids (a list of token-id lists, unpadded), image_bound, pixel_values, tgt_sizes,
        image_sizes, temporal_ids."""
        texts = [text] if isinstance(text, str) else list(text)
        if images is None:
            images = [[] for _ in texts]
        elif len(texts) == 1 and images and not isinstance(images[0], (list, tuple)):
            images = [list(images)]
        if len(images) != len(texts):
            raise ValueError(f"{len(texts)} prompts but image lists for {len(images)}")
        has_images = any(len(im) for im in images)
        feats = self.image_processor(images, max_slice_nums=max_slice_nums, temporal_ids=temporal_ids,
                                     return_tensors="pt") if has_images else None
        input_ids, bounds = [], []
        for b, prompt in enumerate(texts):
            sizes = feats["image_sizes"][b] if feats is not None else []
            skip = feats["skip_image_idx"][b] if feats is not None else []
            expanded = self.expand_placeholders(prompt, sizes, max_slice_nums, use_image_id, set(skip))
            ids = self.tokenizer.encode(expanded, add_special_tokens=False)
            input_ids.append(ids)
            bounds.append(self.image_bounds(ids))
        n = len(texts)
        return {
            "input_ids": input_ids,
            "image_bound": bounds,
            "pixel_values": feats["pixel_values"] if feats is not None else [[] for _ in range(n)],
            "tgt_sizes": feats["tgt_sizes"] if feats is not None else [torch.zeros(0, 2, dtype=torch.long)] * n,
            "image_sizes": feats["image_sizes"] if feats is not None else [[] for _ in range(n)],
            "temporal_ids": feats["temporal_ids"] if feats is not None else [[] for _ in range(n)],
        }


__all__ = ["MiniCPMVProcessor"]
