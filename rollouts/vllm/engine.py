"""Start a vLLM engine on a MiniCPM-V checkpoint directory, with the CPU settings that work on a laptop.

On CPU (no CUDA device): a 1 GiB KV cache unless VLLM_CPU_KVCACHE_SPACE says otherwise, the in-process engine
(VLLM_ENABLE_V1_MULTIPROCESSING=0: 2 s start-up instead of 15 s, and direct access to the model), eager mode,
no chunked prefill (seeded sampling breaks on a split prefill on CPU; see make_llm).
`make_llm` applies them, in the process that starts the engine (a Ray actor's own): vLLM reads its environment
variables when an engine is created (`vllm.envs` is read lazily and cached only once an engine has started), so
importing vllm first is fine and no module applies them at import time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core.process import new_tempdir

WORKER_EXTENSION = "rollouts.vllm.extension.EngineWeightLoader"
"""Added to vLLM's worker (`worker_extension_cls`): weight loading by path in whichever process holds the model,
which is how `RolloutWorker` syncs weights into a multiprocess engine."""


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def cpu_defaults() -> None:
    """The CPU environment defaults (module docstring); a variable already set is kept."""
    if on_cpu():
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_llm(path: str | os.PathLike, dtype: str = "auto", seed: int = 0, max_model_len: int = 4096,
             max_images: int = 4, max_videos: int = 0, gpu_memory_utilization: float = 0.5, video: bool = False,
             **kwargs: Any):
    """A `vllm.LLM` for the checkpoint. trust_remote_code: the directory's processor modules are loaded by
    auto_map (for checkpoints this project writes, they are this project's own files). `worker_extension_cls`
    defaults to `WORKER_EXTENSION`; one passed in kwargs replaces it, and then
    `RolloutWorker.load_weights` works only with an engine that holds its model in this process.
    video: serve the checkpoint with this project's MiniCPM-V class (`rollouts.vllm.plugin.ARCH`), which packs video
    frames through the 3D-Resampler as the learner does, and accept `max_videos` (at least 1) videos per prompt."""
    cpu_defaults()
    from vllm import LLM
    from vllm.config.weight_transfer import WeightTransferConfig

    from .plugin import TRANSFER_BACKEND, register

    register()  # this process; the engine's own processes load the plugin by its entry point
    # the in-memory weight transfer (rollouts.vllm.transfer): an engine part that costs nothing until a group opens
    kwargs.setdefault("weight_transfer_config", WeightTransferConfig(backend=TRANSFER_BACKEND))
    if video:
        from .plugin import ARCH

        kwargs.setdefault("hf_overrides", {"architectures": [ARCH]})
        # vLLM's multimodal cache re-parses the items it misses without their metadata, where the packing travels
        kwargs.setdefault("mm_processor_cache_gb", 0)
        max_videos = max(max_videos, 1)

    options: dict[str, Any] = dict(
        # the log-probs of the distribution each sample is drawn from (after temperature, top-k, top-p), which is
        # what the learner computes (model.sampling) and what TIS compares
        logprobs_mode="processed_logprobs",
        model=str(path), trust_remote_code=True, dtype=dtype, seed=seed, max_model_len=max_model_len,
        limit_mm_per_prompt={"image": max_images, "video": max_videos}, worker_extension_cls=WORKER_EXTENSION)
    if on_cpu():
        options["enforce_eager"] = True
        # A seeded request whose prefill is split over two engine steps makes vLLM 0.32 rewind its sampling
        # generator, which CPU generators cannot do ("CPU Generator does not use offset"): the whole batch fails.
        # Without chunked prefill a prompt is never split (it waits for the next step instead).
        options["enable_chunked_prefill"] = False
    else:
        options["gpu_memory_utilization"] = gpu_memory_utilization
    options.update(kwargs)
    private = _engine_tempdir()
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(private)  # also the engine's own processes' (inherited)
    try:
        llm = LLM(**options)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
    llm.minicpmv_tempdir = private
    return llm


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The `max_lora_rank` values vLLM 0.32 accepts (`vllm.config.lora.MaxLoRARanks`)."""


def engine_lora_rank(rank: int) -> int:
    """vLLM's `max_lora_rank` for adapters of rank `rank`: the smallest value it accepts at or above it (an adapter
    of rank 24 is served with 32). A rank above vLLM's largest cannot be served: ValueError naming the values."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank}: vLLM serves adapters of rank up to {VLLM_LORA_RANKS[-1]} "
                     f"(its max_lora_rank takes {', '.join(map(str, VLLM_LORA_RANKS))})")


def release_tempdir(llm) -> None:
    """Remove the engine's temp folder (after its processes have stopped)."""
    folder = getattr(llm, "minicpmv_tempdir", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _engine_tempdir() -> Path:
    """A new temp folder for one engine (`core.process.new_tempdir`): vLLM writes a `vllm_dist_*` rendezvous file
    into the temp folder at every start and never deletes it. The folders of processes that are gone (killed) are
    removed first."""
    return new_tempdir()


def add_request(llm, key: str, prompt: dict, params, lora_request=None) -> None:
    """Add one request to the engine under the id `key`, as `LLM.generate` would add it (vLLM 0.32's
    `LLM._add_request`: the prompt rendered by the LLM's own renderer, multimodal inputs included; only the final
    output kept, which for n > 1 holds all n samples), but with our id: vLLM's external request id, by which
    `abort_request(..., internal=False)` cancels every sample of the group. Raises when vLLM rejects the prompt
    (too many images, a prompt over the context...)."""
    from vllm.sampling_params import RequestOutputKind

    engine_input = llm._preprocess_cmpl_one(prompt)  # the renderer LLM.generate uses (private in vLLM 0.32)
    params.output_kind = RequestOutputKind.FINAL_ONLY
    llm.llm_engine.add_request(key, engine_input, params, lora_request=llm._resolve_mm_lora(engine_input,
                                                                                            lora_request))


def engine_prompt(prompt) -> dict:
    """The vLLM prompt of a processed prompt (`model.processor.PromptInputs`): its text with its images, or with its
    videos as (frames, {"temporal_ids": packages}), which only an engine made with `make_llm(video=True)` packs as
    the learner does."""
    if prompt.videos:
        data = {"video": [(list(frames), {"temporal_ids": groups}) for frames, groups in prompt.videos]}
        if prompt.stills:
            data["image"] = list(prompt.stills)
        return {"prompt": prompt.text, "multi_modal_data": data}
    if prompt.images:
        return {"prompt": prompt.text, "multi_modal_data": {"image": prompt.images}}
    return {"prompt": prompt.text}
