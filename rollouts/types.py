"""What goes into the rollout layer and what comes out of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.modes import check_mode, split_completion

if TYPE_CHECKING:  # an annotation only: this module imports without torch (rl.config reads SamplingConfig)
    from model.processor import PromptInputs


@dataclass
class SamplingConfig:
    """Sampling of one mode. Defaults follow the paper where it speaks (temperature 1.0)."""
    max_new_tokens: int = 1024
    """Completion budget; the paper uses 8192 for its long mode."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k."""
    stop: list[str] = field(default_factory=list)

    def validate(self, where: str = "sampling") -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"{where}.max_new_tokens={self.max_new_tokens}: must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"{where}.temperature={self.temperature}: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"{where}.top_p={self.top_p}: must be in (0, 1]")

    def to_vllm(self, n: int, seed: int | None = None):
        from vllm import SamplingParams

        return SamplingParams(n=n, max_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k if self.top_k > 0 else 0, stop=list(self.stop) or None,
                              logprobs=0, seed=seed)


def default_mode_sampling() -> dict[str, SamplingConfig]:
    return {"short": SamplingConfig(max_new_tokens=1024), "long": SamplingConfig(max_new_tokens=8192),
            "auto": SamplingConfig(max_new_tokens=8192)}


@dataclass
class RolloutRequest:
    """One prompt to sample a group of completions for."""
    request_id: str
    messages: list[dict]
    """Chat messages; content parts may hold images (PIL, path or bytes) and videos."""
    mode: str = "auto"
    """short | long | auto: applied through the chat template's thinking switch; all n samples share it."""
    n: int = 8
    """Group size (the paper: 8)."""
    sampling: SamplingConfig | None = None
    """Overrides the pool's per-mode sampling for this request."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Passed through untouched (reference answer, reward name, data row...)."""
    seed: int | None = None
    """Sampling seed: the same seed gives the same samples on any worker, whatever ran before (resume is exact).
    vLLM seeds sample k with seed + k, so space the seeds of different requests by at least n."""
    resume: list[RolloutSample] | None = None
    """A partial rollout (`resumed`): the n samples an interrupted request had drawn, in order. A finished one comes
    back as it is; a cut-off one (`INTERRUPTED`) is continued from its last token, with what is left of its budget,
    and comes back stitched: its tokens, log-probs and versions first, the continuation's after."""

    def check(self) -> None:
        check_mode(self.mode, f"request {self.request_id}: mode")
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"request {self.request_id}: n={self.n!r}, must be an integer >= 1")
        if self.resume is not None and len(self.resume) != self.n:
            raise ValueError(f"request {self.request_id}: resumes {len(self.resume)} samples, n={self.n}")


INTERRUPTED = "interrupted"
"""The finish_reason of a sample cut off by an interrupt (`RolloutBackend.interrupt`): to be continued."""


@dataclass
class RolloutSample:
    """One sampled completion with everything the learner needs."""
    request_id: str
    index: int
    mode: str
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    logprobs: list[float]
    """Per completion token: the sampling engine's log-probability under the distribution it sampled from (after
    temperature, top-k and top-p: vLLM's processed log-probs)."""
    text: str
    answer: str
    """The final-answer part: after `</think>` in long mode, the whole text in short mode."""
    finish_reason: str | None
    truncated: bool
    """The completion hit max_new_tokens (no EOS, no stop string)."""
    policy_version: int
    """The policy version that drew its first token (with `versions`, the oldest)."""
    versions: list[tuple[int, int]] | None = None
    """When the weights changed while it was sampled (an in-flight update, `run.async_mode=fully_async`): runs of
    (policy version, index of the run's first completion token), in order, the first at index 0; None when every
    token came from `policy_version`. See `token_versions`."""

    @property
    def cut_off(self) -> bool:
        """Interrupted before it finished (a partial rollout's sample: `RolloutRequest.resume`)."""
        return self.finish_reason == INTERRUPTED

    def token_versions(self) -> list[int]:
        """The policy version of each completion token."""
        runs = self.versions or [(self.policy_version, 0)]
        out: list[int] = []
        for (version, start), (_, end) in zip(runs, [*runs[1:], (None, len(self.completion_token_ids))]):
            out += [version] * (end - start)
        return out


@dataclass
class RolloutResult:
    """The group of samples of one request, or the error that stopped it (the rest of the batch goes on)."""
    request: RolloutRequest
    samples: list[RolloutSample] = field(default_factory=list)
    prompt: PromptInputs | None = None
    """The processed prompt (token ids, image slices, bounds): what the learner feeds `MiniCPMV.forward`."""
    error: str | None = None
    worker_id: int | None = None
    policy_version: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    partial: bool = False
    """What an interrupt handed back (`RolloutBackend.interrupt`): the samples drawn so far, the cut-off ones
    `INTERRUPTED`; no prompt. `resumed` makes the request that goes on from there."""

    @property
    def ok(self) -> bool:
        return self.error is None


def stitch(prefix: RolloutSample, more: RolloutSample, text: str | None = None) -> RolloutSample:
    """A cut-off sample continued: `more` is what the continuation drew (its prompt: the request's and the prefix's
    tokens; its version runs counted from its own first token). The tokens, log-probs and version runs of both, in
    order; finish the continuation's; `text`: the whole completion decoded (default: the two texts joined)."""
    offset = len(prefix.completion_token_ids)
    runs = list(prefix.versions or [(prefix.policy_version, 0)]) if offset else []
    for version, start in (more.versions or [(more.policy_version, 0)]) if more.completion_token_ids else ():
        if not runs or version != runs[-1][0]:
            runs.append((version, offset + start))
    runs = runs or [(more.policy_version, 0)]
    text = prefix.text + more.text if text is None else text
    return RolloutSample(
        request_id=more.request_id, index=prefix.index, mode=prefix.mode, prompt_token_ids=prefix.prompt_token_ids,
        completion_token_ids=prefix.completion_token_ids + more.completion_token_ids,
        logprobs=prefix.logprobs + more.logprobs, text=text, answer=split_completion(text, prefix.mode)[1],
        finish_reason=more.finish_reason, truncated=more.truncated, policy_version=runs[0][0],
        versions=runs if len(runs) > 1 else None)


def resumed(partial: RolloutResult, request_id: str, seed: int | None) -> RolloutRequest:
    """The request that continues an interrupted group (`RolloutResult.partial`): the same prompt, mode, sampling and
    meta, the samples drawn so far to resume (`RolloutRequest.resume`), a request id and seed of its own."""
    from dataclasses import replace

    return replace(partial.request, request_id=request_id, seed=seed, resume=list(partial.samples),
                   meta=dict(partial.request.meta))


def in_request_order(requests: list[RolloutRequest], results) -> list[RolloutResult]:
    """Streamed results (any order, each request once) in the order of `requests`: every backend's `generate`."""
    by_id = {r.request.request_id: r for r in results}
    return [by_id[r.request_id] for r in requests]
