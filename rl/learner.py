"""The GRPO learner: turns scored samples into one optimizer step on LoRA adapters or the full weights.

One `step(samples)` = micro-batches packed by token budget -> learner log-probabilities -> policy loss (and KL)
aggregated with the global batch's normalisers -> backward per micro-batch -> clip -> AdamW -> scheduler. The RL
math is `rl.algos`; this file only arranges tensors for it. Every choice is a field of `LearnerConfig`.
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
from model.lora import LLM_LORA_TARGETS, merged_weights
from model.processor import PromptInputs, collate, to_device

from .algos import (agg_loss, approx_kl, clip_fractions, compute_policy_loss, kl_enabled, kl_penalty, masked_mean,
                    tis_weights)
from .packing import pack_by_budget, pad_by_budget, pad_by_count, padding_fraction


@dataclass
class LearnerConfig:
    """The learner's knobs. Defaults follow the paper where it speaks (no KL, constant lr 1e-6) and say so where
    it is silent."""
    lora: bool = True
    """LoRA adapters (PEFT) on the LLM's linear layers; False trains the full weights."""
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: str = LLM_LORA_TARGETS
    train_vision: bool = False
    """Also train the vision encoder (full weights; with LoRA, sync must then be "merged")."""
    train_resampler: bool = False
    """Also train the resampler (as train_vision)."""
    lr: float = 1e-6
    """Paper: constant 1e-6 (for full weights; LoRA usually wants ~1e-5 to 1e-4)."""
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"
    """constant | cosine (to 0 at total_steps), after warmup_steps of linear warm-up."""
    warmup_steps: int = 0
    total_steps: int = 1000
    max_grad_norm: float = 1.0
    micro_batch_tokens: int = 2048
    """Token budget of one micro-batch (prompt + completion tokens). 2048 suits the CPU, where a packed row's
    attention is dense over the row (BENCHMARKS.md); raise it on GPUs with varlen attention."""
    packing: bool = True
    """Pack sequences by token budget into rows (per-sequence positions, no attention across them): no padding
    at all, and efficient with a varlen attention kernel (flash-attention on GPU). False: padded micro-batches."""
    sort_by_length: bool = True
    """Padded micro-batches only: length-sorted batches of at most micro_batch_tokens (rows x longest), the
    fastest layout on the CPU; False pads `padded_batch_size` sequences in arrival order (the naive baseline)."""
    padded_batch_size: int = 4
    gradient_checkpointing: bool = False
    bf16: bool = True
    """bf16 autocast on CUDA; the CPU runs fp32 unless cpu_bf16."""
    cpu_bf16: bool = False
    """bf16 autocast on the CPU too, as TRL's GRPOConfig does by default. On CPUs with AVX512-BF16 or AMX the
    update takes ~2/3 of the fp32 time (bench/e2e.py), but its log-probs no longer match an fp32 rollout engine's
    (rl-doctor, TIS weights). Off: fp32."""
    policy_loss: str = "ppo_clip"
    """ppo_clip | gspo (rl.algos.POLICY_LOSSES)."""
    clip_low: float = 0.2
    clip_high: float = 0.2
    """Paper silent: plain PPO's 0.2; DAPO's clip-higher is clip_high=0.28."""
    dual_clip_c: float | None = None
    loss_agg: str = "token-mean"
    """Paper silent: DAPO's token-mean over the global batch (rl.algos.LOSS_AGGS)."""
    norm_length: int | None = None
    """Dr. GRPO's constant (seq-mean-token-sum-norm): the generation budget."""
    kl: str = "off"
    """Paper: no KL (and then no reference model). k1 | k2 | k3 to enable."""
    kl_coef: float = 0.0
    tis_cap: float | None = 2.0
    """Truncated importance sampling between the rollout engine's and the learner's log-probs; None = off."""
    entropy_metric: bool = True


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
    def __init__(self, ckpt: str | Path, config: LearnerConfig | None = None, device: str | None = None):
        self.config = cfg = config or LearnerConfig()
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
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "cosine":
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
            return 0.5 * (1 + math.cos(math.pi * progress))
        raise ValueError(f"schedule={cfg.schedule!r}: expected constant or cosine")

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
        cfg = self.config
        use_kl = kl_enabled(cfg.kl, cfg.kl_coef)
        ref = self.logprobs(samples, reference=True) if use_kl else None  # builds the frozen copy on first use
        n_tokens = sum(len(s.completion_ids) for s in samples)
        norms = {"num_tokens": n_tokens, "num_seqs": len(samples), "norm_length": cfg.norm_length}
        self.model.train()
        mbs = self.micro_batches(samples)
        sums: dict[str, float] = {}
        for mb in mbs:
            out = self._forward(self.model, mb, entropy=cfg.entropy_metric)
            logp, mask = self.per_sequence(out.logprobs, mb.spans)
            # One update per batch (on-policy GRPO as the paper runs it): the old policy is the current one, the
            # ratio is 1 with the policy gradient as its gradient, and the clip only acts through TIS weights.
            old = logp.detach()
            adv = torch.tensor([samples[i].advantage for i in mb.indices], device=logp.device, dtype=logp.dtype)
            weights = None
            if cfg.tis_cap is not None and all(samples[i].rollout_logprobs is not None for i in mb.indices):
                rollout = _stack([samples[i].rollout_logprobs for i in mb.indices], logp.shape, logp.device)
                weights = tis_weights(old, rollout, mask, cap=cfg.tis_cap)
                _add(sums, "tis_weight_mean", masked_mean(weights, mask, n_tokens))
                _add(sums, "rollout_logprob_abs_diff", masked_mean((old - rollout).abs(), mask, n_tokens))
                for k, v in approx_kl(old, rollout, mask, n_tokens).items():  # sampler vs learner
                    _add(sums, f"rollout_{k}", v)
            kwargs = dict(clip_low=cfg.clip_low, clip_high=cfg.clip_high, is_weights=weights)
            if cfg.policy_loss == "ppo_clip":
                kwargs["dual_clip_c"] = cfg.dual_clip_c
            pg, aux = compute_policy_loss(cfg.policy_loss, logp, old, adv, mask, **kwargs)
            loss = agg_loss(pg, mask, cfg.loss_agg, **norms)
            _add(sums, "pg_loss", loss.detach())
            if use_kl:
                ref_lp = _stack([ref[i].tolist() for i in mb.indices], logp.shape, logp.device)
                kl = agg_loss(kl_penalty(logp, ref_lp, cfg.kl, mask), mask, cfg.loss_agg, **norms)
                _add(sums, "kl", kl.detach())
                loss = loss + cfg.kl_coef * kl
            loss.backward()
            _add(sums, "loss", loss.detach())
            for k, v in clip_fractions(aux, mask, n_tokens).items():
                _add(sums, k, v)
            if out.entropy is not None:
                ent, _ = self.per_sequence(out.entropy, mb.spans)
                _add(sums, "entropy", masked_mean(ent, mask, n_tokens))
        return sums, mbs

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


def _add(sums: dict, key: str, value) -> None:
    sums[key] = sums.get(key, 0.0) + float(value)
