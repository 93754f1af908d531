"""MiniCPM-V 4.5 image processor: LLaVA-UHD slicing, normalisation, patch strips, placeholders.

An image becomes a downsized "source" image plus, when it is larger than one 448x448 slice, a grid of slices.
Each slice is resized so that both sides are multiples of the patch size (14), normalised with mean = std = 0.5 and
laid out as a [3, 14, H*W/14] strip of patches; tgt_sizes holds (H/14, W/14). The placeholder text of an image is
  [<image_id>k</image_id>] <image> 64 x <unk> </image>  [+ a grid of <slice> 64 x <unk> </slice>, one row per line]

Video frames: `temporal_ids` groups consecutive frames into packages; the frames of a package share one placeholder
(the first frame's) and the resampler attends over all of them at once (`skip_image_idx` lists the others).

vLLM loads this file from the checkpoint directory (auto_map) and calls `get_sliced_grid`,
`get_slice_image_placeholder` and `__call__`; `model.processor` imports the same file.
"""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.utils import TensorType


def _nested(value, fn):
    return [_nested(v, fn) for v in value] if isinstance(value, list) else fn(value)


class MiniCPMVBatchFeature(BatchFeature):
    """A BatchFeature whose values are nested lists of per-slice arrays (slices differ in size)."""

    def convert_to_tensors(self, tensor_type=None, **kwargs):
        if tensor_type is None:
            return self
        for key, value in self.items():
            self[key] = _nested(value, lambda v: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)))
        return self


class MiniCPMVImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(self, max_slice_nums: int = 9, scale_resolution: int = 448, patch_size: int = 14,
                 use_image_id: bool = True, image_feature_size: int = 64, slice_mode: bool = True,
                 norm_mean=(0.5, 0.5, 0.5), norm_std=(0.5, 0.5, 0.5), version: float = 4.5,
                 im_start: str = "<image>", im_end: str = "</image>", slice_start: str = "<slice>",
                 slice_end: str = "</slice>", unk: str = "<unk>", im_id_start: str = "<image_id>",
                 im_id_end: str = "</image_id>", **kwargs):
        super().__init__(**kwargs)
        self.max_slice_nums, self.scale_resolution, self.patch_size = max_slice_nums, scale_resolution, patch_size
        self.use_image_id, self.image_feature_size, self.slice_mode = use_image_id, image_feature_size, slice_mode
        self.mean, self.std = np.array(norm_mean, dtype=np.float32), np.array(norm_std, dtype=np.float32)
        self.version = version
        self.im_start_token, self.im_end_token = im_start, im_end
        self.slice_start_token, self.slice_end_token = slice_start, slice_end
        self.unk_token, self.im_id_start, self.im_id_end = unk, im_id_start, im_id_end

    def to_dict(self) -> dict:
        """preprocessor_config.json in the release's key names (the constructor's arguments)."""
        out = {k: v for k, v in super().to_dict().items() if k in ("image_processor_type", "auto_map", "processor_class")}
        out.update(max_slice_nums=self.max_slice_nums, scale_resolution=self.scale_resolution,
                   patch_size=self.patch_size, use_image_id=self.use_image_id,
                   image_feature_size=self.image_feature_size, slice_mode=self.slice_mode,
                   norm_mean=[float(x) for x in self.mean], norm_std=[float(x) for x in self.std],
                   version=self.version, im_start=self.im_start_token, im_end=self.im_end_token,
                   slice_start=self.slice_start_token, slice_end=self.slice_end_token, unk=self.unk_token,
                   im_id_start=self.im_id_start, im_id_end=self.im_id_end)
        return out

    # ---- geometry ----
    def _multiple_of_patch(self, length: float) -> int:
        return max(round(length / self.patch_size) * self.patch_size, self.patch_size)

    def find_best_resize(self, size, allow_upscale: bool = False) -> tuple[int, int]:
        """(w, h) -> (w', h'): area at most scale_resolution^2 (unless upscaling), sides multiples of the patch."""
        width, height = size
        if width * height > self.scale_resolution**2 or allow_upscale:
            ratio = width / height
            height = int(self.scale_resolution / math.sqrt(ratio))
            width = int(height * ratio)
        return self._multiple_of_patch(width), self._multiple_of_patch(height)

    def get_refine_size(self, size, grid) -> tuple[int, int]:
        """The size the image is resized to before it is cut into grid (cols, rows) slices."""
        width, height = size
        cols, rows = grid
        refine_w = max(round(width / cols) * cols, cols)
        refine_h = max(round(height / rows) * rows, rows)
        slice_w, slice_h = self.find_best_resize((refine_w / cols, refine_h / rows), allow_upscale=True)
        return slice_w * cols, slice_h * rows

    def get_sliced_grid(self, image_size, max_slice_nums: int | None = None, nerver_split: bool = False):
        """(w, h) -> [cols, rows] of the slice grid, or None when the image is not sliced (LLaVA-UHD):
        multiple = min(ceil(area / 448^2), max); try multiple-1, multiple, multiple+1 slices (2..max) and every
        factorisation cols x rows; keep the grid whose log aspect ratio is closest to the image's."""
        max_slice_nums = self.max_slice_nums if max_slice_nums is None else int(max_slice_nums)
        width, height = image_size
        log_ratio = math.log(width / height)
        multiple = min(math.ceil(width * height / self.scale_resolution**2), max_slice_nums)
        if multiple <= 1 or nerver_split:
            return None
        best, best_err = [1, 1], float("inf")
        for n in (multiple - 1, multiple, multiple + 1):
            if n == 1 or n > max_slice_nums:
                continue
            for cols in range(1, n + 1):
                if n % cols == 0:
                    err = abs(log_ratio - math.log(cols / (n // cols)))
                    if err < best_err:
                        best, best_err = [cols, n // cols], err
        return best

    def get_sliced_images(self, image: PIL.Image.Image, max_slice_nums: int | None = None) -> list:
        """[source image, slices row by row...]."""
        if not self.slice_mode:
            return [image]
        grid = self.get_sliced_grid(image.size, max_slice_nums)
        if grid is None:
            size = self.find_best_resize(image.size, allow_upscale=True)
            return [image.resize(size, resample=PIL.Image.Resampling.BICUBIC)]
        source = image.resize(self.find_best_resize(image.size), resample=PIL.Image.Resampling.BICUBIC)
        refined = image.resize(self.get_refine_size(image.size, grid), resample=PIL.Image.Resampling.BICUBIC)
        cols, rows = grid
        slice_w, slice_h = refined.size[0] // cols, refined.size[1] // rows
        slices = [refined.crop((x, y, x + slice_w, y + slice_h))
                  for y in range(0, refined.size[1], slice_h) for x in range(0, refined.size[0], slice_w)]
        return [source] + slices

    # ---- placeholders ----
    def get_grid_placeholder(self, grid) -> str:
        if grid is None:
            return ""
        one = self.slice_start_token + self.unk_token * self.image_feature_size + self.slice_end_token
        cols, rows = grid
        return "\n".join(one * cols for _ in range(rows))

    def get_image_id_placeholder(self, idx: int = 0) -> str:
        return f"{self.im_id_start}{idx}{self.im_id_end}"

    def get_slice_image_placeholder(self, image_size, image_idx: int = 0, max_slice_nums: int | None = None,
                                    use_image_id: bool | None = None) -> str:
        max_slice_nums = self.max_slice_nums if max_slice_nums is None else int(max_slice_nums)
        grid = self.get_sliced_grid(image_size, max_slice_nums)
        text = self.im_start_token + self.unk_token * self.image_feature_size + self.im_end_token
        if self.use_image_id if use_image_id is None else bool(use_image_id):
            text = self.get_image_id_placeholder(image_idx) + text
        if self.slice_mode:
            text += self.get_grid_placeholder(grid)
        return text

    # ---- pixels ----
    def to_strip(self, image: PIL.Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """RGB image -> ([3, patch, H*W/patch] normalised patch strip, (H/patch, W/patch))."""
        arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        arr = ((arr - self.mean) / self.std).transpose(2, 0, 1)  # [3, H, W]
        p = self.patch_size
        _, h, w = arr.shape
        strip = arr.reshape(3, h // p, p, w // p, p).transpose(0, 2, 1, 3, 4).reshape(3, p, -1)
        return np.ascontiguousarray(strip), np.array((h // p, w // p))

    def preprocess(self, images, do_pad: bool = True, max_slice_nums: int | None = None, temporal_ids=None,
                   return_tensors: str | TensorType | None = None, **kwargs) -> MiniCPMVBatchFeature:
        """images: an image, a list of images (one prompt) or a list of lists (a batch of prompts).
        temporal_ids: per prompt, a list of groups of frame timestamp ids covering that prompt's images in order."""
        if isinstance(images, PIL.Image.Image):
            images = [[images]]
        elif images and isinstance(images[0], PIL.Image.Image):
            images = [images]
        if temporal_ids is not None and temporal_ids and temporal_ids[0] and isinstance(temporal_ids[0][0], int):
            temporal_ids = [temporal_ids]
        out = {"pixel_values": [], "image_sizes": [], "tgt_sizes": [], "temporal_ids": [], "skip_image_idx": []}
        for b, prompt_images in enumerate(images):
            prompt_images = [self._as_pil(im) for im in (prompt_images or [])]
            strips, sizes, tids, skip = [], [], [], []
            groups = temporal_ids[b] if temporal_ids is not None else [[-1]] * len(prompt_images)
            if sum(len(g) for g in groups) != len(prompt_images):
                raise ValueError(f"prompt {b}: temporal_ids cover {sum(len(g) for g in groups)} frames, "
                                 f"{len(prompt_images)} were given")
            start = 0
            for group in groups:
                frames = prompt_images[start:start + len(group)]
                per_frame = [[self.to_strip(s) for s in self.get_sliced_images(f, max_slice_nums)] for f in frames]
                for k in range(len(per_frame[0])):  # slice k of every frame of the package, consecutively
                    for frame_slices in per_frame:
                        strips.append(frame_slices[k][0])
                        sizes.append(frame_slices[k][1])
                    tids.append(list(group))
                skip.extend(range(start + 1, start + len(group)))
                start += len(group)
            out["pixel_values"].append(strips)
            out["image_sizes"].append([im.size for im in prompt_images])
            out["tgt_sizes"].append(np.vstack(sizes) if sizes else np.zeros((0, 2), dtype=np.int64))
            out["temporal_ids"].append(tids)
            out["skip_image_idx"].append(skip)
        feature = MiniCPMVBatchFeature(data=out)
        if return_tensors is not None:
            for key in ("pixel_values", "tgt_sizes", "image_sizes"):
                feature[key] = _nested(feature[key], lambda v: torch.as_tensor(np.asarray(v)))
        return feature

    def __call__(self, images, **kwargs) -> MiniCPMVBatchFeature:
        return self.preprocess(images, **kwargs)

    @staticmethod
    def _as_pil(image) -> PIL.Image.Image:
        if isinstance(image, PIL.Image.Image):
            return image.convert("RGB")
        arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
            arr = arr.transpose(1, 2, 0)
        if arr.dtype != np.uint8:
            arr = (arr * 255).clip(0, 255).astype(np.uint8) if arr.max() <= 1.0 else arr.astype(np.uint8)
        return PIL.Image.fromarray(arr.squeeze()).convert("RGB")


__all__ = ["MiniCPMVImageProcessor", "MiniCPMVBatchFeature"]
