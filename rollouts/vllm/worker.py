"""A rollout worker: one vLLM engine that samples groups of short/long completions and takes new weights.

`RolloutWorker` is a plain class (usable in-process) and the vLLM implementation of `rollouts.backend.
RolloutBackend`; `rollouts.pool` runs it as a Ray actor. Every request it is given joins one continuous batch of its
engine (`rollouts.vllm.loop.EngineLoop`), and `stream` hands back each group the moment its last sample finishes. Each
request is prepared alone (processor, checks): a bad image, an over-long prompt or n < 1 fails that request with an
error in its result while the rest of the batch is sampled.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from core.modes import split_completion
from core.process import Owner, exit_with, private_tempdir
from model.checkpoint import iter_safetensors
from model.processor import PIL_LIMIT, PromptInputs, Processor

from .engine import add_request, engine_lora_rank, engine_prompt, make_llm, release_tempdir
from .loop import ABORTED, EngineItem, EngineLoop, Interrupted
from ..types import (INTERRUPTED, RolloutRequest, RolloutResult, RolloutSample, SamplingConfig, default_mode_sampling,
                    in_request_order, stitch)
from ..weights import SAFETENSORS_FILE, from_shared, nbytes, staging_dir, write_safetensors


VIDEO_REFUSED = ("video prompts need the engine started with video=True (rollout.video): vLLM 0.32's own MiniCPM-V "
                 "drops the 3D-Resampler's temporal ids (every frame becomes 64 tokens of its own instead of one "
                 "package of up to 6 frames), so its prompt and log-probs would differ from the learner's and an RL "
                 "update on them would be wrong; video=True serves the checkpoint with this project's vLLM class "
                 "(rollouts/vllm/video.py), which packs frames as the learner does")


KV_AFTER_UPDATE = ("keep", "recompute")
"""What an in-flight weight update does to the running requests' KV cache (`RolloutWorker`'s kv_after_update)."""


def tokens_so_far(llm) -> dict[str, dict[int, int]]:
    """engine key -> {sample index: completion tokens it has now}, for every request the engine holds; a group of n
    samples is n child requests of vLLM (their parent's id is the key; a sample that finished is absent). Read in
    the engine's thread between steps: the front end's request states hold every token the last step returned."""
    out: dict[str, dict[int, int]] = {}
    for state in llm.llm_engine.output_processor.request_states.values():
        parent = state.parent_req
        key = parent.external_req_id if parent is not None else state.external_req_id
        tokens = state.detokenizer.num_output_tokens() if state.detokenizer is not None else 0
        out.setdefault(key, {})[state.request_index if parent is not None else 0] = tokens
    return out


def drawn_so_far(llm, keys: set[str]) -> dict[str, dict[int, object]]:
    """engine key -> {sample index: what it drew}, for the requests `keys` the engine holds (an interrupt's capture,
    read in the engine's thread between steps): a sample still running, (its token ids, their log-probs) so far; a
    finished sample of a group still running, its CompletionOutput (vLLM keeps it until the whole group is done)."""
    out: dict[str, dict[int, object]] = {}
    for state in llm.llm_engine.output_processor.request_states.values():
        parent = state.parent_req
        key = parent.external_req_id if parent is not None else state.external_req_id
        if key not in keys:
            continue
        tokens = list(state.detokenizer.output_token_ids) if state.detokenizer is not None else []
        entries = state.logprobs_processor.logprobs if state.logprobs_processor is not None else None
        logprobs = [lp[t].logprob for lp, t in zip(entries or [], tokens)]
        drawn = out.setdefault(key, {})
        drawn[state.request_index if parent is not None else 0] = (tokens[:len(logprobs)], logprobs)
        for k, finished in enumerate(parent.output_aggregator if parent is not None else ()):
            if finished is not None:
                drawn[k] = finished
    return out


def version_runs(first: int, updates: list[tuple[int, int]], n_tokens: int) -> list[tuple[int, int]]:
    """(version, first token) runs of a sample drawn from `first` on, the weights updated to `version` once it had
    `at` tokens for each (version, at) of `updates` (in order); an update after its last token adds no run."""
    runs = [(first, 0)]
    for version, at in updates:
        if at >= n_tokens and n_tokens:
            continue
        if at == runs[-1][1]:
            runs[-1] = (version, at)
        else:
            runs.append((version, at))
    return runs


@dataclass
class _Group:
    """A request being sampled: its engine requests not back yet (one, or one per resumed sample), the samples so
    far, whether one was interrupted or aborted, the oldest version one was added under."""
    result: RolloutResult
    keys: list[str] = field(default_factory=list)
    left: set[str] = field(default_factory=set)
    pieces: dict[int, RolloutSample] = field(default_factory=dict)
    cut: bool = False
    aborted: bool = False
    version: int | None = None


def has_video(messages: list[dict]) -> bool:
    return any(isinstance(m, dict) and isinstance(m.get("content"), list)
               and any(isinstance(p, dict) and p.get("type") == "video" for p in m["content"]) for m in messages)


class RolloutWorker:
    """dtype "auto" follows vLLM: bf16 for a checkpoint stored in fp32 or bf16. Log-probability agreement with
    the learner at 1e-4 needs the same dtype on both sides (float32 for the tiny checkpoint)."""

    def __init__(self, ckpt: str, worker_id: int = 0, mode_sampling: dict[str, SamplingConfig] | None = None,
                 seed: int = 0, max_model_len: int = 4096, dtype: str = "auto", enable_lora: bool = False,
                 max_lora_rank: int = 16, max_images: int = 4, max_image_pixels: int | None | str = PIL_LIMIT,
                 video_sampling: dict | None = None, video: bool = False, owner: Owner | None = None,
                 stall_timeout_s: float | None = 600.0, in_flight_updates: bool = False,
                 kv_after_update: str = "keep", **engine_kwargs):
        """owner: the process that started this worker as a Ray actor (the pool's): the actor then keeps its temp
        files in a folder of its own and dies with the owner (`core.process`). None in a caller's own process.
        video: serve video prompts (`make_llm(video=True)`: this project's vLLM class, frames packed as the learner
        packs them); without it a video request fails with VIDEO_REFUSED. stall_timeout_s: an engine step running
        longer is a hung engine (`rollouts.vllm.loop`); a dead or hung engine ends an actor's process (the pool then
        replaces the worker), and fails every call with `EngineLost` in a caller's own process.
        in_flight_updates: weights (full ones, loaded or sent) change between two engine steps, the running requests
        kept (`run.async_mode=fully_async`); each sample then says which version drew which token
        (`RolloutSample.versions`). Otherwise an update waits until no request is in flight. kv_after_update (in
        flight only): keep (the running requests' KV cache, computed by the older weights, stays: nothing is
        recomputed, and their later tokens attend to the older weights' keys and values) or recompute (vLLM
        preempts them and recomputes their prompt and tokens so far with the new weights: their later tokens are
        exactly the new policy's, at the cost of that prefill). Adapters (`load_lora`) always wait."""
        self.own_tempdir = private_tempdir() if owner is not None else None  # removed by shutdown (os._exit after)
        exit_with(owner)
        self.worker_id = worker_id
        self.ckpt = str(ckpt)
        self.mode_sampling = mode_sampling or default_mode_sampling()
        self.max_model_len = max_model_len
        self.seed = seed
        self.video = video
        lora = {"enable_lora": True, "max_lora_rank": engine_lora_rank(max_lora_rank), "max_loras": 1} \
            if enable_lora else {}
        self.loop = EngineLoop(lambda: make_llm(ckpt, dtype=dtype, seed=seed + worker_id, max_model_len=max_model_len,
                                                max_images=max_images, video=video, **lora,
                                                **engine_kwargs),
                               add=self._add,
                               name=f"rollout-engine-{worker_id}", stall_timeout_s=stall_timeout_s,
                               on_dead=self._engine_lost if owner is not None else None)
        self.llm = self.loop.llm
        self.processor = Processor.from_pretrained(ckpt, max_image_pixels=max_image_pixels,
                                                   video_sampling=video_sampling)
        self.policy_version = 0
        self.lora_request = None
        self._lock = threading.Lock()
        self._keys: dict[str, list[str]] = {}  # request id -> its engine keys, while in flight
        if kv_after_update not in KV_AFTER_UPDATE:
            raise ValueError(f"kv_after_update={kv_after_update!r}: expected one of {', '.join(KV_AFTER_UPDATE)}")
        self.in_flight_updates, self.kv_after_update = in_flight_updates, kv_after_update
        self._runs: dict[str, list] = {}  # engine key -> the in-flight updates it saw: (version, sample -> tokens then)
        self._added: dict[str, int] = {}  # engine key -> the policy version it was added to the engine under

    # ---- introspection (the pool uses these) ----
    def pid(self) -> int:
        return os.getpid()

    def version(self) -> int:
        return self.policy_version

    def in_flight(self) -> int:
        """Requests added and not yet finished or aborted."""
        with self._lock:
            return len(self._keys)

    # ---- sampling ----
    def prepare(self, request: RolloutRequest) -> PromptInputs:
        request.check()
        if not self.video and has_video(request.messages):
            raise ValueError(f"request {request.request_id}: {VIDEO_REFUSED}")
        prompt = self.processor(request.messages, request.mode)
        if len(prompt.input_ids) >= self.max_model_len:
            raise ValueError(f"request {request.request_id}: the prompt has {len(prompt.input_ids)} tokens "
                             f"(text + image tokens), the engine's context is max_model_len={self.max_model_len}")
        return prompt

    def sampling_for(self, request: RolloutRequest, prompt: PromptInputs, sample: int | None = None, drawn: int = 0):
        """The request's vLLM sampling, its budget capped by the context; `sample`: for resuming that one sample alone
        (n=1, seeded request.seed + sample as vLLM seeds it in a group) after the `drawn` tokens it has."""
        cfg = request.sampling or self.mode_sampling[request.mode]
        cfg.validate(f"request {request.request_id}.sampling")
        budget = min(cfg.max_new_tokens, self.max_model_len - len(prompt.input_ids)) - drawn
        if budget < 1:
            raise ValueError(f"request {request.request_id}: sample {sample} to resume has {drawn} tokens, its budget "
                             f"is {budget + drawn}")
        capped = SamplingConfig(budget, cfg.temperature, cfg.top_p, cfg.top_k, list(cfg.stop))
        if sample is None:
            return capped.to_vllm(request.n, seed=request.seed)
        return capped.to_vllm(1, seed=None if request.seed is None else request.seed + sample)

    def generate(self, requests: list[RolloutRequest]) -> list[RolloutResult]:
        """Sample every request; results in request order."""
        return in_request_order(requests, self.stream(requests))

    def _parts(self, request: RolloutRequest, prompt: PromptInputs) -> list[tuple[int | None, dict, object]]:
        """What the engine runs for a request: (None, its prompt, its sampling) for a group of n; for a partial
        rollout (`RolloutRequest.resume`), one request per cut-off sample k, (k, the prompt's tokens and the
        sample's, what is left of its budget): vLLM's n samples share one prompt, a continuation has its own. The
        prompt goes as token ids with the images' patterns unexpanded (vLLM expands them as for the text, so the
        prompt check still holds: the prompt's ids, then the sample's)."""
        if request.resume is None:
            return [(None, engine_prompt(prompt), self.sampling_for(request, prompt))]
        head = None
        parts = []
        for k, sample in enumerate(request.resume):
            if sample.prompt_token_ids != prompt.input_ids:
                raise ValueError(f"request {request.request_id}: sample {k} to resume was drawn from another prompt ("
                                 f"{len(sample.prompt_token_ids)} prompt tokens, this one has {len(prompt.input_ids)})")
            if not sample.cut_off:
                continue
            params = self.sampling_for(request, prompt, k, len(sample.completion_token_ids))
            if head is None:
                head = self.processor.tokenizer.encode(prompt.text)
            engine = {k2: v for k2, v in engine_prompt(prompt).items() if k2 != "prompt"}
            parts.append((k, {"prompt_token_ids": head + list(sample.completion_token_ids), **engine}, params))
        return parts

    def stream(self, requests: list[RolloutRequest]) -> Iterator[RolloutResult]:
        """Each request's result the moment its group finishes (`rollouts.backend.RolloutBackend.stream`): the
        requests that fail preparation first (and resumed groups with nothing left to draw), then the others in the
        order they finish; an interrupted one (`interrupt`) comes back `partial`. Timings per result: prepare_s
        (processor and checks of the whole call), generate_s (from being added to finishing)."""
        start = time.perf_counter()
        out = queue.Queue()
        by_key: dict[str, tuple[_Group, int | None]] = {}
        items, early = [], []
        for request in requests:
            result = RolloutResult(request=request, worker_id=self.worker_id, policy_version=self.policy_version)
            try:
                result.prompt = self.prepare(request)
                parts = self._parts(request, result.prompt)
            except Exception as e:  # noqa: BLE001 - the request fails alone, with its reason
                result.error = f"{type(e).__name__}: {e}"
                early.append(result)
                continue
            if not parts:  # a resumed group whose samples had all finished
                result.samples = list(request.resume)
                early.append(result)
                continue
            group = _Group(result)
            for index, prompt, params in parts:
                key = self.loop.new_key(request.request_id)
                by_key[key] = (group, index)
                group.left.add(key)
                items.append(EngineItem(key, prompt, params, out))
        prepared = time.perf_counter()
        with self._lock:
            for key, (group, _) in by_key.items():
                group.keys.append(key)
                self._keys[group.result.request.request_id] = group.keys
        remaining = set(by_key)
        try:
            if items:
                self.loop.add(items)
            for result in early:
                result.timings = {"prepare_s": prepared - start, "generate_s": 0.0}
                yield result
            while remaining:
                key, got = out.get()
                remaining.discard(key)
                group, index = by_key[key]
                group.left.discard(key)
                updates, added = self._runs.pop(key, []), self._added.pop(key, group.result.policy_version)
                group.version = min(group.version, added) if group.version is not None else added
                self._take(group, index, key, got, added, updates)
                if group.left:
                    continue
                self._forget(group)
                if group.aborted:
                    continue
                result = group.result
                result.policy_version = group.version
                if result.error is None:
                    resume = result.request.resume or []
                    result.samples = [group.pieces[k] if k in group.pieces else resume[k]
                                      for k in range(len(resume) or len(group.pieces))]
                    result.partial = group.cut
                result.timings = {"prepare_s": prepared - start, "generate_s": time.perf_counter() - prepared}
                yield result
        finally:
            if remaining:  # the caller stopped early: nothing of this call stays in the engine
                self.loop.abort(list(remaining))
                for key in remaining:
                    self._runs.pop(key, None)
                    self._added.pop(key, None)
                    self._forget(by_key[key][0])

    def _take(self, group: "_Group", index: int | None, key: str, got, added: int, updates: list) -> None:
        """One engine request's outcome into its group: a group of n's samples, or one continued sample."""
        result = group.result
        resume = result.request.resume
        if got is ABORTED:
            group.aborted = True
            return
        if isinstance(got, BaseException):
            result.error = f"{type(got).__name__}: {got}"
            return
        if isinstance(got, Interrupted):
            group.cut = True
            drawn = got.drawn or {}
            pieces = {k: drawn.get(k) for k in (range(result.request.n) if index is None else (0,))}
        else:
            expected = result.prompt.input_ids + ([] if index is None else resume[index].completion_token_ids)
            if list(got.prompt_token_ids) != expected:
                result.error = (f"RuntimeError: request {result.request.request_id}: vLLM built different prompt "
                                "token ids than model.processor (run rl-doctor on this checkpoint)")
                return
            pieces = dict(enumerate(got.outputs))
        for child, piece in pieces.items():
            sample = self._sample_of(result, child, piece, added, updates)
            if index is None:
                group.pieces[child] = sample
            else:
                prefix = resume[index]
                text = None if (result.request.sampling or self.mode_sampling[result.request.mode]).stop else \
                    self.processor.tokenizer.decode(prefix.completion_token_ids + sample.completion_token_ids,
                                                    skip_special_tokens=True)
                group.pieces[index] = stitch(prefix, sample, text)

    def _add(self, llm, item: EngineItem) -> None:
        """In the engine's thread: the request under the adapter and version the engine serves now (a sync may
        have run between the request's stream() call and this; the adapter it read then may be gone)."""
        add_request(llm, item.key, item.prompt, item.params, self.lora_request)
        self._added[item.key] = self.policy_version

    def _forget(self, group: "_Group") -> None:
        with self._lock:
            if self._keys.get(group.result.request.request_id) is group.keys:
                del self._keys[group.result.request.request_id]

    def abort(self, request_ids: Iterable[str]) -> list[str]:
        """Cancel requests still in the engine (`rollouts.backend.RolloutBackend.abort`); the ids cancelled."""
        with self._lock:
            keys = {k: i for i in request_ids for k in self._keys.get(i, ())}
        return sorted({keys[k] for k in self.loop.abort(list(keys))})

    def interrupt(self, request_ids: Iterable[str]) -> list[str]:
        """Stop requests still in the engine, keeping what they drew (`rollouts.backend.RolloutBackend.interrupt`):
        each comes back through its stream `partial`, its finished samples whole and the others cut off with their
        tokens, log-probs and versions so far (`drawn_so_far`, read between two engine steps just before the
        abort). The ids interrupted."""
        with self._lock:
            keys = {k: i for i in request_ids for k in self._keys.get(i, ())}
        return sorted({keys[k] for k in self.loop.interrupt(list(keys), drawn_so_far)})

    def _sample_of(self, result: RolloutResult, index: int, out, first: int, updates: list = ()) -> RolloutSample:
        """Sample `index` of an engine request: `out` its CompletionOutput, or, interrupted, (token ids, log-probs)
        so far or None (not started). updates: the in-flight updates while its request ran, in order: (version,
        {sample: its tokens then}, a sample absent had finished; or None: the request was not in the engine yet)."""
        if out is None or isinstance(out, tuple):
            tokens, logprobs = out or ([], [])
            text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
            finish = INTERRUPTED
        else:
            tokens, text, finish = list(out.token_ids), out.text, out.finish_reason
            logprobs = [lp[t].logprob for lp, t in zip(out.logprobs or [], tokens)]
        _, answer = split_completion(text, result.request.mode)
        runs = version_runs(first, [(v, 0 if counts is None else counts[index])
                                    for v, counts in updates if counts is None or index in counts], len(tokens))
        return RolloutSample(
            request_id=result.request.request_id, index=index, mode=result.request.mode,
            prompt_token_ids=list(result.prompt.input_ids), completion_token_ids=tokens, logprobs=logprobs,
            text=text, answer=answer, finish_reason=finish, truncated=finish == "length", policy_version=runs[0][0],
            versions=runs if len(runs) > 1 else None)

    # ---- weight sync ----
    def model_in_process(self) -> bool:
        """Whether the engine holds its model in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0 and one worker):
        then weights are handed over as in-memory tensors. Otherwise (vLLM's multiprocess engine, the default on
        GPUs, or several tensor-parallel workers) they go by path: collective_rpc arguments cross processes as
        msgpack, which carries no iterators and decodes tensors as plain lists."""
        from vllm.v1.engine.core_client import InprocClient
        from vllm.v1.executor.uniproc_executor import UniProcExecutor

        core = self.llm.llm_engine.engine_core
        return isinstance(core, InprocClient) and isinstance(core.engine_core.model_executor, UniProcExecutor)

    def load_weights(self, version: int, weights: Iterable[tuple[str, torch.Tensor]] | None = None,
                     path: str | None = None) -> int:
        """Full weights, once no request is in flight, or with in_flight_updates between two engine steps (see
        `_load_weights`, `_after_update`)."""
        if (weights is None) == (path is None):
            raise ValueError("give exactly one of weights= or path=")
        return self.loop.call(lambda: self._load_weights(version, weights, path), in_flight=self.in_flight_updates)

    def _load_weights(self, version: int, weights: Iterable[tuple[str, torch.Tensor]] | None,
                      path: str | None) -> int:
        """Full weights, as in-memory (name, tensor) pairs in the checkpoint's names, or a directory of
        safetensors. Drops the prefix cache (KV computed by the old weights) and any LoRA adapter.

        In-process engine: the pairs (or the directory, read tensor by tensor) go straight to vLLM's
        reload_weights. Engine in other processes: a directory is read there (`EngineWeightLoader`); in-memory
        pairs are first written, tensor by tensor, to one safetensors file in /dev/shm (or the temporary
        directory when /dev/shm lacks room), read there, then deleted: one transient copy of the weights."""
        if self.model_in_process():
            # A directory is read here, not by vLLM: vLLM's reload from a path repoints the engine's model
            # directory at it, and the engine then looks there for the tokenizer and processor.
            pairs = iter(list(weights)) if weights is not None else iter_safetensors(path)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": pairs})
        elif path is not None:
            self._reload_from_dir(os.path.abspath(path))
        else:
            pairs = list(weights)
            staged = staging_dir(nbytes(pairs), prefix=f"minicpmv-rl-w{self.worker_id}-v{version}-")
            try:
                write_safetensors(pairs, os.path.join(staged, SAFETENSORS_FILE))
                del pairs
                self._reload_from_dir(staged)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        self._after_update(version)
        self._forget_lora()
        self.policy_version = version
        return version

    def _reload_from_dir(self, path: str) -> None:
        try:
            self.llm.collective_rpc("rl_reload_from_dir", args=(path,))
        except Exception as e:
            if "rl_reload_from_dir" in str(e) and "not implemented" in str(e):
                raise RuntimeError("this engine runs its model in another process and lacks the weight loader "
                                   "that make_llm installs (worker_extension_cls=rollouts.vllm.engine.WORKER_EXTENSION)"
                                   ) from e
            raise

    def _after_update(self, version: int) -> None:
        """The new weights serve from the next engine step. Without requests in flight, everything the old weights
        computed goes (`_drop_caches`). In flight: each running request notes how many tokens each of its samples
        had (the later ones are `version`'s). kv_after_update=recompute: vLLM preempts them and drops the prefix and
        encoder caches now, so their KV and image features are recomputed by the new weights; keep: those stay.
        Either way the rest goes once the engine is next idle (with keep, a new request may reuse a cached prefix
        of the older weights until then)."""
        in_engine, queued = self.loop.unfinished() if self.in_flight_updates else (set(), set())
        if not (in_engine or queued):
            self._drop_caches()
            return
        marks = tokens_so_far(self.llm)
        for key in in_engine:  # a sample absent from `marks` had finished: none of its tokens are `version`'s
            self._runs.setdefault(key, []).append((version, marks.get(key, {})))
        for key in queued:  # not in the engine yet (behind a failed step's retries): every token is `version`'s
            self._runs.setdefault(key, []).append((version, None))
        if self.kv_after_update == "recompute":  # every running request back to waiting, its KV blocks freed
            self.llm.reset_prefix_cache(reset_running_requests=True)
            self.llm.llm_engine.reset_encoder_cache()  # image features are recomputed with the new vision weights
        self.loop.defer(self._drop_caches)  # the rest (the input caches reload_weights desyncs) once idle

    def _drop_caches(self) -> None:
        """Everything computed by the old weights goes: KV blocks of the prefix cache and vision-encoder outputs
        (the engine's scheduler-side bookkeeping and the runner-side storage together: resetting only one side,
        as reload_weights does, leaves the engine asking for cache entries that no longer exist), and the
        multimodal input caches of both the front end and the runner, which reload_weights also desyncs."""
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()

    # ---- in-memory weight transfer (rollouts.transfer; the engine side is rollouts.vllm.transfer) ----
    def _control(self, fn, hold: bool | None = None):
        """fn in the engine's thread: once no request is in flight, or with in_flight_updates between two steps
        (`hold`: the engine takes no step from transfer_start to transfer_finish, the weights half-loaded)."""
        if self.in_flight_updates:
            return self.loop.call(fn, in_flight=True, hold=hold)
        return self.loop.call(fn)

    def transfer_init(self, init_info: dict) -> None:
        """Join the learner's broadcast group (blocks until every member has joined), once no request is in
        flight. A group this worker was in before is left first."""
        self._control(lambda: self.llm.collective_rpc("init_weight_transfer_engine", args=(init_info,)))

    def transfer_start(self) -> None:
        self._control(lambda: self.llm.collective_rpc("start_weight_update"), hold=True)

    def transfer_update(self, update_info: dict) -> None:
        """Receive the buckets the learner broadcasts, each loaded into the model as it arrives."""
        self._control(lambda: self.llm.collective_rpc("update_weights", args=(update_info,)))

    def transfer_finish(self, version: int) -> list[dict | None]:
        """Finish the update, drop what the old weights computed (as a reload does) and serve `version`; returns
        each engine process's report (names and checksums of what it received) for the sender to verify."""
        def finish():
            self.llm.collective_rpc("finish_weight_update")
            reports = self.llm.collective_rpc("rl_transfer_report")
            self._after_update(version)
            self._forget_lora()
            self.policy_version = version
            return reports
        return self._control(finish, hold=False)

    def transfer_close(self) -> None:
        self._control(lambda: self.llm.collective_rpc("shutdown_weight_transfer_engine"), hold=False)

    def model_dtype(self) -> str:
        """The dtype the engine holds its weights in ("bfloat16"): the wire dtype of a transfer."""
        return str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")

    def load_shared_weights(self, version: int, triples) -> int:
        """Full weights sent by the pool as shared-memory numpy arrays (see `rollouts.weights.to_shared`)."""
        return self.load_weights(version, weights=from_shared(triples))

    def load_lora(self, version: int, adapter_path: str) -> int:
        """`_load_lora`, once no request is in flight."""
        return self.loop.call(lambda: self._load_lora(version, adapter_path))

    def _load_lora(self, version: int, adapter_path: str) -> int:
        """A PEFT adapter directory on top of the base weights; a new adapter id per version, so vLLM never
        serves a cached older adapter under the same id. The adapter is loaded into the engine now (vLLM would
        otherwise read the directory at the first request that uses it), so the directory may be deleted as soon
        as this returns; the previous adapter is removed from the engine."""
        from vllm.lora.request import LoRARequest

        request = LoRARequest(f"policy-v{version}", version + 1, os.path.abspath(adapter_path))
        self.llm.llm_engine.add_lora(request)  # reads the directory now; a bad adapter fails here
        previous, self.lora_request = self.lora_request, request
        if previous is not None and previous.lora_int_id != request.lora_int_id:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
        self._drop_caches()
        self.policy_version = version
        return version

    def unload_lora(self, version: int) -> int:
        """Back to the engine's own weights (no adapter), once no request is in flight."""
        return self.loop.call(lambda: self._unload_lora(version))

    def _unload_lora(self, version: int) -> int:
        if self.lora_request is not None:
            self._forget_lora()
            self._drop_caches()
        self.policy_version = version
        return version

    def _forget_lora(self) -> None:
        """Stop using the adapter and free it in the engine (a weight reload has already removed it there)."""
        previous, self.lora_request = self.lora_request, None
        if previous is not None:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)  # False, no error, when already gone

    def _engine_lost(self, reason: str) -> None:
        """The engine is dead or hung (`EngineLoop.on_dead`), in a worker that is a Ray actor: the actor's process
        ends, after the engine's own processes (a hung core would outlive it) and the actor's temp folder, so the
        pool sees a lost worker and replaces it."""
        import logging

        import psutil

        logging.getLogger(__name__).error("rollout worker %d: %s; ending the worker so that the pool replaces it",
                                          self.worker_id, reason)
        try:
            for child in psutil.Process().children(recursive=True):
                child.kill()
        except Exception:  # noqa: BLE001 - ending anyway
            pass
        if getattr(self, "own_tempdir", None) is not None:
            shutil.rmtree(self.own_tempdir, ignore_errors=True)
        os._exit(70)

    # ---- lifetime ----
    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop the engine and free what it holds. For vLLM's multiprocess engine: its processes, and the POSIX
        shared memory (`psm_*`) of its message queues, which outlives a process that is killed instead (as
        ray.kill / ray.shutdown do). `timeout`: seconds the engine's processes get to exit before they are
        killed. Idempotent; the worker cannot sample afterwards."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            def stop():
                llm.llm_engine.engine_core.shutdown(timeout=timeout)
                release_tempdir(llm)
            self.loop.close(stop)  # requests still in flight end with an error
        if getattr(self, "own_tempdir", None) is not None:  # an actor: killed next, with no exit handlers
            shutil.rmtree(self.own_tempdir, ignore_errors=True)
