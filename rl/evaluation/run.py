"""`run_eval`: every target (a checkpoint, or each checkpoint of a run) x every mode through one vLLM engine,
scored with the run's combined reward, written as summary.json, results.jsonl and PNG plots.

One engine serves all targets: LoRA checkpoints load as adapters over the base weights, full-weight checkpoints
replace the weights (vLLM's reload, the same path as training's weight sync), so a run's curve costs one start-up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from core.modes import FIXED_MODES, MODES
from rewards import RewardRunner
from rollouts.types import SamplingConfig

from ..data import external
from ..data.loader import load_rows
from ..config import TrainConfig
from ..scoring import run_combine, score_results
from . import plots
from .records import evaluate_rows, write_records
from .summary import summarize
from .targets import Target, find_targets, verify_target

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvalSettings:
    modes: Sequence[str] = FIXED_MODES
    n: int = 1
    """Samples per row and mode."""
    max_rows: int = 0
    """Evaluate the first N valid rows (0: all)."""
    seed: int = 0
    include_base: bool = True
    """For a run directory: evaluate the base model too, as step 0."""
    max_new_tokens: int | None = None
    """Overrides every mode's budget (default: the run's per-mode sampling, else the toolkit's defaults)."""
    temperature: float | None = None
    """Overrides every mode's temperature (default: the run's, the paper's 1.0)."""
    dtype: str | None = None
    max_model_len: int | None = None
    progress: bool = True
    split: str | None = None
    """The split of a `datasets` folder or hub id given as data (default: the run's data.split)."""

    def __post_init__(self):
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ValueError(f"modes={list(self.modes)}: each must be one of {MODES}")
        if self.n < 1 or self.max_rows < 0:
            raise ValueError(f"n={self.n} must be >= 1 and max_rows={self.max_rows} >= 0")
        self.modes = list(dict.fromkeys(self.modes))

    def sampling(self, cfg: TrainConfig) -> dict[str, SamplingConfig]:
        out = {}
        for mode, base in cfg.rollout.sampling().items():
            s = dataclasses.replace(base)
            if self.max_new_tokens is not None:
                s.max_new_tokens = self.max_new_tokens
            if self.temperature is not None:
                s.temperature = self.temperature
            s.validate(f"{mode} sampling")
            out[mode] = s
        return out


class _Engine:
    """One rollout backend (`rollouts.backend.RolloutBackend`; vLLM's `RolloutWorker` unless another is given)
    moved from target to target."""

    def __init__(self, targets: list[Target], cfg: TrainConfig, settings: EvalSettings, backend: type | None = None,
                 video: bool = False):
        if backend is None:
            from rollouts.vllm.worker import RolloutWorker as backend

        ranks = [t.lora_rank for t in targets if t.adapter]
        self.worker = backend(str(targets[0].base), mode_sampling=settings.sampling(cfg), seed=settings.seed,
                                    max_model_len=settings.max_model_len or cfg.rollout.max_model_len,
                                    dtype=settings.dtype or cfg.rollout.dtype, enable_lora=bool(ranks),
                                    max_lora_rank=max(ranks, default=16), max_image_pixels=cfg.data.max_image_pixels,
                              video_sampling=cfg.data.video_sampling(), video=video)
        self.base = targets[0].base
        self.replaced = False  # the engine holds weights other than `base`'s
        self.version = 0

    def use(self, target: Target) -> None:
        self.version += 1
        if target.weights is not None:
            self.worker.load_weights(self.version, path=str(target.weights))
            self.replaced = True
        elif self.replaced:
            self.worker.load_weights(self.version, path=str(self.base))
            self.replaced = False
        if target.adapter is not None:
            self.worker.load_lora(self.version, str(target.adapter))
        else:
            self.worker.unload_lora(self.version)


def run_rows(run_cfg: TrainConfig | None, checkpoint: str | Path, max_rows: int = 0) -> tuple[list, str]:
    """A run's own evaluation rows, without --data: its held-out rows when it held some out (run.eval_every and
    run.eval_rows: the same rows its trainer evaluated), else the first `max_rows` rows of its data (all with 0);
    with the sentence that says which."""
    if run_cfg is None:
        raise ValueError(f"{checkpoint}: not part of a run (no config.yaml beside it), so --data is needed")
    if run_cfg.data.path == external.PYTHON_DATA:
        recorded = Path(run_cfg.run.dir) / external.ORIGIN_FILE
        found = json.loads(recorded.read_text()) if recorded.is_file() else {}
        raise ValueError(f"{checkpoint}: the run trained on rows from Python, not on a file: "
                         f"{external.origin_hint(found) if found else 'pass them with --data'}")
    from ..data.loader import PromptDataset

    cfg, holdout = run_cfg, run_cfg.run.eval_rows if run_cfg.run.eval_every else 0
    from model.processor import Processor

    processor = Processor.from_pretrained(cfg.model.path, max_image_pixels=cfg.data.max_image_pixels,
                                          video_sampling=cfg.data.video_sampling())
    # the trainer's row filter (run_data: its prompt-token limit), so the held-out draw is the same
    dataset = PromptDataset.from_config(cfg.run_data(), seed=cfg.data.shuffle_seed(cfg.run.seed),
                                        eval_holdout=holdout, processor=processor)
    if dataset.eval:
        rows = dataset.eval[:max_rows] if max_rows else dataset.eval
        return rows, f"the run's {len(rows)} held-out rows of {cfg.data.path} (run.eval_rows={holdout})"
    rows = dataset.rows[:max_rows] if max_rows else dataset.rows
    return rows, (f"the first {len(rows)} rows of the run's data {cfg.data.path} (the run held out no rows: "
                  "run.eval_every=0)")


def data_rows(cfg: TrainConfig, data, split: str | None = None, max_rows: int = 0, ckpt: str | Path | None = None):
    """Evaluation rows from `data` (a file, a `datasets` folder or hub id, or rows from Python: a `datasets.Dataset`
    or an iterable of dicts), read as the run reads its own: its `data.*` settings (column mapping, sources and
    rewards per source, allowed rewards, the prompt-length limit) with `split` (default: the run's) and the first
    `max_rows` valid rows; (rows, load report). ckpt: the checkpoint whose processor counts prompt tokens (default:
    the run's model.path)."""
    from model.processor import Processor

    path_like = isinstance(data, (str, Path))
    shaped = dataclasses.replace(cfg.run_data(), path=str(data) if path_like else cfg.data.path, max_rows=max_rows,
                                 split=split if split is not None or not path_like else cfg.data.split,
                                 on_bad_row="skip", demo=None)  # (rows from Python: the split given, if any)
    processor = Processor.from_pretrained(ckpt or cfg.model.path, max_image_pixels=cfg.data.max_image_pixels,
                                          video_sampling=cfg.data.video_sampling())
    return load_rows(shaped, processor=processor, data=None if path_like else data)


def run_eval(checkpoint: str | Path, data, out: str | Path, settings: EvalSettings | None = None,
             backend: type | None = None) -> dict:
    """Evaluate and write `out/summary.json`, `out/results.jsonl` and the plots; returns the summary. data: None
    evaluates the run's own rows (`run_rows`; summary["data"]["used"] says which); a path, a `datasets` folder or
    hub id, or rows from Python (a `datasets.Dataset`), read with the run's `data.*` settings (`data_rows`).
    backend: the rollout backend class to sample with (default: the vLLM worker)."""
    settings = settings or EvalSettings()
    out = Path(out)
    targets, run_cfg = find_targets(checkpoint, settings.include_base)
    for target in targets:  # every file the engine will read, named if it is corrupt, before the engine starts
        verify_target(target)
    cfg = run_cfg or TrainConfig()
    if data is None:
        rows, used = run_rows(run_cfg, checkpoint, settings.max_rows)
        report = None
        log.info("rl-eval: evaluating %s", used)
    else:
        rows, report = data_rows(cfg, data, settings.split, settings.max_rows, ckpt=targets[0].base)
        used = f"{len(rows)} rows of {data if isinstance(data, (str, Path)) else type(data).__name__}"
    if not rows:
        raise ValueError(f"no valid rows to evaluate: {report.summary() if report else used}")
    if report is not None and report.bad:
        log.warning("bad rows left out: %s", report.summary())
    out.mkdir(parents=True, exist_ok=True)
    video = any(row.videos() for row in rows)  # served by this project's vLLM class (rollouts/vllm/video.py)
    engine = _Engine(targets, cfg, settings, backend, video=video)
    runner = RewardRunner(cfg.reward.runner_config())
    combine = run_combine(cfg.reward.combine, cfg.data.allowed_rewards)
    score = lambda results: score_results(results, runner, combine, cfg.data.default_reward)  # noqa: E731
    per_target, records = [], []
    try:
        for target in tqdm(targets, desc="rl-eval", disable=not settings.progress):
            engine.use(target)
            found = evaluate_rows(engine.worker.generate, score, rows, settings.modes, settings.n, settings.seed,
                                  checkpoint=target.name, step=target.step)
            records += found
            per_target.append({"name": target.name, "step": target.step,
                               "modes": summarize(found, settings.modes)})
    finally:
        runner.close()
    summary = {"modes": per_target[-1]["modes"], "checkpoints": per_target,
               "data": {"path": str(data if data is not None else cfg.data.path), "rows": len(rows),
                        "bad_rows": report.bad if report is not None else 0, "used": used},
               "settings": {**{k: v for k, v in dataclasses.asdict(settings).items() if k != "progress"},
                            "sampling": {m: dataclasses.asdict(s) for m, s in settings.sampling(cfg).items()
                                         if m in settings.modes}}}
    write_outputs(out, summary, records)
    return summary


def write_outputs(out: Path, summary: dict, records: list[dict]) -> None:
    write_records(out / "results.jsonl", records)
    points = [{"label": t["name"] if t["step"] is None else f"step {t['step']}", "step": t["step"], "mode": mode, **s}
              for t in summary["checkpoints"] for mode, s in t["modes"].items()]
    metric = "accuracy" if any(p["accuracy"] is not None for p in points) else "reward_mean"
    budgets = {m: s["max_new_tokens"] for m, s in summary.get("settings", {}).get("sampling", {}).items()}
    figures = {"accuracy_vs_tokens": plots.accuracy_vs_tokens(points, out / "accuracy_vs_tokens.png", metric,
                                                              budgets)}
    last = summary["checkpoints"][-1]["name"]
    lengths = {m: [r["tokens"] for r in records if r["checkpoint"] == last and r["mode"] == m and r["error"] is None]
               for m in summary["modes"]}
    figures["length_hist"] = plots.length_histograms(lengths, out / "length_hist.png",
                                                     f"Completion length per mode ({last})", budgets)
    if sum(t["step"] is not None for t in summary["checkpoints"]) > 1:
        figures["curves"] = plots.curves_over_steps(points, out / "curves.png", (metric, "tokens_mean"))
    summary["figures"] = {k: str(v.name) for k, v in figures.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
