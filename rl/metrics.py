"""A step's metrics (phase timings, per-mode rewards and lengths, the update, the reward parts' health) and where they
go: metrics.jsonl, TensorBoard, and W&B or MLflow when asked."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import logging
import time
from pathlib import Path

from .errors import RewardFailure
from .modes import plan_metrics
from .scoring import PartHealth, metric_rows

log = logging.getLogger(__name__)


class Phases:
    """Seconds per named phase of one step."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def correct(parts: dict) -> float | None:
    """1.0 when the `acc` part is 1 (an unscored acc counts as wrong), 0.0 otherwise; None without an acc part."""
    return float((parts.get("acc") or 0.0) >= 1.0) if "acc" in parts else None


def spread(values, key: str) -> dict[str, float]:
    """`key`/std, /min, /max of the values that are not None (std: the population's; nothing for no value)."""
    values = [v for v in values if v is not None]
    if not values:
        return {}
    return {f"{key}/std": statistics.pstdev(values), f"{key}/min": min(values), f"{key}/max": max(values)}


def zero_std_share(rows: list[dict]) -> float | None:
    """The share of groups whose scored rewards are all equal (TRL's frac_reward_zero_std): no GRPO signal."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        if "group" in r and r["reward"] is not None:
            groups.setdefault(r["group"], []).append(r["reward"])
    return mean(float(max(v) == min(v)) for v in groups.values()) if groups else None


def mode_metrics(rows: list[dict], prefix: str = "") -> dict[str, float]:
    """rows: one dict per sample with mode, reward (None = unscored), parts {name: score|None}, tokens, truncated,
    and optionally prompt_tokens, group and source. Keys: reward/mean (and /std, /min, /max), reward/<mode>/mean
    (and /std, /min, /max), reward/<mode>/<part>, accuracy/<mode>, accuracy/source/<source>, format/<mode>,
    tokens/<mode>/mean (and /min, /max), tokens/prompt/mean and /max, truncation/<mode>, unscored/<mode>,
    mode/long_share (the share of samples in long mode), frac_reward_zero_std (groups without reward spread)."""
    out: dict[str, float | None] = {"reward/mean": mean(r["reward"] for r in rows)}
    out.update(spread((r["reward"] for r in rows), "reward"))
    out["frac_reward_zero_std"] = zero_std_share(rows)
    if rows:
        out["mode/long_share"] = mean(float(r["mode"] == "long") for r in rows)
    prompts = [r["prompt_tokens"] for r in rows if r.get("prompt_tokens") is not None]
    if prompts:
        out["tokens/prompt/mean"], out["tokens/prompt/max"] = statistics.fmean(prompts), max(prompts)
    for source in sorted({r["source"] for r in rows if r.get("source") and "acc" in r["parts"]}):
        out[f"accuracy/source/{source}"] = mean(correct(r["parts"]) or 0.0 for r in rows
                                                if r.get("source") == source and "acc" in r["parts"])
    for mode in sorted({r["mode"] for r in rows}):
        sel = [r for r in rows if r["mode"] == mode]
        out[f"reward/{mode}/mean"] = mean(r["reward"] for r in sel)
        out.update({k.replace("reward/", f"reward/{mode}/", 1): v
                    for k, v in spread((r["reward"] for r in sel), "reward").items()})
        for part in sorted({p for r in sel for p in r["parts"]}):
            out[f"reward/{mode}/{part}"] = mean(r["parts"].get(part) for r in sel)
        if any("acc" in r["parts"] for r in sel):
            out[f"accuracy/{mode}"] = mean(correct(r["parts"]) or 0.0 for r in sel)
        if any("format" in r["parts"] for r in sel):
            out[f"format/{mode}"] = mean(float((r["parts"].get("format") or 0) > 0) for r in sel)
        out[f"tokens/{mode}/mean"] = mean(r["tokens"] for r in sel)
        out[f"tokens/{mode}/min"], out[f"tokens/{mode}/max"] = min(r["tokens"] for r in sel), max(r["tokens"] for r in sel)
        out[f"truncation/{mode}"] = mean(float(r["truncated"]) for r in sel)
        out[f"unscored/{mode}"] = mean(float(r["reward"] is None) for r in sel)
    return {prefix + k: v for k, v in out.items() if v is not None}


def truncate_records(path: Path, last_step: int) -> None:
    """Keep the JSON lines of `path` whose "step" is at most `last_step` (atomically)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines(keepends=True)
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


class MetricsLogger:
    def __init__(self, run_dir: Path, tensorboard: bool = True, wandb: bool = False, mlflow: bool = False,
                 config: dict | None = None, resume_step: int | None = None, project: str | None = None,
                 name: str | None = None, tags: list[str] | None = None):
        """resume_step: the step a resumed run continues from; the records of later steps (written after that
        checkpoint by the run that stopped) are dropped from metrics.jsonl, eval.jsonl, completions.jsonl and
        TensorBoard, so that every step is logged once. project, name, tags: the W&B project / MLflow experiment,
        the run's name (default: run.dir's folder name) and tags."""
        if resume_step is not None:
            for file in ("metrics.jsonl", "eval.jsonl", "completions.jsonl"):
                truncate_records(run_dir / file, resume_step)
        self.run_dir = run_dir
        self.file = open(run_dir / "metrics.jsonl", "a")
        name = name or Path(run_dir).resolve().name
        self.tb = self.wandb = self.mlflow = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"),
                                    purge_step=None if resume_step is None else resume_step + 1)
        if wandb:
            import wandb as wb

            self.wandb = wb.init(dir=str(run_dir), config=config, project=project, name=name, tags=list(tags or []))
        if mlflow:
            import mlflow as mf

            if project:
                mf.set_experiment(project)
            mf.start_run(run_name=name, tags={tag: "" for tag in tags or []})
            self.mlflow = mf

    def log(self, step: int, metrics: dict) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        if self.tb is not None:
            for k, v in numeric.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(numeric, step=step)
        if self.mlflow is not None:
            self.mlflow.log_metrics({k.replace("/", "."): v for k, v in numeric.items()}, step=step)

    def log_completions(self, step: int, rows: list[dict]) -> None:
        """A table of sampled completions (dicts of prompt, completion, mode, reward, parts): appended to
        completions.jsonl, as Markdown text in TensorBoard, and as a W&B table."""
        with open(self.run_dir / "completions.jsonl", "a") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}) + "\n")
        columns = ["mode", "reward", "prompt", "completion"]
        if self.tb is not None:
            cell = lambda v: str(v).replace("|", "\\|").replace("\n", "<br>")  # noqa: E731 - a Markdown cell
            table = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n" + "".join(
                "| " + " | ".join(cell(r.get(c)) for c in columns) + " |\n" for r in rows)
            self.tb.add_text("completions", table, step)
            self.tb.flush()
        if self.wandb is not None:
            import wandb as wb

            self.wandb.log({"completions": wb.Table(columns=columns, data=[[r.get(c) for c in columns]
                                                                          for r in rows])}, step=step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()


LEARNER_TOP = {"loss": "loss", "kl": "kl", "entropy": "entropy", "clip_frac": "clip_fraction",
               "peak_mb": "memory/learner_peak_mb"}
"""The learner's metrics logged under a top-level name (each once); the rest go under `learner/`."""


def step_metrics(batch, update, phases: Phases, start: float, benefit) -> dict:
    """What a step logs of its batch (`rl.batches.Batch`) and update (`rl.batches.Update`): the learner's metrics,
    per-mode rewards and lengths (`mode_metrics`), what the mode schedule did (`rl.modes.plan_metrics`, with the
    `benefit` tracker), generated tokens and their rate, advantage statistics, the phase timings, dynamic sampling's
    counts and the samples' staleness (the policy versions their tokens span: more than one after an in-flight
    update, run.async_mode=fully_async)."""
    metrics = {LEARNER_TOP.get(k, f"learner/{k}"): v for k, v in update.learned.items()}
    rows = metric_rows(batch.seen)
    metrics.update(mode_metrics(rows))
    metrics.update(plan_metrics(batch.pairs, rows, benefit))
    generated = sum(r["tokens"] for r in rows) - batch.tokens_saved + batch.tokens_carried  # (drawn in this batch)
    metrics.update({"tokens/generated": generated,
                    "memory/trainer_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    if batch.seconds.get("generate"):
        metrics["tokens/per_s"] = generated / batch.seconds["generate"]
    if update.samples:
        advantages = [s.advantage for s in update.samples]
        metrics["advantage/mean"] = statistics.fmean(advantages)
        metrics["advantage/std"] = statistics.pstdev(advantages)
    metrics.update({f"time/{k}": v for k, v in {**batch.seconds, **phases.seconds}.items()})
    ages = update.ages
    spans = [len(s.versions or ()) or 1 for result, *_ in batch.kept for s in result.samples]  # fully_async
    metrics.update({"time/step": time.perf_counter() - start, "groups": update.groups,
                    "dynamic/groups_generated": len(batch.seen), "dynamic/groups_kept": len(batch.kept),
                    "dynamic/groups_dropped": batch.dropped, "dynamic/groups_aborted": batch.aborted,
                    "dynamic/groups_surplus": batch.surplus, "dynamic/refill_rounds": batch.refills,
                    "failed_requests": batch.failed, "rollout/partial_resumed": batch.resumed,
                    "rollout/partial_tokens_saved": batch.tokens_saved, "rollout/partial_too_old": batch.too_old,
                    "staleness/mean": sum(ages) / len(ages) if ages else 0.0,
                    "staleness/max": max(ages, default=0), "staleness/dropped": update.stale,
                    "staleness/versions_per_sample": sum(spans) / len(spans) if spans else 1.0,
                    "staleness/versions_per_sample_max": max(spans, default=1)})
    return metrics


def idle_metrics(pool) -> dict[str, float]:
    """Each rollout worker's share of the time since the last step with no request held (`idle_shares` of the pool:
    waiting for the learner, or done with its share while another worker finishes a long group), under `time/` with
    the other timings (a resumed run does not repeat them); a pool without the reading (a stand-in) logs nothing."""
    shares = pool.idle_shares() if hasattr(pool, "idle_shares") else []
    if not shares:
        return {}
    return {"time/idle_share": statistics.fmean(shares), "time/idle_share_max": max(shares),
            **{f"time/idle_share/w{k}": v for k, v in enumerate(shares)}}


class RewardWatch:
    """Per reward part, every step: errors and timeouts as metrics, the first message of each kind logged, a warning
    for a step where it failed on every row, and the run stopped (`RewardFailure`) after `reward.max_failed_steps`
    such steps in a row."""

    def __init__(self, reward_cfg):
        self.cfg = reward_cfg
        self.told: set[tuple[str, str]] = set()  # (reward part, error | timeout) already logged
        self.failed_steps: dict[str, int] = {}  # reward part -> steps in a row it failed on every row

    def __call__(self, health: dict[str, PartHealth], step: int) -> dict[str, float]:
        """step: the steps done before this one."""
        metrics: dict[str, float] = {}
        for part, h in health.items():
            metrics[f"reward/errors/{part}"] = h.errors
            metrics[f"reward/timeouts/{part}"] = h.timeouts
            for kind, message in (("error", h.first_error), ("timeout", h.first_timeout)):
                if message and (part, kind) not in self.told:
                    self.told.add((part, kind))
                    log.warning("reward part %r: first %s (later ones are counted in reward/%ss/%s): %s",
                                part, kind, kind, part, message)
            streak = self.failed_steps[part] = self.failed_steps.get(part, 0) + 1 if h.failed_every_row else 0
            if streak:
                log.warning("reward part %r failed on every row of step %d (%d step(s) in a row): %s", part,
                            step + 1, streak, h.problem)
            if streak >= self.cfg.max_failed_steps:
                raise RewardFailure(f"reward part {part!r} ({self.cfg.combine.parts.get(part)}) failed on "
                                    f"every row of {streak} steps in a row (reward.max_failed_steps): {h.problem}")
        return metrics
