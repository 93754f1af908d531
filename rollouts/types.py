"""What goes into the rollout layer and what comes out of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.modes import check_mode

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

    def check(self) -> None:
        check_mode(self.mode, f"request {self.request_id}: mode")
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"request {self.request_id}: n={self.n!r}, must be an integer >= 1")


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

    @property
    def ok(self) -> bool:
        return self.error is None


def in_request_order(requests: list[RolloutRequest], results) -> list[RolloutResult]:
    """Streamed results (any order, each request once) in the order of `requests`: every backend's `generate`."""
    by_id = {r.request.request_id: r for r in results}
    return [by_id[r.request_id] for r in requests]
