"""Scoring rollouts with the run's combined reward: one path for training steps, evaluation and `rl-eval`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.modes import thinks
from rewards import CombineConfig, RewardInput, RewardRunner, score_combined
from rewards.api import takes_trl_columns
from rollouts.types import RolloutResult

Scored = tuple[RolloutResult, list, list]
"""(result, one total per sample (None = unscored), one {part: score} per sample)."""


@dataclass
class PartHealth:
    """How one reward part fared on a batch: rows scored, errors and timeouts, and the first message of each."""
    rows: int = 0
    errors: int = 0
    timeouts: int = 0
    unscored: int = 0
    """Rows the part returned None for without an error (it could not score them)."""
    first_error: str | None = None
    first_timeout: str | None = None

    @property
    def failed_every_row(self) -> bool:
        """No row scored: each raised, timed out or came back None (a part that never scores trains nothing)."""
        return self.rows > 0 and self.errors + self.timeouts + self.unscored == self.rows

    @property
    def problem(self) -> str:
        """What went wrong on its rows, in the words of the first error or timeout, else the None answers."""
        return self.first_error or self.first_timeout or f"it returned None (no score) for all {self.rows} rows"

    def add(self, other: "PartHealth") -> None:
        self.rows += other.rows
        self.errors += other.errors
        self.timeouts += other.timeouts
        self.unscored += other.unscored
        self.first_error = self.first_error or other.first_error
        self.first_timeout = self.first_timeout or other.first_timeout


def run_combine(combine: CombineConfig, allowed_rewards: list[str]) -> CombineConfig:
    """The combined reward a run scores with: every `acc` part (the row's own verifier) takes the run's
    `data.allowed_rewards` as its verifiers unless its options say otherwise, so the data schema and the router
    read one list (a plugin listed there works as a row verifier)."""
    options = {k: dict(v) for k, v in combine.part_options.items()}
    for part, spec in combine.parts.items():
        if spec == "acc" and "allowed" not in options.get(part, {}):
            options.setdefault(part, {})["allowed"] = tuple(allowed_rewards)
    return replace(combine, part_options=options)


def score_results(results: list[RolloutResult], runner: RewardRunner, combine: CombineConfig,
                  default_reward: str) -> list[Scored]:
    """Every sample of every result scored; the samples of one result form one group (z-normalised parts)."""
    return score_with_health(results, runner, combine, default_reward)[0]


def score_with_health(results: list[RolloutResult], runner: RewardRunner, combine: CombineConfig,
                      default_reward: str) -> tuple[list[Scored], dict[str, PartHealth]]:
    """`score_results`, and per reward part its errors and timeouts (a timeout's message starts "timeout")."""
    inputs, owners = [], []
    specs = list(combine.parts.values()) + [a for o in combine.part_options.values() for a in o.get("allowed", ())]
    trl = any(takes_trl_columns(spec) for spec in specs)  # a part, or a row verifier acc may route to
    for k, result in enumerate(results):
        meta = result.request.meta
        for s in result.samples:
            extra = {"completion_ids": list(s.completion_token_ids),
                     "prompt": result.prompt.text if result.prompt is not None else None} if trl else {}
            inputs.append(RewardInput.make(s.text, meta.get("answer"), s.mode, dict(
                meta.get("reward_meta", {}), verifier=meta.get("reward", default_reward),
                completion_tokens=len(s.completion_token_ids), **extra)))
            owners.append(k)
    combined = score_combined(inputs, owners, combine, runner) if inputs else None
    out = []
    for k, result in enumerate(results):
        idx = [i for i, o in enumerate(owners) if o == k]
        totals = [combined.total[i].score for i in idx]
        parts = [{name: outs[i].score for name, outs in combined.parts.items()} for i in idx]
        out.append((result, totals, parts))
    health: dict[str, PartHealth] = {}
    for name, outcomes in (combined.parts.items() if combined else ()):
        h = health[name] = PartHealth(rows=len(outcomes))
        for o in outcomes:
            if o.error is None:
                h.unscored += o.score is None
                continue
            if o.error.startswith("timeout"):
                h.timeouts += 1
                h.first_timeout = h.first_timeout or o.error
            else:
                h.errors += 1
                h.first_error = h.first_error or o.error
    return out, health


def metric_rows(scored: list[Scored]) -> list[dict]:
    """One row per sample for `rl.metrics.mode_metrics`: mode, reward, parts, tokens, truncated, prompt_tokens,
    group (the request id) and source (the row's data source, from its id: "source:..." or the file)."""
    return [{"mode": s.mode, "reward": total, "parts": part, "tokens": len(s.completion_token_ids),
             "truncated": s.truncated, "prompt_tokens": len(s.prompt_token_ids), "group": result.request.request_id,
             "source": row_source(result.request.meta), "thinks": thinks(s.text, s.mode)}
            for result, totals, parts in scored for s, total, part in zip(result.samples, totals, parts)]


def completion_rows(scored: list[Scored], limit: int) -> list[dict]:
    """The first `limit` samples of the scored groups, for a table of completions: the prompt as the model saw it,
    the completion, its mode, reward and parts, and the row it came from."""
    rows: list[dict] = []
    for result, totals, parts in scored:
        for s, total, part in zip(result.samples, totals, parts):
            if len(rows) >= limit:
                return rows
            rows.append({"row": result.request.meta.get("row"), "mode": s.mode, "reward": total, "parts": part,
                         "prompt": result.prompt.text if result.prompt is not None else None,
                         "completion": s.text, "tokens": len(s.completion_token_ids)})
    return rows


def row_source(meta: dict) -> str | None:
    """The data source a request's row came from: its file's name, or the source name of a mapped data set."""
    source = meta.get("source")
    return str(source).rstrip("/").rsplit("/", 1)[-1] if source else None
