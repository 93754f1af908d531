"""The run: set-up, state, checkpoints, and the loop `run.async_mode` picks (`rl.loops`). One step is a short list
of timed phases:

    sample prompts -> assign modes (hybrid schedule) -> generate (vLLM pool) -> score (verifiers)
    [-> dynamic sampling: drop zero-variance groups, refill]         (the rollout side: rl.batches.Collector)
    -> advantages (per group) -> update (learner)                    (Trainer.update)
    -> sync weights (rl.sync.WeightSync) -> log per mode (rl.metrics) -> evaluate / checkpoint
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
from pathlib import Path

import torch
from tqdm.auto import tqdm

from core.process import private_tempdir, start_reaper
from model.processor import Processor
from rewards import RewardRunner
from rollouts.local import LocalPool
from rollouts.pool import RolloutPool

from . import config as config_io
from .batches import Background, Batch, Collector, Update, build_samples, checkpointable, split_stale
from .checkpointing import export_checkpoint, load_latest, rotate, save_checkpoint
from .config import TrainConfig
from .data import PromptDataset, external
from .errors import NothingTrained, RunError
from .evaluation.records import evaluate_rows, write_records
from .evaluation.summary import flat_metrics, summarize
from .learner import Learner, make_learner
from .loops import LOOPS
from .metrics import MetricsLogger, Phases, RewardWatch, idle_metrics, step_metrics
from .modes import BenefitTracker, long_fraction_at
from .scoring import completion_rows, run_combine
from .sync import WeightSync

log = logging.getLogger(__name__)


def updated(metrics: dict) -> bool:
    """Whether a step reached the learner and at least one of its optimizer updates ran (a finite gradient norm:
    an update with a non-finite one is skipped, `learner.max_skipped_steps`)."""
    norm = metrics.get("learner/grad_norm")
    return metrics.get("loss") is not None and (norm is None or math.isfinite(norm))


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
        if data is not None:  # not on disk: config.yaml says so, and data_origin.json where the rows came from
            cfg.data.path = external.PYTHON_DATA
            (self.dir / external.ORIGIN_FILE).write_text(json.dumps(external.origin(data), indent=1) + "\n")
        video = self.dataset.first_video()
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
            video_sampling=cfg.data.video_sampling(), video=self.video, stall_timeout_s=cfg.rollout.stall_timeout_s,
            **cfg.in_flight_options())
        self._learner_lock = threading.Lock()  # an update and a read of the weights (a sync) never overlap
        self.weight_sync = WeightSync(cfg, self.learner, self.pool, self.dir, self.sync_kind, self._learner_lock)
        self._sync_metrics: dict[str, float] = {}  # of the latest sync, logged with the step that made it
        self.runner = RewardRunner(cfg.reward.runner_config())
        self.combine = run_combine(cfg.reward.combine, cfg.data.allowed_rewards)
        self.rng = random.Random(cfg.run.seed)
        self.step = 0
        self.tokens_total = 0  # completion tokens generated by the run (part of the checkpoint)
        self.updated_steps = 0  # steps whose update ran (`updated`; part of the checkpoint: NothingTrained is per run)
        self.benefit = BenefitTracker(cfg.modes.benefit_decay)  # paired prompts' measured benefit (checkpointed)
        self.collector = Collector(cfg, self.dataset, self.pool, self.runner, self.combine, self.rng, self.benefit)
        self._last_completions: list[dict] = []  # the latest step's sampled completions (run.log_completions_every)
        self.pending: Background | None = None  # the next step's batch, generated ahead (rl.loops.one_step_off)
        self.producer, self.restored = None, []  # groups generated ahead, and restored ones (rl.loops.fully_async)
        self._synced = 0  # the policy version the workers hold (they start with the checkpoint's: version 0)
        self.reward_watch = RewardWatch(cfg.reward)  # reward parts that fail: logged once, and a stop if they go on
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
                    if self.producer is not None:  # paused by settle()
                        self.producer.resume()
                self.logger.log(self.step, metrics)
                every = self.cfg.run.log_completions_every
                if every and self.step % every == 0:
                    self.logger.log_completions(self.step, self._last_completions)
                self._tell("on_step_end", self.step, metrics)
                history.append(metrics)
                bar.update(1)
                bar.set_postfix({k.split("/")[1] if k.startswith("reward/") else k: f"{metrics[k]:.3g}" for k in
                                 ("reward/short/mean", "reward/long/mean", "loss", "time/step") if k in metrics})
                every = self.cfg.run.save_every
                if (every and self.step % every == 0) or self.step == self.cfg.run.steps:
                    self.save()
            if history and not self.updated_steps:  # over the whole run, the steps before a resume included
                raise NothingTrained(
                    f"no step of this run updated the policy: no step reached the learner, or every update had a "
                    f"non-finite gradient and was skipped ({len(history)} step(s); failed requests "
                    f"{sum(h['failed_requests'] for h in history)}, groups dropped by dynamic sampling "
                    f"{sum(h['dynamic/groups_dropped'] for h in history)}, bad rows {history[-1]['data/bad_rows']}): "
                    f"see {self.dir / 'metrics.jsonl'}")
            if history and not any(h.get("learner/grad_norm") for h in history):
                log.warning("no step of this run moved the policy: every gradient was 0 (no group had a reward "
                            "spread, so every advantage was 0; frac_reward_zero_std in %s). More samples per prompt "
                            "(rollout.n), a reward with partial credit, or dynamic sampling give groups a spread",
                            self.dir / "metrics.jsonl")
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
        """One step of the loop `run.async_mode` names (`rl.loops`)."""
        return LOOPS[self.cfg.run.async_mode](self)

    def take_pending(self) -> Batch | None:
        """The batch generated ahead (in the background, or restored from a checkpoint), once; None if there is none."""
        pending, self.pending = self.pending, None
        return pending.result() if pending is not None else None

    def update(self, batch: Batch, phases: Phases) -> Update:
        """Advantages over the batch's groups young enough to learn from (`algo.max_staleness`), and the learner's
        step on them, under the lock a sync also takes."""
        with phases("advantages"):
            kept, ages, stale = split_stale(batch.kept, self.learner.version, self.cfg.algo.max_staleness)
            samples = build_samples(kept, self.cfg)
        with phases("update"):
            with self._learner_lock:
                learned = self.learner.step(samples) if samples else {}
        return Update(samples, learned, len(kept), ages, stale)

    def step_metrics(self, batch: Batch, update: Update, phases: Phases, start: float) -> dict:
        """The step's metrics (`rl.metrics.step_metrics`) with the run's own: its token count, the reward parts'
        health, the completions table when it is due."""
        cfg = self.cfg
        every = cfg.run.log_completions_every
        if every and (self.step + 1) % every == 0:  # the step fit() logs a completions table after
            self._last_completions = completion_rows(batch.kept if self.producer else batch.seen,  # fully_async: the
                                                     cfg.run.log_completions)  # groups it trained on
        metrics = step_metrics(batch, update, phases, start, self.benefit)
        metrics.update({**self._sync_metrics, **idle_metrics(self.pool)})
        self._sync_metrics = {}
        self.tokens_total += metrics["tokens/generated"]
        metrics.update(self.reward_watch(batch.health, self.step))
        metrics.update({"tokens/total": self.tokens_total, "policy_version": self.learner.version,
                        "mode/long_fraction": long_fraction_at(cfg.modes, self.step),
                        "data/bad_rows": self.dataset.bad_rows})
        return metrics

    def sync_if_behind(self) -> None:
        if self._synced != self.learner.version:
            self.sync()

    def settle(self) -> None:
        """No generation in flight and the workers on the newest weights (before an evaluation)."""
        if self.pending is not None:
            self.pending.result()  # kept for the next step
        if self.producer is not None:
            self.producer.pause()
        self.sync_if_behind()

    def sync(self) -> None:
        """The learner's current weights to every worker (`rl.sync.WeightSync`: an adapter folder, in memory, or a
        staging folder); its metrics go out with the step."""
        version = self._synced = self.learner.version
        self._sync_metrics = self.weight_sync(version)

    def evaluate(self) -> dict:
        """The held-out rows in each of `run.eval_modes`, scored: rl-eval's per-mode summary as `eval/...` keys."""
        run = self.cfg.run
        rows = self.dataset.eval_rows(run.eval_rows)
        records = evaluate_rows(self.pool.generate, self.collector.score, rows, run.eval_modes, run.eval_n,
                                seed=self.collector.seed(self.step, 1_000, 0),  # a round no training step uses
                                checkpoint=f"step-{self.step:06d}", step=self.step)
        write_records(self.dir / "eval.jsonl", records, append=True)
        return flat_metrics(summarize(records, run.eval_modes))

    # ---- checkpoints ----
    def data_state(self) -> dict:
        return {"data": self.dataset.state_dict(), "rng": self.rng.getstate(), "python_rng": random.getstate(),
                "tokens_total": self.tokens_total, "updated_steps": self.updated_steps,
                "benefit": self.benefit.state_dict(), "rounds": self.collector.rounds,
                "carried": self.collector.carried}

    def save(self) -> Path:
        """A checkpoint after `self.step` steps, with what was drawn ahead (one_step_off's batch in flight, waited
        for; fully_async's finished groups, its running ones let finish; `rl.batches.checkpointable`) and the data
        state after their draws: a resumed run trains on those, then draws on, as the uninterrupted run does."""
        state = {"in_flight": checkpointable(self.pending.result())} if self.pending is not None else {}
        held = self.producer.pause() if self.producer is not None else self.restored
        state.update(buffered=[checkpointable(b) for b in held], **self.data_state())
        path = save_checkpoint(self.dir, self.step, self.learner, state, keep=self.cfg.run.keep_checkpoints)
        if self.producer is not None:
            self.producer.resume()
        return path

    def _resume(self) -> None:
        path, state = load_latest(self.dir, self.learner, log)
        rotate(self.dir, self.cfg.run.keep_checkpoints)  # what a kill during the last rotation left
        self.step = state["step"]
        self.dataset.load_state_dict(state["data"])
        self.rng.setstate(state["rng"])
        random.setstate(state["python_rng"])
        self.tokens_total = state.get("tokens_total", 0)
        self.updated_steps = state.get("updated_steps", self.step)  # (older checkpoints: assume the steps did)
        self.benefit.load_state_dict(state.get("benefit", self.benefit.state_dict()))
        self.collector.rounds, self.collector.carried = state.get("rounds", 0), state.get("carried", [])
        if (batch := state.get("in_flight")) is not None:  # the batch a one-step-off run had drawn: the next step's
            self.pending = Background(lambda: batch)
        self.restored = state.get("buffered") or []  # a fully async run's, trained on first
        self.sync()
        log.info("resumed from %s at step %d%s", path, self.step,
                 " with the batch that was in flight" if self.pending is not None else "")

    def close(self) -> None:
        """Shut everything down; the pool first, which ends a batch still being generated in the background (the
        one-step-off loop): its stream stops with `PoolClosed` (no worker is replaced or synced after this), and
        that thread is waited for, its error dropped: the error the caller sees is the one that stopped the run."""
        pending, self.pending = getattr(self, "pending", None), None
        for closer in (self.pool.shutdown, pending and (lambda: pending.wait(timeout=120)),
                       getattr(self, "producer", None) and self.producer.stop, self.learner.close,
                       self.runner.close,
                       getattr(self, "logger", None) and self.logger.close,
                       getattr(self, "weight_sync", None) and self.weight_sync.close):
            if closer:
                try:
                    closer()
                except Exception:  # noqa: BLE001
                    log.exception("while closing")
