"""An in-process rollout backend without vLLM, for fast tests of the pool, the trainer and reward plugins.

`FakeBackend` keeps the contract of `rollouts.backend.RolloutBackend`: it prepares prompts with the real
`model.processor` (so the learner gets real prompt inputs), and writes each sample's text with `respond(request,
index, rng)`, tokenized by the checkpoint's tokenizer. Generation takes `seconds_per_token` per token of a group's
longest sample, all requests of a call at once (as in one continuous batch), so groups finish in order of length and
aborts land mid-generation; an interrupt cuts a group where its time so far has reached, and a resumed sample goes
on with a new response after its tokens (partial rollouts). Its log-probabilities are a constant (`logprob`), not
the policy's: on it, the learner's ratio against the engine (TIS, the one-step-off loop's decoupled ratio) means
nothing.
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import random
import threading
import time
import zlib
from typing import Callable, Iterable, Iterator

from core.modes import split_completion
from model.processor import Processor

from .types import (INTERRUPTED, RolloutRequest, RolloutResult, RolloutSample, SamplingConfig,
                    default_mode_sampling, in_request_order, stitch)

Respond = Callable[[RolloutRequest, int, random.Random], str]


def answer_half_the_time(request: RolloutRequest, index: int, rng: random.Random) -> str:
    """The request's reference answer (meta["answer"]) for every other sample of a group, a wrong one for the rest
    (so every group of two or more has reward variance, as a learning step needs); long mode thinks first."""
    answer = str(request.meta.get("answer", "")) if index % 2 == 0 else "no idea"
    text = f"The answer is \\boxed{{{answer}}}."
    return f"Let me think.\n</think>\n\n{text}" if request.mode == "long" else text


class FakeBackend:
    def __init__(self, ckpt: str, worker_id: int = 0, mode_sampling: dict[str, SamplingConfig] | None = None,
                 seed: int = 0, max_model_len: int = 4096, respond: Respond = answer_half_the_time,
                 seconds_per_token: float = 0.0, logprob: float = -1.0, max_image_pixels: int | None | str = "pil",
                 video_sampling: dict | None = None, in_flight_updates: bool = False, **engine_options):
        """engine_options (dtype, enable_lora...) are accepted and ignored, so the pool can start it as it
        starts the vLLM worker. in_flight_updates: as the vLLM worker's, simulated: a sample whose weights changed
        between its request's start and its result (with seconds_per_token > 0) gets two version runs, the newer
        version's from half its tokens on."""
        self.worker_id = worker_id
        self.mode_sampling = mode_sampling or default_mode_sampling()
        self.seed, self.max_model_len = seed, max_model_len
        self.respond, self.seconds_per_token, self.logprob = respond, seconds_per_token, logprob
        self.processor = Processor.from_pretrained(ckpt, max_image_pixels=max_image_pixels,
                                                   video_sampling=video_sampling)
        self.tokenizer = self.processor.tokenizer
        self.policy_version = 0
        self.in_flight_updates = in_flight_updates
        self.loads: list[tuple[str, int, str | None]] = []
        """(kind, version, path) of every weight or adapter load, in order."""
        self._cond = threading.Condition()
        self._live: set[str] = set()
        self._aborted: set[str] = set()
        self._cut: dict[str, int] = {}  # interrupted, not yet handed back: request id -> its tokens then
        self._started: dict[str, float] = {}

    def version(self) -> int:
        return self.policy_version

    def in_flight(self) -> int:
        with self._cond:
            return len(self._live)

    # ---- sampling ----
    def generate(self, requests: list[RolloutRequest]) -> list[RolloutResult]:
        return in_request_order(requests, self.stream(requests))

    def stream(self, requests: list[RolloutRequest]) -> Iterator[RolloutResult]:
        start = time.monotonic()
        queue: list[tuple[float, int, RolloutResult]] = []
        early = []
        for i, request in enumerate(requests):
            result = RolloutResult(request=request, worker_id=self.worker_id, policy_version=self.policy_version)
            try:
                request.check()
                result.prompt = self.processor(request.messages, request.mode)
                result.samples = self._samples(request, result.prompt.input_ids)
            except Exception as e:  # noqa: BLE001 - the request fails alone, with its reason
                result.error = f"{type(e).__name__}: {e}"
                yield result
                continue
            drawn = [len(p.completion_token_ids) if p.cut_off else len(s.completion_token_ids)
                     for p, s in zip(request.resume or [None] * request.n, result.samples)] if request.resume else \
                [0] * request.n
            longest = max(len(s.completion_token_ids) - d for s, d in zip(result.samples, drawn))
            if longest <= 0:  # a resumed group with nothing left to draw
                early.append(result)
                continue
            heapq.heappush(queue, (start + longest * self.seconds_per_token, i, result))
        yield from early
        ids = {r.request.request_id for _, _, r in queue}
        with self._cond:
            self._live |= ids
            self._started.update({rid: start for rid in ids})
        try:
            while queue:
                with self._cond:
                    cut = {rid: self._cut.pop(rid) for rid in list(self._cut) if rid in ids}
                    if not cut:
                        wait = queue[0][0] - time.monotonic()
                        if wait > 0:
                            self._cond.wait(wait)  # (an interrupt wakes it)
                            continue
                if cut:
                    for entry in [e for e in queue if e[2].request.request_id in cut]:
                        queue.remove(entry)
                        yield self._partial(entry[2], cut[entry[2].request.request_id])
                    heapq.heapify(queue)
                    continue
                due, _, result = heapq.heappop(queue)
                rid = result.request.request_id
                with self._cond:
                    if rid in self._aborted:
                        self._aborted.discard(rid)
                        continue
                    self._live.discard(rid)
                if self.in_flight_updates and result.ok:
                    for sample in result.samples:
                        if (sample.versions is None and sample.policy_version != self.policy_version
                                and len(sample.completion_token_ids) > 1):
                            sample.versions = [(sample.policy_version, 0),
                                               (self.policy_version, len(sample.completion_token_ids) // 2)]
                yield result
        finally:
            with self._cond:
                self._live -= ids
                self._aborted -= ids
                for rid in ids:
                    self._cut.pop(rid, None)
                    self._started.pop(rid, None)

    def _samples(self, request: RolloutRequest, prompt_ids: list[int]) -> list[RolloutSample]:
        """Each sample as `respond` writes it; a resumed one (`RolloutRequest.resume`) keeps its finished samples and
        continues each cut-off one with a whole new response after its tokens (within its budget)."""
        budget = (request.sampling or self.mode_sampling[request.mode]).max_new_tokens
        samples = []
        for k in range(request.n):
            prefix = request.resume[k] if request.resume else None
            if prefix is not None and not prefix.cut_off:
                samples.append(prefix)
                continue
            drawn = len(prefix.completion_token_ids) if prefix is not None else 0
            seed = request.seed if request.seed is not None else zlib.crc32(request.request_id.encode())
            rng = random.Random(f"{self.seed}-{seed}-{k}")
            text = self.respond(request, k, rng)
            tokens = self.tokenizer.encode(text, add_special_tokens=False)[:budget - drawn]
            truncated = len(tokens) == budget - drawn
            if not truncated:
                tokens.append(self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            sample = RolloutSample(
                request_id=request.request_id, index=k, mode=request.mode, prompt_token_ids=list(prompt_ids),
                completion_token_ids=tokens, logprobs=[self.logprob] * len(tokens), text=text,
                answer=split_completion(text, request.mode)[1], finish_reason="length" if truncated else "stop",
                truncated=truncated, policy_version=self.policy_version)
            samples.append(sample if prefix is None else stitch(prefix, sample))
        return samples

    def _partial(self, result: RolloutResult, tokens: int) -> RolloutResult:
        """The group as an interrupt `tokens` tokens after its start leaves it: samples that had finished whole, the
        others cut there (a resumed sample's tokens before this call all kept)."""
        resume = result.request.resume or [None] * result.request.n
        samples = []
        for sample, prefix in zip(result.samples, resume):
            keep = (len(prefix.completion_token_ids) if prefix is not None and prefix.cut_off else 0) + tokens
            if prefix is not None and not prefix.cut_off or len(sample.completion_token_ids) <= keep:
                samples.append(sample)
                continue
            cut = sample.completion_token_ids[:keep]
            text = self.tokenizer.decode(cut, skip_special_tokens=True)
            samples.append(dataclasses.replace(
                sample, completion_token_ids=cut, logprobs=sample.logprobs[:keep], text=text,
                answer=split_completion(text, sample.mode)[1], finish_reason=INTERRUPTED, truncated=False,
                versions=[(v, at) for v, at in sample.versions if at < keep] if sample.versions else None))
        return dataclasses.replace(result, samples=samples, partial=True)

    def abort(self, request_ids: Iterable[str]) -> list[str]:
        with self._cond:
            cancelled = [i for i in request_ids if i in self._live]
            self._live -= set(cancelled)
            self._aborted |= set(cancelled)
        return cancelled

    def interrupt(self, request_ids: Iterable[str]) -> list[str]:
        """As the vLLM worker's: each request still running comes back through its stream at once, `partial`, cut
        after the tokens its time so far allows (seconds_per_token; 0 tokens without it)."""
        with self._cond:
            now, cut = time.monotonic(), [i for i in request_ids if i in self._live]
            for rid in cut:
                self._live.discard(rid)
                spent = now - self._started[rid]
                self._cut[rid] = int(spent / self.seconds_per_token) if self.seconds_per_token > 0 else 0
            self._cond.notify_all()
        return cut

    # ---- weights ----
    def load_weights(self, version: int, weights=None, path: str | None = None) -> int:
        if (weights is None) == (path is None):
            raise ValueError("give exactly one of weights= or path=")
        self.loads.append(("weights", version, path))
        self.policy_version = version
        return version

    def load_lora(self, version: int, adapter_path: str) -> int:
        self.loads.append(("lora", version, adapter_path))
        self.policy_version = version
        return version

    def unload_lora(self, version: int) -> int:
        self.loads.append(("unload_lora", version, None))
        self.policy_version = version
        return version

    # ---- in-memory weight transfer: the real group and buckets (rollouts.transfer), nothing to load them into ----
    def transfer_init(self, init_info: dict) -> None:
        from .transfer import Group

        self.transfer_close()
        self._group = Group(init_info["group"], init_info["master_address"], init_info["master_port"],
                            init_info["rank_offset"], init_info["world_size"], init_info.get("timeout_s", 600.0))
        self._bucket_bytes = init_info["bucket_bytes"]

    def transfer_start(self) -> None:
        self._report = {"names": [], "checksums": []}

    def transfer_update(self, update_info: dict) -> None:
        from .transfer import metas_of, receive_buckets

        self._report["checksums"] += receive_buckets(self._group, metas_of(update_info), self._bucket_bytes,
                                                     lambda pairs: None)
        self._report["names"] += list(update_info["names"])

    def transfer_finish(self, version: int) -> list[dict]:
        self.loads.append(("transfer", version, None))
        self.policy_version = version
        report, self._report = self._report, None
        return [report]

    def transfer_close(self) -> None:
        group, self._group = getattr(self, "_group", None), None
        if group is not None:
            group.close()

    def model_dtype(self) -> str | None:
        return None  # no model: weights arrive as the learner sends them

    def pid(self) -> int:
        return os.getpid()

    def load_shared_weights(self, version: int, triples) -> int:
        return self.load_weights(version, weights=list(triples))

    def shutdown(self, timeout: float = 60.0) -> None:
        self.transfer_close()
