"""MiniCPM-V 4.5 for vLLM with the 3D-Resampler's video packing: what vLLM 0.32 leaves out.

vLLM's own `MiniCPMV4_5` encodes every video frame as an image of its own (64 tokens each): its processor and input
schema drop `temporal_ids`, so a video prompt has other token ids and other log-probs than the learner computes
(`model/`, the release). This class keeps vLLM's model and changes only the video path:
- each video comes with its packing: `multi_modal_data={"video": [(frames, {"temporal_ids": groups})]}`, the groups
  of frame timestamp ids (units of 0.1 s) that `model.processor` builds; vLLM keeps the dict as the item's
  metadata;
- the processor runs the checkpoint's HF processor with those `temporal_ids` (the frames of a package share one
  placeholder), and emits one placeholder per package, not per frame;
- the ids travel to the model as two per-video fields (`video_temporal_ids`: the frames' ids;
  `video_group_sizes`: frames per package), and the resampler gets the groups, as the learner's does.
A video without metadata (vLLM's profiling inputs) is one package per frame with no temporal id: as many tokens as
vLLM's own class counts, an upper bound of the packed size.

It is registered under its own architecture name (`ARCH`) by `rollouts.vllm.plugin.register` (a `vllm.general_plugins`
entry point, so every engine process has it), and an engine uses it only when asked: `make_llm(..., video=True)`
overrides the checkpoint's architecture for that engine. vLLM's own class is never replaced.

vLLM's `Resampler4_5` holds 36000 temporal positions (an hour in 0.1 s) and grows the table to the largest id seen,
one row short of it: a video past an hour would index past the table inside the model runner. This class grows it
to the largest id + 1 first, as the learner's resampler does (`model/resampler.py`).

vLLM's multimodal processor cache is off for these engines (`make_llm(video=True)`): on a cache miss vLLM re-parses
the items it lacks from their frames alone, without the metadata that carries the packing. Images beside a video
in one prompt take the video settings (one slice, no image id), as `model.processor` gives them (the release's
`chat()` applies them to the whole call).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from vllm.model_executor.models.minicpmv import (MiniCPMV4_5, MiniCPMVDummyInputsBuilder,
                                                 MiniCPMVMultiModalProcessor, MiniCPMVProcessingInfo,
                                                 _minicpmv_field_config)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageProcessorItems, VideoProcessorItems
from vllm.multimodal.processing.processor import PromptReplacement, PromptUpdateDetails

from .plugin import ARCH  # noqa: F401 - the name this class is registered under


def video_groups(metadata: Any, num_frames: int) -> list[list[int]]:
    """The packages of a video item: its metadata's `temporal_ids`, else one package per frame without an id."""
    groups = metadata.get("temporal_ids") if isinstance(metadata, Mapping) else None
    if groups is None:
        return [[-1]] * num_frames
    groups = [[int(t) for t in g] for g in groups]
    if sum(map(len, groups)) != num_frames:
        raise ValueError(f"temporal_ids cover {sum(map(len, groups))} frames, the video has {num_frames}")
    return groups


class VideoProcessor(MiniCPMVMultiModalProcessor):
    def _groups(self, mm_items) -> list[list[list[int]]]:
        videos = mm_items.get("video") if "video" in mm_items else None
        if not isinstance(videos, VideoProcessorItems):
            return []
        metadata = videos.metadata if isinstance(videos.metadata, list) else [videos.metadata] * videos.get_count()
        return [video_groups(metadata[i], videos.get_num_frames(i)) for i in range(videos.get_count())]

    def _apply_hf_processor_main(self, mm_items, hf_kwargs):
        self._pending_groups = self._groups(mm_items)  # read by process_videos, in this same call
        try:
            return super()._apply_hf_processor_main(mm_items, hf_kwargs)
        finally:
            self._pending_groups = None

    def process_images(self, mm_data: Mapping[str, object], mm_kwargs: Mapping[str, object]):
        """Beside a video, images take the video settings, as the learner's processor (the release) gives them."""
        if mm_data.get("videos") is not None:
            mm_kwargs = {**mm_kwargs, "max_slice_nums": self.info.get_video_max_slice_num()}
        return super().process_images(mm_data, mm_kwargs)

    def process_videos(self, mm_data: Mapping[str, object], mm_kwargs: Mapping[str, object]):
        if (videos := mm_data.get("videos")) is None:
            return {}
        image_processor = self.info._get_checkpoint_image_processor()  # the checkpoint's own: it packs frames
        groups = getattr(self, "_pending_groups", None) or [None] * len(videos)
        out: dict[str, list] = {k: [] for k in ("video_pixel_values", "video_image_sizes", "video_tgt_sizes",
                                                "video_temporal_ids", "video_group_sizes")}
        for frames, packing in zip(videos, groups):
            frames = list(frames)
            packing = packing or [[-1]] * len(frames)
            temporal = None if all(g == [-1] for g in packing) else [packing]
            result = image_processor(images=[frames], temporal_ids=temporal, return_tensors="pt",
                                     max_slice_nums=self.info.get_video_max_slice_num())
            out["video_pixel_values"].append(result["pixel_values"][0])
            out["video_image_sizes"].append(result["image_sizes"][0])
            out["video_tgt_sizes"].append(result["tgt_sizes"][0])
            out["video_temporal_ids"].append(torch.tensor([t for g in packing for t in g], dtype=torch.long))
            out["video_group_sizes"].append(torch.tensor([len(g) for g in packing], dtype=torch.long))
        return out

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs) -> Mapping[str, MultiModalFieldConfig]:
        return dict(_minicpmv_field_config(hf_inputs),
                    video_temporal_ids=MultiModalFieldConfig.batched("video", keep_on_cpu=True),
                    video_group_sizes=MultiModalFieldConfig.batched("video", keep_on_cpu=True))

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        updates = list(super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs))
        tokenizer = self.info.get_tokenizer()
        unk = [tokenizer.get_vocab()["<unk>"]]

        with_video = "video" in mm_items and mm_items["video"].get_count() > 0

        def image_replacement(item_idx: int):  # beside a video: one slice, no image id (process_images)
            images = mm_items.get_items("image", ImageProcessorItems)
            text = self.info.get_slice_image_placeholder(
                image_size=images.get_image_size(item_idx), image_idx=item_idx,
                max_slice_nums=self.info.get_video_max_slice_num(), use_image_id=False)
            return PromptUpdateDetails.select_token_ids(tokenizer.encode(text, add_special_tokens=False), unk)

        def video_replacement(item_idx: int):
            videos = mm_items.get_items("video", VideoProcessorItems)
            packages = len(out_mm_kwargs["video"][item_idx]["video_group_sizes"].data)  # from the processed item
            text = self.info.get_slice_image_placeholder(
                image_size=videos.get_frame_size(item_idx), image_idx=0,
                max_slice_nums=self.info.get_video_max_slice_num(), use_image_id=False) * packages
            return PromptUpdateDetails.select_token_ids(tokenizer.encode(text, add_special_tokens=False), unk)

        replacements = {"video": video_replacement, **({"image": image_replacement} if with_video else {})}
        return [PromptReplacement(modality=u.modality, target=u.target, replacement=replacements[u.modality])
                if u.modality in replacements else u for u in updates]


@MULTIMODAL_REGISTRY.register_processor(VideoProcessor, info=MiniCPMVProcessingInfo,
                                        dummy_inputs=MiniCPMVDummyInputsBuilder)
class MiniCPMV45Video(MiniCPMV4_5):
    """vLLM's MiniCPM-V 4.5 whose videos go through the 3D-Resampler in packages (module docstring)."""

    def embed_multimodal(self, **kwargs: object):
        temporal = kwargs.pop("video_temporal_ids", None)
        sizes = kwargs.pop("video_group_sizes", None)
        modalities = self._parse_and_validate_multimodal_inputs(**kwargs)
        embeddings: tuple[torch.Tensor, ...] = ()
        for modality, data in modalities.items():
            if modality == "videos" and temporal is not None and data["type"] == "pixel_values":
                embeddings += tuple(self._packed_videos(data, temporal, sizes))
            else:
                embeddings += tuple(self._process_vision_input(data))
        return embeddings

    def _packed_videos(self, data, temporal, sizes) -> list[torch.Tensor]:
        """One [packages x 64, hidden] embedding per video: the frames' vision features, packed by the resampler."""
        groups = []
        for ids, counts in zip(temporal, sizes):
            ids, start, video = [int(t) for t in ids], 0, []
            for n in (int(c) for c in counts):
                video.append(ids[start:start + n])
                start += n
            groups.append(video)
        longest = max((t for video in groups for package in video for t in package), default=-1)
        if longest >= self.resampler.max_temporal_size:  # vLLM grows the table to the largest id, one row short
            self.resampler._adjust_temporal_pos_cache(longest + 1, self.resampler.temporal_pos_embed.device)
        inputs = {"pixel_values": data["pixel_values"], "tgt_sizes": data["tgt_sizes"], "temporal_ids": groups}
        features = self.get_vision_hidden_states(inputs)  # [all packages, 64, hidden]
        return [f.flatten(0, 1) for f in features.split([len(g) for g in groups])]
