"""The GRPO learner: turns scored samples into one optimizer step on LoRA adapters or the full weights.

One `step(samples)` = micro-batches packed by token budget -> learner log-probabilities -> policy loss (and KL)
aggregated with the global batch's normalisers -> backward per micro-batch -> clip -> AdamW -> scheduler. The RL
math is `rl.algos`; this file only arranges tensors for it. Its knobs are `LearnerConfig` (what trains, the optimizer,
micro-batching, precision) and `AlgoConfig` (the loss: each registered function takes its own options from it).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from model import MiniCPMV
from model.lora import merged_weights
from model.processor import PromptInputs, collate, to_device

from .algos import (agg_loss, clip_fractions, entropy_mean, get_policy_loss, kl_enabled, kl_penalty, options_for,
                    ratio_stats, tis_stats, tis_weights)
from .config import AlgoConfig, LearnerConfig
from .packing import pack_by_budget, pad_by_budget, pad_by_count, padding_fraction


@dataclass
class TrainSample:
    """One completion to learn from."""
    prompt: PromptInputs
    completion_ids: list[int]
    advantage: float
    rollout_logprobs: list[float] | None = None
    mode: str = "auto"


@dataclass
class _MicroBatch:
    indices: list[int]
    batch: dict[str, Any]
    spans: list[tuple[int, int, int]]  # (row, start, end) of each sequence's completion tokens


class Learner:
    def __init__(self, ckpt: str | Path, config: LearnerConfig | None = None, algo: AlgoConfig | None = None,
                 device: str | None = None):
        self.config = cfg = config or LearnerConfig()
        self.algo = algo or AlgoConfig()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = MiniCPMV.from_pretrained(ckpt, device=self.device)
        for p in model.parameters():
            p.requires_grad_(not cfg.lora)
        if cfg.lora:
            model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                     lora_dropout=cfg.lora_dropout, target_modules=cfg.lora_targets))
        base = self.base_model(model)
        for p in base.vpm.parameters():
            p.requires_grad_(cfg.train_vision)
        for p in base.resampler.parameters():
            p.requires_grad_(cfg.train_resampler)
        if cfg.gradient_checkpointing:
            base.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = model
        self.pad_id = base.config.pad_token_id or 0
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.version = 0
        self._ref_model = None

    @staticmethod
    def base_model(model) -> MiniCPMV:
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _lr_factor(self, step: int) -> float:
        cfg = self.config
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0  # constant (the config admits these two)

    # ---- micro-batches ----
    def micro_batches(self, samples: list[TrainSample]) -> list[_MicroBatch]:
        lengths = [len(s.prompt.input_ids) + len(s.completion_ids) for s in samples]
        cfg = self.config
        if cfg.packing:
            groups = pack_by_budget(lengths, cfg.micro_batch_tokens)
        elif cfg.sort_by_length:
            groups = pad_by_budget(lengths, cfg.micro_batch_tokens)
        else:
            groups = pad_by_count(lengths, cfg.padded_batch_size)
        out = []
        for idx in groups:
            chosen = [samples[i] for i in idx]
            batch = collate([s.prompt for s in chosen], [s.completion_ids for s in chosen], self.pad_id,
                            packed=self.config.packing)
            spans, offset = [], 0
            for row, s in enumerate(chosen):
                n_prompt, n_all = len(s.prompt.input_ids), len(s.prompt.input_ids) + len(s.completion_ids)
                if self.config.packing:
                    spans.append((0, offset + n_prompt, offset + n_all))
                    offset += n_all
                else:
                    spans.append((row, n_prompt, n_all))
            out.append(_MicroBatch(idx, to_device(batch, self.device), spans))
        return out

    @staticmethod
    def per_sequence(row_values: torch.Tensor, spans) -> tuple[torch.Tensor, torch.Tensor]:
        """[R, T] row layout -> ([B, L] one completion per row, right-padded with 0; [B, L] mask)."""
        width = max(end - start for _, start, end in spans)
        out = row_values.new_zeros(len(spans), width)
        mask = torch.zeros(len(spans), width, dtype=torch.bool, device=row_values.device)
        for b, (row, start, end) in enumerate(spans):
            out[b, : end - start] = row_values[row, start:end]
            mask[b, : end - start] = True
        return out, mask

    def _forward(self, model, mb: _MicroBatch, entropy: bool = False):
        autocast = self.config.bf16 and (self.device.type == "cuda" or self.config.cpu_bf16)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(**mb.batch, return_entropy=entropy)

    @torch.no_grad()
    def logprobs(self, samples: list[TrainSample], reference: bool = False) -> list[torch.Tensor]:
        """Per-sample completion log-probabilities under the current (or the reference) weights."""
        out: list[torch.Tensor | None] = [None] * len(samples)
        for mb in self.micro_batches(samples):
            if reference and self.config.lora:
                with self.model.disable_adapter():
                    lp = self._forward(self.model, mb).logprobs
            else:
                lp = self._forward(self._reference() if reference else self.model, mb).logprobs
            for i, (row, start, end) in zip(mb.indices, mb.spans):
                out[i] = lp[row, start:end].cpu()
        return out

    def _reference(self):
        if self._ref_model is None:  # full-weight training with KL: a frozen copy of the starting weights
            import copy

            self._ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        return self._ref_model

    # ---- the update ----
    def step(self, samples: list[TrainSample]) -> dict[str, float]:
        """One optimizer step on the whole batch (gradient accumulation over its micro-batches)."""
        cfg = self.config
        start = time.perf_counter()
        metrics, mbs = self.accumulate(samples)
        params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.version += 1
        seconds = time.perf_counter() - start
        lengths = [len(s.prompt.input_ids) + len(s.completion_ids) for s in samples]
        metrics.update(grad_norm=float(grad_norm), lr=self.scheduler.get_last_lr()[0], micro_batches=len(mbs),
                       tokens_per_s=sum(lengths) / seconds, seconds=seconds,
                       completion_tokens=sum(len(s.completion_ids) for s in samples),
                       padding_fraction=padding_fraction(lengths, [mb.indices for mb in mbs], cfg.packing))
        return metrics

    def accumulate(self, samples: list[TrainSample]) -> tuple[dict[str, float], list[_MicroBatch]]:
        """Forward and backward over every micro-batch: the gradient of the whole batch's loss ends up in
        `.grad`, whatever the micro-batching (the aggregation uses the global normalisers)."""
        algo = self.algo
        use_kl = kl_enabled(algo.kl, algo.kl_coef)
        ref = self.logprobs(samples, reference=True) if use_kl else None  # builds the frozen copy on first use
        n_tokens = sum(len(s.completion_ids) for s in samples)
        norms = {"num_tokens": n_tokens, "num_seqs": len(samples), "norm_length": algo.norm_length}
        policy_loss = get_policy_loss(algo.policy_loss)
        loss_options = options_for(policy_loss, algo.options())
        self.model.train()
        mbs = self.micro_batches(samples)
        metrics = _Reduced()
        for mb in mbs:
            out = self._forward(self.model, mb, entropy=self.config.entropy_metric)
            logp, mask = self.per_sequence(out.logprobs, mb.spans)
            # One update per batch (on-policy GRPO as the paper runs it): the old policy is the current one, so the
            # ratio is 1 and its gradient is the policy gradient; the clip cannot act (issue: PPO mini-batches).
            old = logp.detach()
            adv = torch.tensor([samples[i].advantage for i in mb.indices], device=logp.device, dtype=logp.dtype)
            weights = None
            if algo.tis_cap is not None and all(samples[i].rollout_logprobs is not None for i in mb.indices):
                rollout = _stack([samples[i].rollout_logprobs for i in mb.indices], logp.shape, logp.device)
                weights = tis_weights(old, rollout, mask, cap=algo.tis_cap)
                metrics.add(tis_stats(old, rollout, mask, cap=algo.tis_cap, num_tokens=n_tokens))
            pg, aux = policy_loss(logp, old, adv, mask, is_weights=weights, **loss_options)
            loss = agg_loss(pg, mask, algo.loss_agg, **norms)
            metrics.add({"pg_loss": loss})
            if use_kl:
                ref_lp = _stack([ref[i].tolist() for i in mb.indices], logp.shape, logp.device)
                kl = agg_loss(kl_penalty(logp, ref_lp, algo.kl, mask), mask, algo.loss_agg, **norms)
                metrics.add({"kl": kl})
                loss = loss + algo.kl_coef * kl
            loss.backward()
            metrics.add({"loss": loss})
            metrics.add(clip_fractions(aux, mask, n_tokens))
            metrics.add(ratio_stats(aux["ratio"], mask, n_tokens))
            if out.entropy is not None:
                ent, _ = self.per_sequence(out.entropy, mb.spans)
                metrics.add(entropy_mean(ent, mask, n_tokens))
        return metrics.values, mbs

    # ---- handing out weights ----
    def resolve_sync_kind(self, kind: str = "auto") -> str:
        """auto: the adapter alone for LoRA, merged weights when vision/resampler train too, else full."""
        cfg = self.config
        if kind != "auto":
            return kind
        if cfg.lora:
            return "merged" if (cfg.train_vision or cfg.train_resampler) else "adapter"
        return "full"

    def sync_payload(self, kind: str = "auto", adapter_dir: str | None = None) -> tuple[str, Any]:
        """What the rollout workers need for this policy version: ("adapter", dir) for LoRA (only the adapter
        travels), ("weights", [(name, tensor)]) for full training or merged LoRA. kind: auto | adapter | merged |
        full. Trained vision/resampler weights are not in an adapter: auto then merges."""
        cfg = self.config
        kind = self.resolve_sync_kind(kind)
        if kind == "adapter":
            if not cfg.lora:
                raise ValueError("sync kind 'adapter' needs lora=True")
            path = adapter_dir or tempfile.mkdtemp(prefix=f"minicpmv-rl-adapter-v{self.version}-")
            self.model.save_pretrained(path)
            return "adapter", path
        if kind == "merged":
            return "weights", merged_weights(self.model)
        if kind == "full":
            if cfg.lora:
                raise ValueError("sync kind 'full' is for lora=False; use 'merged'")
            return "weights", [(n, t.detach()) for n, t in self.model.state_dict().items()]
        raise ValueError(f"sync kind {kind!r}: expected auto, adapter, merged or full")


def _stack(rows: list[list[float]], shape, device) -> torch.Tensor:
    out = torch.zeros(shape, device=device)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.tensor(row, device=device)
    return out


class _Reduced:
    """Per-micro-batch metric shares reduced over the batch: keys ending in `_min` / `_max` by min / max, the rest
    summed (the means are shares of the global mean, see rl.algos.metrics)."""

    def __init__(self):
        self.values: dict[str, float] = {}

    def add(self, metrics: dict) -> None:
        for key, value in metrics.items():
            value = float(value.detach()) if torch.is_tensor(value) else float(value)
            if key not in self.values:
                self.values[key] = value
            elif key.endswith("_max"):
                self.values[key] = max(self.values[key], value)
            elif key.endswith("_min"):
                self.values[key] = min(self.values[key], value)
            else:
                self.values[key] += value
