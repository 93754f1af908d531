"""The hybrid-mode GRPO loop: a short list of timed phases.

    sample prompts -> assign modes (hybrid schedule) -> generate (vLLM pool) -> score (verifiers)
    -> advantages (per group) [-> dynamic sampling: drop zero-variance groups, refill] -> update (learner)
    -> sync weights -> log per mode -> evaluate / checkpoint
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import resource
import statistics
import threading
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from core.process import private_tempdir, start_reaper
from model.processor import Processor
from rewards import RewardRunner
from rollouts.local import LocalPool
from rollouts.pool import RolloutPool
from rollouts.types import RolloutResult

from . import config as config_io
from .algos import get_advantage, options_for
from .batches import Background, Batch, checkpointable, split_stale
from .checkpointing import export_checkpoint, load_latest, rotate, save_checkpoint
from .config import TrainConfig
from .data import PromptDataset, external
from .errors import NothingTrained, RewardFailure, RunError
from .evaluation.records import evaluate_rows, write_records
from .evaluation.summary import flat_metrics, summarize
from .learner import Learner, TrainSample, make_learner
from .metrics import MetricsLogger, mode_metrics
from .modes import PAIRED, BenefitTracker, long_fraction_at, measure_pairs, plan_metrics, plan_modes
from .sync import WeightSync
from .scoring import PartHealth, completion_rows, run_combine, Scored, metric_rows, score_results, score_with_health

log = logging.getLogger(__name__)


def updated(metrics: dict) -> bool:
    """Whether a step reached the learner and at least one of its optimizer updates moved the policy: a finite,
    non-zero gradient norm (an update with a non-finite one is skipped, `learner.max_skipped_steps`; a zero one, every
    advantage 0, changes nothing but the optimizer's counters)."""
    norm = metrics.get("learner/grad_norm")
    return metrics.get("loss") is not None and (norm is None or (math.isfinite(norm) and norm > 0))


class Phases:
    """Seconds per named phase of one step."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def ensure_model(cfg) -> Path:
    path = Path(cfg.model.path)
    if not (path / "config.json").is_file():
        if not cfg.model.build_tiny_if_missing:
            raise FileNotFoundError(f"model.path={path}: no config.json there")
        from model.tiny import build_tiny_checkpoint

        build_tiny_checkpoint(path, seed=cfg.model.tiny_seed)
    return path


def start_ray(cfg: TrainConfig) -> None:
    """Join the cluster `cluster.address` (or RAY_ADDRESS) names, or start Ray here with enough logical CPUs for
    the learner ranks and the rollout workers (CPU counts are bookkeeping; threads are set per actor)."""
    import ray

    if ray.is_initialized():
        return
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS") or None
    options: dict = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        learner = cfg.cluster.learner_ranks * cfg.cluster.learner_cpus_per_rank if cfg.cluster.sharded() else 0
        needed = learner + cfg.rollout.num_workers * cfg.rollout.cpus()
        options["num_cpus"] = max(os.cpu_count() or 1, math.ceil(needed))
    ray.init(address=address or "local", **options)  # "local": a new instance even if `ray start` ran here
    if address is None:  # Ray's processes here are this run's: they end with it, even after a kill -9
        start_reaper()


def first_video(dataset: PromptDataset) -> tuple | None:
    """(row, field) of the first video part of the training or held-out rows, or None."""
    for row in dataset.rows + dataset.eval:
        for name, _ in row.videos():
            return row, name
    return None


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, own_tempdir: bool = False,
                 learner: Learner | None = None, pool: RolloutPool | LocalPool | None = None, data=None,
                 callbacks: list | None = None):
        """own_tempdir: this process is the trainer's alone (the rl-train command): once Ray is up (its session
        folder follows TMPDIR), the process's temp files (the reward sandbox's fork server...) go into a folder of
        its own, which a later run removes if this one is killed (`core.process.private_tempdir`).
        learner, pool: ones built by the caller (a benchmark's or a test's stand-ins) instead of the config's.
        data: the training rows from Python instead of data.path (a `datasets.Dataset`, TRL-style, or any iterable
        of row dicts, shaped by data.columns as any data set; rl/data/external.py); data.path is then recorded as
        "<python data>" and data_origin.json says where they came from (a `datasets.Dataset`'s fingerprint, info and
        files), which rl-eval names when it asks for --data.
        callbacks: for Python users, objects with any of `on_step_end(step, metrics)` (after each step is logged;
        `metrics` is the step's dict, as in metrics.jsonl) and `on_train_end(history)`, or plain callables taken
        as `on_step_end`. An exception in one stops the run, as an error in the loop would."""
        self.cfg = cfg
        self.callbacks = list(callbacks or [])
        self.dir = Path(cfg.run.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        self.ckpt = ensure_model(cfg)
        self.dataset = PromptDataset.from_config(
            cfg.run_data(), seed=cfg.data.shuffle_seed(cfg.run.seed),
            eval_holdout=cfg.run.eval_rows if cfg.run.eval_every else 0,
            processor=Processor.from_pretrained(self.ckpt, max_image_pixels=cfg.data.max_image_pixels,
                                                video_sampling=cfg.data.video_sampling()), data=data)
        if data is not None:  # these rows are not on disk: config.yaml says so and data_origin.json where they came from
            cfg.data.path = external.PYTHON_DATA
            (self.dir / external.ORIGIN_FILE).write_text(json.dumps(external.origin(data), indent=1) + "\n")
        video = first_video(self.dataset)
        self.video = cfg.rollout.video if cfg.rollout.video is not None else video is not None
        if video and not self.video:
            from rollouts.vllm.worker import VIDEO_REFUSED

            raise RunError(f"{video[0].where}: field {video[1]!r}: {VIDEO_REFUSED} (rollout.video=false)")
        if pool is None or (learner is None and cfg.cluster.sharded()):  # the local learner runs without Ray
            start_ray(cfg)
        if own_tempdir:
            private_tempdir()
        self.learner = learner if learner is not None else make_learner(cfg, self.ckpt)
        self.sync_kind = self.learner.resolve_sync_kind(cfg.sync.kind)
        self.pool = pool if pool is not None else RolloutPool(
            str(self.ckpt), backend=cfg.rollout.backend, num_workers=cfg.rollout.num_workers,
            mode_sampling=cfg.rollout.sampling(), gpus_per_worker=cfg.rollout.gpus_per_worker,
            cpus_per_worker=cfg.rollout.cpus(), dtype=cfg.rollout.dtype,
            max_model_len=cfg.rollout.max_model_len, enable_lora=self.sync_kind == "adapter",
            max_lora_rank=cfg.learner.lora_rank, seed=cfg.run.seed,
            tensor_parallel_size=cfg.rollout.tensor_parallel_size,
            gpu_memory_utilization=cfg.rollout.gpu_memory_utilization, resources=cfg.cluster.rollout_resources,
            ray_address=cfg.cluster.address, max_image_pixels=cfg.data.max_image_pixels,
            video_sampling=cfg.data.video_sampling(), video=self.video, stall_timeout_s=cfg.rollout.stall_timeout_s)
        self._learner_lock = threading.Lock()  # an update and a read of the weights (a sync) never overlap
        self.weight_sync = WeightSync(cfg, self.learner, self.pool, self.dir, self.sync_kind, self._learner_lock)
        self._sync_metrics: dict[str, float] = {}  # of the latest sync, logged with the step that made it
        self.runner = RewardRunner(cfg.reward.runner_config())
        self.combine = run_combine(cfg.reward.combine, cfg.data.allowed_rewards)
        self.rng = random.Random(cfg.run.seed)
        self.step = 0
        self.tokens_total = 0  # completion tokens generated by the run (part of the checkpoint)
        self.updated_steps = 0  # steps whose update moved the policy (`updated`; part of the checkpoint)
        self.benefit = BenefitTracker(cfg.modes.benefit_decay)  # paired prompts' measured benefit (checkpointed)
        self._last_completions: list[dict] = []  # the latest step's sampled completions (run.log_completions_every)
        self.one_step_off = cfg.run.async_mode == "one_step_off"
        self._pending: Background | None = None  # one_step_off: the next step's batch, generated meanwhile
        self._synced = 0  # the policy version the workers hold (they start with the checkpoint's: version 0)
        self._told: set[tuple[str, str]] = set()  # (reward part, error | timeout) already logged
        self._failed_steps: dict[str, int] = {}  # reward part -> steps in a row it failed on every row
        if resume:
            self._resume()
        config_io.save(cfg, self.dir / "config.yaml")
        self.logger = MetricsLogger(self.dir, cfg.run.tensorboard, cfg.run.wandb, cfg.run.mlflow,
                                    config_io.to_dict(cfg), resume_step=self.step if resume else None,
                                    project=cfg.run.project, name=cfg.run.name, tags=cfg.run.tags)

    # ---- the loop ----
    def fit(self) -> list[dict]:
        history = []
        bar = tqdm(total=self.cfg.run.steps, initial=self.step, desc="rl-train", disable=not self.cfg.run.progress)
        try:
            while self.step < self.cfg.run.steps:
                metrics = self.train_step()
                self.step += 1
                self.updated_steps += updated(metrics)
                if self.cfg.run.eval_every and self.step % self.cfg.run.eval_every == 0:
                    self.settle()
                    metrics.update(self.evaluate())
                self.logger.log(self.step, metrics)
                every = self.cfg.run.log_completions_every
                if every and self.step % every == 0:
                    self.logger.log_completions(self.step, self._last_completions)
                self._tell("on_step_end", self.step, metrics)
                history.append(metrics)
                bar.update(1)
                bar.set_postfix({k.split("/")[1] if k.startswith("reward/") else k: f"{metrics[k]:.3g}"
                                 for k in ("reward/short/mean", "reward/long/mean", "loss", "time/step")
                                 if k in metrics})
                every = self.cfg.run.save_every
                if (every and self.step % every == 0) or self.step == self.cfg.run.steps:
                    self.save()
            if history and not self.updated_steps:  # over the whole run, the steps before a resume included
                raise NothingTrained(
                    f"no step of this run updated the policy: no step reached the learner, every update had a "
                    f"non-finite gradient and was skipped, or every gradient was 0 (no reward spread within any "
                    f"group: every advantage 0) ({len(history)} step(s); failed requests "
                    f"{sum(h['failed_requests'] for h in history)}, groups dropped by dynamic sampling "
                    f"{sum(h['dynamic/groups_dropped'] for h in history)}, bad rows {history[-1]['data/bad_rows']}): "
                    f"see {self.dir / 'metrics.jsonl'}")
            if self.cfg.run.export:
                export_checkpoint(self.learner, self.ckpt, self.dir / "export")
            self._tell("on_train_end", history)
        finally:
            bar.close()
            self.close()
        return history

    def _tell(self, event: str, *args) -> None:
        for callback in self.callbacks:
            fn = getattr(callback, event, None)
            if fn is None and event == "on_step_end" and callable(callback):
                fn = callback
            if fn is not None:
                fn(*args)

    def train_step(self) -> dict:
        """One step. async_mode=off: generate and score a batch, update on it, sync. one_step_off: take the batch
        generated in the background during the last update (or generate it now: the first step, a resumed one),
        sync the workers to the newest weights, start generating the next batch, and update meanwhile."""
        cfg, phases = self.cfg, Phases()
        start = time.perf_counter()
        if self.one_step_off:
            with phases("wait"):
                batch = self._pending.result() if self._pending is not None else self.collect(self.step)
                self._pending = None
            with phases("sync"):
                self._sync_if_behind()
            if self.step + 1 < cfg.run.steps:
                self._pending = Background(self.collect, self.step + 1)
        else:  # (a batch restored from a one-step-off checkpoint is trained on first, whatever the mode now)
            batch = self._pending.result() if self._pending is not None else self.collect(self.step)
            self._pending = None
        with phases("advantages"):
            version = self.learner.version
            kept, ages, stale = split_stale(batch.kept, version, cfg.algo.max_staleness)
            samples = self.build_samples(kept)
        with phases("update"):
            with self._learner_lock:
                learn = self.learner.step(samples) if samples else {}
        if not self.one_step_off:
            with phases("sync"):
                if samples:  # no samples with signal: no update, nothing to sync
                    self.sync()
        top = {"loss": "loss", "kl": "kl", "entropy": "entropy", "clip_frac": "clip_fraction",  # each logged once
               "peak_mb": "memory/learner_peak_mb"}
        metrics = {top.get(k, f"learner/{k}"): v for k, v in learn.items()}
        metrics.update(self._sync_metrics)
        self._sync_metrics = {}
        rows = metric_rows(batch.seen)
        metrics.update(mode_metrics(rows))
        metrics.update(plan_metrics(batch.pairs, rows, self.benefit))
        every = cfg.run.log_completions_every
        if every and (self.step + 1) % every == 0:  # the step fit() logs a completions table after
            self._last_completions = completion_rows(batch.seen, cfg.run.log_completions)
        generated = sum(r["tokens"] for r in rows)
        self.tokens_total += generated
        metrics.update({"tokens/generated": generated, "tokens/total": self.tokens_total,
                        "memory/trainer_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
        if batch.seconds.get("generate"):
            metrics["tokens/per_s"] = generated / batch.seconds["generate"]
        if samples:
            advantages = [s.advantage for s in samples]
            metrics["advantage/mean"] = statistics.fmean(advantages)
            metrics["advantage/std"] = statistics.pstdev(advantages)
        metrics.update(self._watch_rewards(batch.health))
        metrics.update({f"time/{k}": v for k, v in {**batch.seconds, **phases.seconds}.items()})
        metrics.update({"time/step": time.perf_counter() - start, "policy_version": self.learner.version,
                        "mode/long_fraction": long_fraction_at(cfg.modes, self.step), "groups": len(kept),
                        "dynamic/groups_generated": len(batch.seen), "dynamic/groups_kept": len(batch.kept),
                        "dynamic/groups_dropped": batch.dropped, "dynamic/groups_aborted": batch.aborted,
                        "dynamic/groups_surplus": batch.surplus,
                        "dynamic/refill_rounds": batch.refills,
                        "failed_requests": batch.failed, "data/bad_rows": self.dataset.bad_rows,
                        "staleness/mean": sum(ages) / len(ages) if ages else 0.0,
                        "staleness/max": max(ages, default=0), "staleness/dropped": stale})
        return metrics

    def collect(self, step: int) -> Batch:
        """The rollout side of step `step`: sample prompts, assign modes, generate, score, and with dynamic sampling
        drop the groups without reward variance. Dynamic sampling over-provisions (`algo.oversample`): a round
        submits that many times the groups still needed, judges each group as it streams in, keeps the first ones
        with signal in submission order and aborts the rest once those are known; refill rounds (at most
        `algo.max_refill_rounds`) are the fallback."""
        cfg, phases = self.cfg, Phases()
        batch = Batch()
        target = cfg.rollout.prompts_per_step
        factor = cfg.algo.oversample_factor()
        while len(batch.kept) < target:
            need = target - len(batch.kept)
            with phases("sample"):
                rows = self.dataset.take(math.ceil(need * factor - 1e-9))
            with phases("modes"):
                requests = self._requests(rows, plan_modes(rows, step, cfg.modes, self.rng, self.benefit), step,
                                          batch.refills)
            if factor > 1:
                self._stream_round(requests, target, batch, phases)
            else:
                with phases("generate"):
                    results = self.pool.generate(requests)
                batch.failed += self._failed_requests(results)
                with phases("score"):
                    batch.kept += [g for g in self._judge(batch, [r for r in results if r.ok]) if g is not None]
            full = len(batch.kept) >= target
            if full or not cfg.algo.dynamic_sampling or batch.refills >= cfg.algo.max_refill_rounds:
                break
            batch.refills += 1  # counted when a refill round really runs
        batch.seconds = phases.seconds
        batch.pairs = measure_pairs(batch.seen, cfg.modes)
        for pair in batch.pairs:
            self.benefit.observe(pair.prompt, pair.source, pair.delta)
        return batch

    def _requests(self, rows: list, plans: list[str], step: int, round_: int) -> list:
        """The rollout requests of a round: one group of rollout.n per row, or for a paired row (`rl.modes`) two
        groups of n/2, one per mode, joined by meta["pair"]. Each request's seed comes from its position, so a
        resumed run draws the same samples on any worker."""
        n, out = self.cfg.rollout.n, []
        for i, (row, plan) in enumerate(zip(rows, plans)):
            request_id = f"s{step}-{round_}-{i}"
            if plan == PAIRED:
                for mode in ("short", "long"):
                    request = self.dataset.to_request(row, mode, n // 2, f"{request_id}{mode[0]}")
                    request.meta["pair"] = request_id
                    out.append(request)
            else:
                out.append(self.dataset.to_request(row, plan, n, request_id))
        for j, request in enumerate(out):
            request.seed = self._seed(step, round_, j)
        return out

    def _stream_round(self, requests: list, target: int, batch: Batch, phases: Phases) -> None:
        """Score each group as it finishes and keep the groups with reward variance in submission order, not in
        finishing order (which would favour short completions, and short mode): the first ones until the batch
        holds `target`. Once those are known, the requests after them still running are aborted; groups after them
        that had finished already are counted as surplus."""
        start, scoring = time.perf_counter(), 0.0
        index = {r.request_id: i for i, r in enumerate(requests)}
        verdict: dict[int, Scored | None] = {}  # submission index -> the group if it has signal, else None
        cursor = 0  # every group before it is decided
        stream = self.pool.stream(requests)
        try:
            for result in stream:
                i = index[result.request.request_id]
                if result.ok:
                    scored_at = time.perf_counter()
                    verdict[i] = self._judge(batch, [result])[0]
                    scoring += time.perf_counter() - scored_at
                else:
                    batch.failed += self._failed_requests([result])
                    verdict[i] = None
                while cursor in verdict and len(batch.kept) < target:
                    if verdict[cursor] is not None:
                        batch.kept.append(verdict[cursor])
                    cursor += 1
                if len(batch.kept) >= target:
                    running = [r.request_id for j, r in enumerate(requests) if j >= cursor and j not in verdict]
                    batch.aborted += len(self.pool.abort(running))
                    batch.surplus += sum(1 for j, g in verdict.items() if j >= cursor and g is not None)
                    break
        finally:
            stream.close()
        phases.seconds["generate"] = phases.seconds.get("generate", 0.0) + time.perf_counter() - start - scoring
        phases.seconds["score"] = phases.seconds.get("score", 0.0) + scoring

    def _judge(self, batch: Batch, results: list[RolloutResult]) -> list[Scored | None]:
        """Score groups (health and every group into `batch`); each one with signal, or None where dynamic
        sampling drops it (rewards all equal; counted in batch.dropped)."""
        cfg = self.cfg
        scored, health = score_with_health(results, self.runner, self.combine, cfg.data.default_reward)
        for part, h in health.items():
            batch.health.setdefault(part, PartHealth()).add(h)
        batch.seen += scored
        out: list[Scored | None] = []
        for group in scored:
            valid = [r for r in group[1] if r is not None]
            if cfg.algo.dynamic_sampling and (len(valid) < 2 or max(valid) == min(valid)):
                batch.dropped += 1
                out.append(None)
            else:
                out.append(group)
        return out

    def _sync_if_behind(self) -> None:
        if self._synced != self.learner.version:
            self.sync()

    def settle(self) -> None:
        """No generation in flight and the workers on the newest weights (before an evaluation)."""
        if self._pending is not None:
            self._pending.result()  # kept for the next step
        self._sync_if_behind()

    def _failed_requests(self, results: list[RolloutResult]) -> int:
        """Requests that failed (a prompt over the context, an image the engine cannot decode...): logged with
        the row they came from; with data.on_bad_row=fail the run stops there, as for a bad row at load."""
        failed = [r for r in results if not r.ok]
        for r in failed:
            meta = r.request.meta
            where = f"{meta['source']}: row {meta.get('row', '?')}" if meta.get("source") else r.request.request_id
            if self.cfg.data.on_bad_row == "fail":
                raise RunError(f"{where}: the rollout failed: {r.error} (data.on_bad_row=fail)")
            log.warning("%s: the rollout failed, the row is left out of this step: %s", where, r.error)
        return len(failed)

    def _watch_rewards(self, health: dict[str, PartHealth]) -> dict[str, float]:
        """Per reward part: errors and timeouts as metrics, the first message of each kind logged, a warning for a
        step where it failed on every row, and the run stopped after `reward.max_failed_steps` such steps."""
        metrics: dict[str, float] = {}
        for part, h in health.items():
            metrics[f"reward/errors/{part}"] = h.errors
            metrics[f"reward/timeouts/{part}"] = h.timeouts
            for kind, message in (("error", h.first_error), ("timeout", h.first_timeout)):
                if message and (part, kind) not in self._told:
                    self._told.add((part, kind))
                    log.warning("reward part %r: first %s (later ones are counted in reward/%ss/%s): %s",
                                part, kind, kind, part, message)
            streak = self._failed_steps[part] = self._failed_steps.get(part, 0) + 1 if h.failed_every_row else 0
            if streak:
                log.warning("reward part %r failed on every row of step %d (%d step(s) in a row): %s", part,
                            self.step + 1, streak, h.problem)
            if streak >= self.cfg.reward.max_failed_steps:
                raise RewardFailure(f"reward part {part!r} ({self.cfg.reward.combine.parts.get(part)}) failed on "
                                    f"every row of {streak} steps in a row (reward.max_failed_steps): {h.problem}")
        return metrics

    def _seed(self, step: int, round_: int, index: int) -> int:
        """Seeds spaced by 1024 (> n): vLLM seeds sample k of a request with seed + k."""
        return ((self.cfg.run.seed * 1_000_003 + step * 1_009 + round_) * 4_096 + index) * 1_024 % (2**62)

    def score(self, results: list[RolloutResult]) -> list[Scored]:
        return score_results(results, self.runner, self.combine, self.cfg.data.default_reward)

    def build_samples(self, kept) -> list[TrainSample]:
        """Group advantages over the kept groups; a None reward is left out of its group's baseline."""
        cfg = self.cfg
        rewards, groups, flat = [], [], []
        for g, (result, totals, parts) in enumerate(kept):
            for s, total, part in zip(result.samples, totals, parts):
                rewards.append(float("nan") if total is None else total)
                groups.append(g)
                flat.append((result, s, total, part))
        if not flat:
            return []
        estimator = get_advantage(cfg.algo.advantage)
        adv = estimator(torch.tensor(rewards, dtype=torch.float64), torch.tensor(groups),
                        **options_for(estimator, cfg.algo.options())).tolist()
        modes = cfg.rollout.sampling()
        samples = []
        for (result, s, _, _), a in zip(flat, adv):
            drawn = result.request.sampling or modes[result.request.mode]  # the distribution it was drawn from
            samples.append(TrainSample(result.prompt, s.completion_token_ids, a, s.logprobs, s.mode,
                                       drawn.temperature, drawn.top_k, drawn.top_p))
        return samples

    def sync(self) -> None:
        """The learner's current weights to every worker (`rl.sync.WeightSync`: an adapter folder, in memory, or a
        staging folder); its metrics go out with the step."""
        version = self._synced = self.learner.version
        self._sync_metrics = self.weight_sync(version)

    def evaluate(self) -> dict:
        """The held-out rows in each of `run.eval_modes`, scored: rl-eval's per-mode summary as `eval/...` keys."""
        run = self.cfg.run
        rows = self.dataset.eval_rows(run.eval_rows)
        records = evaluate_rows(self.pool.generate, self.score, rows, run.eval_modes, run.eval_n,
                                seed=self._seed(self.step, 1_000, 0),  # a round no training step uses
                                checkpoint=f"step-{self.step:06d}", step=self.step)
        write_records(self.dir / "eval.jsonl", records, append=True)
        return flat_metrics(summarize(records, run.eval_modes))

    # ---- checkpoints ----
    def data_state(self) -> dict:
        return {"data": self.dataset.state_dict(), "rng": self.rng.getstate(), "python_rng": random.getstate(),
                "tokens_total": self.tokens_total, "updated_steps": self.updated_steps,
                "benefit": self.benefit.state_dict()}

    def save(self) -> Path:
        """A checkpoint after `self.step` steps. With a batch in flight (one_step_off), that batch is waited for and
        saved with it (`in_flight`, `rl.batches.checkpointable`), with the data state after it was drawn: a resumed
        run trains on that very batch, drawn by the policy one version older as in the uninterrupted run (not on one
        regenerated by the newer weights), and draws on from there, so its steps and export equal the
        uninterrupted run's. The wait costs nothing: the next step waits for that batch first anyway."""
        state = {}
        if self._pending is not None:
            state["in_flight"] = checkpointable(self._pending.result())  # kept pending for the next step
        state.update(self.data_state())  # after the batch's draw, which ran in the background until now
        return save_checkpoint(self.dir, self.step, self.learner, state, keep=self.cfg.run.keep_checkpoints)

    def _resume(self) -> None:
        path, state = load_latest(self.dir, self.learner, log)
        rotate(self.dir, self.cfg.run.keep_checkpoints)  # what a kill during the last rotation left
        self.step = state["step"]
        self.dataset.load_state_dict(state["data"])
        self.rng.setstate(state["rng"])
        random.setstate(state["python_rng"])
        self.tokens_total = state.get("tokens_total", 0)
        self.updated_steps = state.get("updated_steps", self.step)  # (older checkpoints: assume the steps did)
        if "benefit" in state:
            self.benefit.load_state_dict(state["benefit"])
        if state.get("in_flight") is not None:  # the batch a one-step-off run had drawn: the next step's
            batch = state["in_flight"]
            self._pending = Background(lambda: batch)
        self.sync()
        log.info("resumed from %s at step %d%s", path, self.step,
                 " with the batch that was in flight" if self._pending is not None else "")

    def close(self) -> None:
        """Shut everything down; the pool first, which ends a batch still being generated in the background (the
        one-step-off loop): its stream stops with `PoolClosed` (no worker is replaced or synced after this), and
        that thread is waited for, its error dropped: the error the caller sees is the one that stopped the run."""
        pending, self._pending = getattr(self, "_pending", None), None
        for closer in (self.pool.shutdown, pending and (lambda: pending.wait(timeout=120)), self.learner.close,
                       self.runner.close,
                       getattr(self, "logger", None) and self.logger.close,
                       getattr(self, "weight_sync", None) and self.weight_sync.close):
            if closer:
                try:
                    closer()
                except Exception:  # noqa: BLE001
                    log.exception("while closing")
