"""The GRPO learner in one process: turns scored samples into one optimizer step on LoRA adapters or the full weights.

One `step(samples)` = micro-batches packed by token budget -> learner log-probabilities -> policy loss (and KL)
aggregated with the global batch's normalisers -> backward per micro-batch -> clip -> AdamW -> scheduler. The RL
math is `rl.algos`; this file only arranges tensors for it. Its knobs are `LearnerConfig` (what trains, the optimizer,
micro-batching, precision) and `AlgoConfig` (the loss: each registered function takes its own options from it).

Precision: the weights the optimizer updates are fp32 whatever the checkpoint's dtype (the release is bf16, where an
Adam step at lr 1e-6 is far below a weight's spacing and rounds away), and so are their gradients and AdamW's
states; frozen weights (LoRA's base) stay in the compute dtype. The forward runs in bf16 under autocast on GPUs
(`bf16`) and in fp32 on the CPU unless `cpu_bf16`. Exports keep the checkpoint's dtype.

With `sharded=True` this is one rank of the sharded learner (`rl.learner.sharded`): the model is sharded with FSDP2
over the process group (built on the meta device, each rank reading only its shards: `loading.py`), the batch
normalisers and the micro-batch count are agreed over the ranks, and the state
and weights come and go through collective calls that every rank makes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model

from model import MiniCPMV
from model.attention import llm_attention
from model.processor import PromptInputs, collate, to_device
from rollouts.transfer import SendReport, TransferPlan
from rollouts.weights import Staging

from ..algos import LossInputs, Normalisers, compute_loss, kl_enabled
from ..config import AlgoConfig, LearnerConfig
from ..errors import NonFiniteUpdates, RunError
from ..packing import pack_by_budget, pad_by_budget, pad_by_count, padding_fraction
from . import memory
from . import weights as weights_io
from .base import TrainSample
from .loading import init_lora, load_sharded, lora_seed, meta_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class _MicroBatch:
    indices: list[int]
    batch: dict[str, Any]
    spans: list[tuple[int, int, int]]  # (row, start, end) of each sequence's completion tokens


class LocalLearner:
    """The learner in this process: the whole model on one device, or one FSDP2 rank (`Learner` interface)."""

    def __init__(self, ckpt: str | Path, config: LearnerConfig | None = None, algo: AlgoConfig | None = None,
                 device: str | None = None, sharded: bool = False):
        self.config = cfg = config or LearnerConfig()
        self.algo = algo or AlgoConfig()
        self.ckpt = Path(ckpt)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.sharded = sharded
        self.rank = dist.get_rank() if sharded else 0
        self._sender, self._sender_key = None, None  # the open weight-transfer group (send_weights)
        self.export_dtype = checkpoint_dtype(self.ckpt)
        # Frozen weights in the compute dtype (bf16 under autocast, else fp32); what trains is cast to fp32 below.
        compute = torch.bfloat16 if self._bf16() else torch.float32
        seed = lora_seed() if cfg.lora else None  # the adapters' initialisation (`loading.init_lora`)
        if sharded:  # on the meta device; each rank reads only its shards after sharding (`loading`)
            model = meta_model(ckpt, compute, attn_implementation=llm_attention(cfg.attention, self.device))
        else:
            model = MiniCPMV.from_pretrained(ckpt, dtype=compute, device=self.device,
                                             attn_implementation=llm_attention(cfg.attention, self.device))
        for p in model.parameters():
            p.requires_grad_(not cfg.lora)
        if cfg.lora:
            try:
                model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                         lora_dropout=cfg.lora_dropout,
                                                         target_modules=cfg.lora_targets))
            except ValueError as e:  # PEFT's NoMatchingPeftModuleError, a target of an unsupported layer type
                raise RunError(f"learner.lora_targets={cfg.lora_targets!r}: {str(e).splitlines()[0]} (a regex "
                               "matched in full against module names such as llm.model.layers.0.self_attn.q_proj)"
                               ) from None
            # the saved adapter (a PEFT folder) names its base checkpoint, as PEFT's own adapters do
            model.peft_config["default"].base_model_name_or_path = str(self.ckpt.resolve())
        base = self.base_model(model)
        for p in base.vpm.parameters():
            p.requires_grad_(cfg.train_vision)
        for p in base.resampler.parameters():
            p.requires_grad_(cfg.train_resampler)
        for p in model.parameters():  # fp32 master weights (and so fp32 gradients and AdamW states)
            if p.requires_grad:
                p.data = p.data.float()
        if cfg.gradient_checkpointing:
            base.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if sharded and (cfg.train_vision or cfg.train_resampler):
            base.llm.model.register_forward_pre_hook(self._vision_in_graph, with_kwargs=True)
        self.pad_id = base.config.pad_token_id or 0
        self.base_config = base.config
        if sharded:
            from .fsdp import shard_model

            model = shard_model(model, base, bf16=self._bf16())
            load_sharded(model, base, ckpt, self.device, compute, lora_init_seed=seed)
        elif seed is not None:
            init_lora(model, seed)
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.version = 0
        self.objective = self.algo.objective()
        """The loss (`rl.algos.compute_loss`); the loop resolves algo.kl_importance before (make_learner)."""
        self.skipped_in_a_row = 0
        self._ref_model: torch.nn.Module | None = None  # full weights with KL: a frozen copy of the checkpoint
        self._ref_vision: dict[str, torch.nn.Module] | None = None  # LoRA with KL and a trained vision side
        if kl_enabled(self.algo.kl, self.algo.kl_coef):
            self._build_reference(compute)

    @staticmethod
    def base_model(model) -> MiniCPMV:
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _bf16(self) -> bool:
        return self.config.bf16 and (self.device.type == "cuda" or self.config.cpu_bf16)

    def _lr_factor(self, step: int) -> float:
        """The LR multiplier at training step `step` (the scheduler steps once per `step()`, not per update)."""
        cfg = self.config
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            if cfg.total_steps is None:
                raise ValueError("learner.schedule=cosine needs learner.total_steps (rl-train sets it to run.steps)")
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0  # constant (the config admits these two)

    # ---- across ranks (no-ops for a lone learner) ----
    def _all_reduce(self, values: list[float], op=None) -> list[float]:
        if not self.sharded:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
        return t.tolist()

    def _padded(self, plan: list[list[int]]) -> list[list[int] | None]:
        """Every rank runs the same number of forward passes (each gathers the sharded units): the ranks with
        fewer micro-batches add passes that count for nothing (None: run over the filler)."""
        if not self.sharded:
            return list(plan)
        most = int(self._all_reduce([float(len(plan))], dist.ReduceOp.MAX)[0])
        return list(plan) + [None] * (most - len(plan))

    def _reshard(self, model) -> None:
        """After a pass without a backward: FSDP2 keeps the root unit gathered after its forward (it expects the
        backward), so a no-grad pass would leave it so (2.26 GB per rank at 8.7B for the reference) until the next
        forward. Free it now."""
        if self.sharded and hasattr(model, "reshard"):
            model.reshard()

    def _filler(self, samples: list[TrainSample]) -> _MicroBatch | None:
        """The micro-batch of the passes that keep a rank in step: this rank's first sample, else (a rank without
        samples: none is shipped to it) one text-only token and one completion token made here."""
        if not self.sharded:
            return None
        chosen = samples[0] if samples else None
        if chosen is None:
            token = self.base_config.bos_token_id if self.base_config.bos_token_id is not None else self.pad_id
            chosen = TrainSample(PromptInputs(text="", input_ids=[token]), [self.pad_id], 0.0)
        return self.micro_batch([chosen], [0])

    # ---- micro-batches ----
    def layout(self, lengths: list[int]) -> list[list[int]]:
        """Which sequences (by index, of these token lengths) go into each micro-batch."""
        cfg = self.config
        if cfg.packing:
            return pack_by_budget(lengths, cfg.micro_batch_tokens)
        if cfg.sort_by_length:
            return pad_by_budget(lengths, cfg.micro_batch_tokens)
        return pad_by_count(lengths, cfg.padded_batch_size)

    def micro_batch(self, samples: list[TrainSample], idx: list[int]) -> _MicroBatch:
        """The samples `idx` collated and moved to the device. Samples of one group share their prompt object, and
        `collate` keeps one copy of its pixels (encoded once per micro-batch, `MiniCPMV.embed`'s vision_index)."""
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
        batch.update(_sampling(chosen, spans, batch["input_ids"].shape))
        return _MicroBatch(idx, to_device(batch, self.device), spans)

    def micro_batches(self, samples: list[TrainSample]) -> list[_MicroBatch]:
        """Every micro-batch of `samples` at once (for inspection; the learner builds them one at a time)."""
        return [self.micro_batch(samples, idx) for idx in self.layout(sample_lengths(samples))]

    def iter_micro_batches(self, samples: list[TrainSample]) -> Iterator[_MicroBatch | None]:
        """The micro-batches of `samples`, each built and moved to the device when its turn comes (the device holds
        one at a time, not the whole batch), then None for the passes that keep a sharded rank in step."""
        for idx in self._padded(self.layout(sample_lengths(samples))):
            yield None if idx is None else self.micro_batch(samples, idx)

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
        autocast = self._bf16() and not self.sharded  # a sharded model casts by its FSDP2 mixed-precision policy
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(**mb.batch, return_entropy=entropy, logprob_chunk_tokens=self.config.logprob_chunk_tokens)

    @torch.no_grad()
    def logprobs(self, samples: list[TrainSample], reference: bool = False) -> list[torch.Tensor]:
        """Per-sample completion log-probabilities under the current (or the reference) weights."""
        out: list[torch.Tensor | None] = [None] * len(samples)
        filler = None
        with self._as_reference() if reference else contextlib.nullcontext(self.model) as model:
            for mb in self.iter_micro_batches(samples):
                if mb is None and filler is None:
                    filler = self._filler(samples)
                lp = self._forward(model, mb or filler).logprobs
                for i, (row, start, end) in zip(mb.indices, mb.spans) if mb is not None else ():
                    out[i] = lp[row, start:end].cpu()
            self._reshard(model)
        return out

    # ---- the KL reference ----
    def _build_reference(self, dtype: torch.dtype) -> None:
        """The frozen reference of the KL term, always the base checkpoint's weights (so a resumed run has the same
        one, and nothing of it goes into a checkpoint). LoRA: the policy with its adapters disabled, which is the
        base exactly, plus the checkpoint's own vision tower and resampler when those train (swapped in for the
        reference pass); full weights: a frozen copy of the checkpoint, sharded like the policy in the sharded
        learner. Built only when KL is on."""
        cfg = self.config
        if cfg.lora and not (cfg.train_vision or cfg.train_resampler):
            return  # disable_adapter() alone gives the base
        if self.sharded and not cfg.lora:  # on the meta device, sharded, then each rank reads its shards
            from .fsdp import shard_model

            ref = meta_model(self.ckpt, dtype)
            ref.eval().requires_grad_(False)
            ref = shard_model(ref, ref, bf16=self._bf16())
            load_sharded(ref, ref, self.ckpt, self.device, dtype)
            self._ref_model = ref
            return
        ref = MiniCPMV.from_pretrained(self.ckpt, dtype=dtype, device="cpu" if cfg.lora else self.device,
                                       attn_implementation=llm_attention(cfg.attention, self.device))
        ref.eval().requires_grad_(False)
        if cfg.lora:  # only the vision side is kept (replicated on every rank: no gradient, no sharding)
            self._ref_vision = {"vpm": ref.vpm.to(self.device), "resampler": ref.resampler.to(self.device)}
            return
        self._ref_model = ref

    @contextlib.contextmanager
    def _as_reference(self):
        """The model to run for reference log-probs (see `_build_reference`)."""
        if not self.config.lora:
            if self._ref_model is None:
                raise RuntimeError("no KL reference: it is built only when KL is on (algo.kl, algo.kl_coef)")
            yield self._ref_model
            return
        base = self.base_model(self.model)
        trained = {name: getattr(base, name) for name in (self._ref_vision or {})}
        with self.model.disable_adapter():
            try:
                for name, module in (self._ref_vision or {}).items():
                    setattr(base, name, module)
                yield self.model
            finally:
                for name, module in trained.items():
                    setattr(base, name, module)

    # ---- the update ----
    def step(self, samples: list[TrainSample], parts: list[list[TrainSample]] | None = None) -> dict[str, float]:
        """One training step on a batch: `algo.ppo_epochs` x `algo.mini_batches` optimizer updates, each over one
        mini-batch with its own loss normalisers (gradient accumulation over its micro-batches), then one scheduler
        step. With more than one update, the old log-probs are first computed under the weights as they are before
        this step (the synced ones the samples were drawn with; one version newer in the one-step-off loop, where TIS
        weighs them against the engine's: AReaL's proximal policy), and every update's ratio is taken against them,
        so that the clip acts. The reference log-probs (KL on) are computed once per step, not per update.

        An update whose gradient norm is not finite (on any rank) is skipped on every rank, its gradients zeroed,
        and counted (`skipped_steps`); `learner.max_skipped_steps` in a row raise `NonFiniteUpdates`.

        Sharded: `samples` is this rank's share and `parts` its share of each global mini-batch (possibly empty;
        a filler pass stands in for what it lacks, `_filler`)."""
        cfg, algo = self.config, self.algo
        start = time.perf_counter()
        memory.start_peak(self.device)
        if parts is None:
            parts = [[samples[i] for i in idx] for idx in mini_batches(len(samples), algo.mini_batches)]
        updates = algo.ppo_epochs * len(parts)
        olds = [self.logprobs(part) for part in parts] if updates > 1 else [None] * len(parts)
        refs = [self.logprobs(part, reference=True) for part in parts] if self.uses_reference() \
            else [None] * len(parts)
        totals, norms, micro, skipped = Reduced(), [], 0, 0
        for _ in range(algo.ppo_epochs):
            for part, old, ref in zip(parts, olds, refs):
                metrics, count = self.accumulate(part, old, ref)
                norm = float(weights_io.full_tensor(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)))
                if self._all_finite(norm):
                    self.optimizer.step()
                    norms.append(norm)
                    self.skipped_in_a_row = 0
                else:
                    skipped += 1
                    self.skipped_in_a_row += 1
                self.optimizer.zero_grad(set_to_none=True)
                if self.skipped_in_a_row >= cfg.max_skipped_steps:
                    raise NonFiniteUpdates(
                        f"{self.skipped_in_a_row} optimizer updates in a row had a non-finite gradient norm "
                        f"(learner.max_skipped_steps={cfg.max_skipped_steps}); each was skipped. Lower learner.lr, "
                        "check the rewards and algo.* for inf/NaN values, or look at learner/nonfinite_tokens")
                totals.add({k: v / (algo.ppo_epochs if k == "nonfinite_tokens" else 1 if k.endswith(("_min", "_max"))
                                    else updates) for k, v in metrics.items()})
                micro += count
        with warnings.catch_warnings():  # a step whose every update was skipped: the schedule still counts it
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.scheduler.step()
        self.version += 1
        seconds = time.perf_counter() - start
        lengths = sample_lengths(samples)
        groups, offset = [], 0  # the micro-batches the updates ran, in `samples`' indices (the parts in order)
        for part in parts:
            groups += [[offset + i for i in idx] for idx in self.layout(sample_lengths(part))]
            offset += len(part)
        out = totals.values
        out.update(grad_norm=sum(norms) / len(norms) if norms else float("nan"), lr=self.scheduler.get_last_lr()[0],
                   updates=updates, skipped_steps=skipped, micro_batches=micro, tokens=sum(lengths) * algo.ppo_epochs,
                   seconds=seconds, completion_tokens=sum(len(s.completion_ids) for s in samples),
                   padding_fraction=padding_fraction(lengths, groups, cfg.packing) if samples else 0.0,
                   peak_mb=memory.peak_mb(self.device))
        out["tokens_per_s"] = out["tokens"] / seconds
        return out

    def uses_reference(self) -> bool:
        """Whether the loss has a KL term (and so reference log-probs)."""
        return kl_enabled(self.algo.kl, self.algo.kl_coef)

    def _all_finite(self, norm: float) -> bool:
        """Whether the gradient norm is finite on every rank (the ranks agree, so they skip together)."""
        bad = 0.0 if math.isfinite(norm) else 1.0
        return self._all_reduce([bad], dist.ReduceOp.MAX)[0] == 0.0 if self.sharded else bad == 0.0

    def accumulate(self, samples: list[TrainSample], old_logprobs: list[torch.Tensor] | None = None,
                   ref_logprobs: list[torch.Tensor] | None = None) -> tuple[dict[str, float], int]:
        """Forward and backward over every micro-batch: the gradient of the whole batch's loss ends up in
        `.grad`, whatever the micro-batching and the number of ranks (the objective, `rl.algos.compute_loss`, uses
        the global normalisers). The metrics, and the number of micro-batches run."""
        algo = self.algo
        if self.uses_reference() and ref_logprobs is None:
            ref_logprobs = self.logprobs(samples, reference=True)
        n_tokens, n_seqs = self._all_reduce([float(sum(len(s.completion_ids) for s in samples)), float(len(samples))])
        norms = Normalisers(num_tokens=n_tokens, num_seqs=n_seqs, norm_length=algo.norm_length)
        self.model.train()
        metrics, filler, count = Reduced(), None, 0
        for mb in self.iter_micro_batches(samples):
            if mb is None:  # a pass that keeps this rank in step with the others; its loss counts for nothing
                filler = filler or self._filler(samples)
                lp = self._forward(self.model, filler).logprobs
                (torch.where(torch.isfinite(lp), lp, 0.0).sum() * 0.0).backward()
                continue
            count += 1
            out = self._forward(self.model, mb, entropy=self.config.entropy_metric)
            logp, mask = self.per_sequence(out.logprobs, mb.spans)

            def rows(values):  # per-sample values of this micro-batch, in its [B, L] layout
                return None if values is None else _stack([values[i] for i in mb.indices], logp.shape, logp.device)

            # One update per batch (on-policy GRPO as the paper runs it): no old log-probs, the ratio is 1 and its
            # gradient is the policy gradient. Several: the stored log-probs, and the clip acts from the second on.
            reported = [samples[i].rollout_logprobs for i in mb.indices]
            rollout = None
            if algo.tis_cap is not None and all(r is not None for r in reported):
                rollout = _stack(reported, logp.shape, logp.device)
            choice = None
            if self.objective.choice_weight is not None:  # an auto-mode completion's first token: think or not
                choice = torch.zeros_like(mask)
                choice[[b for b, i in enumerate(mb.indices) if samples[i].mode == "auto"], 0] = True
            result = compute_loss(LossInputs(
                logp=logp, mask=mask, advantages=torch.tensor([samples[i].advantage for i in mb.indices],
                                                              device=logp.device, dtype=logp.dtype),
                old_logp=rows(old_logprobs), ref_logp=rows(ref_logprobs), rollout_logp=rollout,
                entropy=None if out.entropy is None else self.per_sequence(out.entropy, mb.spans)[0],
                choice_mask=choice), norms, self.objective)
            result.loss.backward()  # (a trained vision side is in every rank's graph: `_vision_in_graph`)
            metrics.add(result.metrics)
        return metrics.values, count

    def _vision_in_graph(self, module, args, kwargs):
        """Sharded with a trained vision tower or resampler (a forward pre-hook of the LLM): its input embeddings
        depend on those weights on every rank (x 0 where the micro-batch has no image, as a rank's filler pass has
        none). FSDP2 reduces a decoder layer's gradient when the gradient reaches its input, or at the end of the
        backward when none does; the first layer's input needs a gradient only through the vision side, so a rank
        with an image and a rank without would reduce-scatter different units at the same time (a gloo/NCCL
        size mismatch)."""
        if torch.is_grad_enabled() and kwargs.get("inputs_embeds") is not None:
            kwargs["inputs_embeds"] = kwargs["inputs_embeds"] + self._touch_trained_vision()
            return args, kwargs
        return None

    def _touch_trained_vision(self) -> torch.Tensor | float:
        """Sharded with a trained vision tower or resampler: 0 x their weights, so that every rank has a gradient
        for them (zero where its micro-batch has no image) and the ranks reduce the same tensors."""
        if not (self.sharded and (self.config.train_vision or self.config.train_resampler)):
            return 0.0
        base = self.base_model(self.model)
        return sum(p.sum() * 0.0 for m in (base.vpm, base.resampler) for p in m.parameters() if p.requires_grad)

    # ---- handing out weights ----
    def resolve_sync_kind(self, kind: str = "auto") -> str:
        """auto: the adapter alone for LoRA, merged weights when vision/resampler train too, else full."""
        cfg = self.config
        if kind != "auto":
            return kind
        if cfg.lora:
            return "merged" if (cfg.train_vision or cfg.train_resampler) else "adapter"
        return "full"

    def sync_payload(self, kind: str = "auto", adapter_dir: str | None = None,
                     staging: Staging | None = None) -> tuple[str, Any]:
        """What the rollout workers need for this policy version: ("adapter", dir) for LoRA (only the adapter
        travels), and for full training or merged LoRA ("path", folder) with `staging` (the weights streamed into
        a new staging folder, bucket by bucket, as they are gathered: `weights_io.stage`; the caller owns the
        folder), else ("weights", [(name, tensor)]). kind: auto | adapter | merged | full. Trained
        vision/resampler weights are not in an adapter: auto then merges. Sharded: collective; the payload is rank
        0's (the other ranks get (kind, None))."""
        cfg = self.config
        kind = self.resolve_sync_kind(kind)
        if kind == "adapter":
            if not cfg.lora:
                raise ValueError("sync kind 'adapter' needs lora=True")
            if adapter_dir is None:
                raise ValueError("sync kind 'adapter' needs adapter_dir (a folder the caller owns and deletes)")
            weights_io.save_adapter(self.model, adapter_dir, rank0=self.rank == 0)
            return "adapter", adapter_dir
        rank0 = self.rank == 0
        pairs = self._weights(kind, cpu=rank0 and staging is None)  # staged: cast where it is, then copied
        if staging is not None:
            size = weights_io.state_bytes(self.model, staging.dtype)
            return "path", weights_io.stage(pairs, staging, size, writer=rank0)
        if rank0:
            return "weights", list(pairs)
        for _ in pairs:  # take part in every gather; keep nothing
            pass
        return "weights", None

    def _weights(self, kind: str, cpu: bool, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """The policy's full tensors one at a time (sharded: each an all-gather, every rank in the same order):
        "merged" (LoRA merged into its base layer by layer) or "full"; `dtype`: floating tensors gathered in it."""
        if kind == "merged":
            if not self.config.lora:
                raise ValueError("sync kind 'merged' is for lora=True; use 'full'")
            return weights_io.merged_stream(self.model, cpu=cpu, dtype=dtype)
        if kind == "full":
            if self.config.lora:
                raise ValueError("sync kind 'full' is for lora=False; use 'merged'")
            return weights_io.full_state(self.model, cpu=cpu, dtype=dtype)
        raise ValueError(f"sync kind {kind!r}: expected auto, adapter, merged or full")

    def send_weights(self, kind: str, plan: TransferPlan) -> SendReport:
        """Full or merged weights into every engine of `plan` in memory (`rollouts.transfer`; vLLM's weight-transfer
        protocol, `rollouts.vllm.transfer.TransferSender`): each tensor gathered in the plan's dtype (a shard is
        cast before its gather), broadcast from rank 0 bucket by bucket to all engines at once, and verified by
        every engine's checksums. Rank 0 holds one bucket and one tensor beyond its shards; nothing is written.
        The group is kept open for the next version while the plan's members and group are the same; a new plan
        (a worker replaced) closes it and opens another. Sharded: every rank calls this (the gathers)."""
        from rollouts.transfer import PoolClient
        from rollouts.vllm.transfer import PairsSource, SenderInitInfo, TransferSender

        kind = self.resolve_sync_kind(kind)
        if kind not in ("full", "merged"):
            raise ValueError(f"send_weights: kind {kind!r}; an adapter travels as a folder (sync_payload)")
        dtype = getattr(torch, plan.dtype) if plan.dtype else None
        source = PairsSource(lambda: weights_io.stream_metas(self.model, kind, plan.dtype),
                             lambda: self._weights(kind, cpu=False, dtype=dtype))  # floating ones cast already
        opened = 0.0
        if self._sender is None or self._sender_key != plan.key:
            self.close_sender()
            start = time.perf_counter()
            self._sender = TransferSender.trainer_init(
                SenderInitInfo(rank=self.rank, group=plan.group, world_size=plan.world_size,
                               bucket_bytes=plan.bucket_bytes, timeout_s=plan.timeout_s),
                client=PoolClient(plan.members, plan.timeout_s), source=source)
            self._sender_key, opened = plan.key, time.perf_counter() - start
        self._sender.source = source
        try:
            report = self._sender.send_weights(plan.version)
        except BaseException:
            self.close_sender()  # a failed update leaves the group unusable: the next plan opens a new one
            raise
        report.group_seconds = opened
        report.seconds += opened
        return report

    def close_sender(self) -> None:
        """Leave the weight-transfer group (the engines leave theirs when they join the next one)."""
        sender, self._sender, self._sender_key = getattr(self, "_sender", None), None, None
        if sender is not None:
            sender.shutdown()

    # ---- state ----
    def save_state(self, path: Path) -> None:
        """Trainable weights, optimizer, scheduler and version into `path` (a new folder; sharded: every rank)."""
        path = Path(path)
        if self.sharded:
            weights_io.save_sharded(self.model, self.optimizer, path / "sharded")
        else:
            weights_io.save_local(self.model, self.optimizer, path, lora=self.config.lora)
        if self.rank == 0:
            torch.save({"scheduler": self.scheduler.state_dict(), "version": self.version}, path / "learner.pt")

    def load_state(self, path: Path) -> None:
        path = Path(path)
        if (path / "sharded").is_dir() != self.sharded:
            raise ValueError(f"{path}: a {'sharded' if (path / 'sharded').is_dir() else 'single-process'} "
                             f"checkpoint; this run's learner is {'sharded' if self.sharded else 'single-process'} "
                             "(cluster.learner_ranks)")
        if self.sharded:
            weights_io.load_sharded(self.model, self.optimizer, path / "sharded")
        else:
            weights_io.load_local(self.model, self.optimizer, path, lora=self.config.lora)
        extra = torch.load(path / "learner.pt", weights_only=False)
        self.scheduler.load_state_dict(extra["scheduler"])
        self.version = extra["version"]

    def export(self, out: Path, bucket_mb: int = 512) -> None:
        """The merged policy as safetensors in `out`, cast to the base checkpoint's dtype, streamed as the sync
        streams: each tensor gathered, cast where it is and written in shards of `bucket_mb` (rank 0 writes and
        holds at most one bucket plus one tensor, not the fp32 state and a copy of it: ~52 GB at 8.7B)."""
        pairs = self._weights("merged" if self.config.lora else "full", cpu=False)
        weights_io.write_weights(pairs, Path(out), self.base_config, self.export_dtype,
                                 bucket_bytes=bucket_mb << 20, writer=self.rank == 0)

    def close(self) -> None:
        self.close_sender()


def mini_batches(count: int, parts: int) -> list[list[int]]:
    """`count` sample indices in `parts` contiguous, near-equal mini-batches (fewer when there are fewer samples)."""
    parts = max(1, min(parts, count))
    size, extra = divmod(count, parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        out.append(list(range(start, end)))
        start = end
    return out


def checkpoint_dtype(ckpt: Path) -> torch.dtype:
    """The dtype a checkpoint stores its weights in (config.json's torch_dtype; fp32 when unsaid)."""
    try:
        config = json.loads((Path(ckpt) / "config.json").read_text())
    except (OSError, ValueError):
        return torch.float32
    return DTYPES.get(str(config.get("torch_dtype") or config.get("dtype") or "float32"), torch.float32)


def sample_lengths(samples: list[TrainSample]) -> list[int]:
    """Prompt + completion tokens of each sample."""
    return [len(s.prompt.input_ids) + len(s.completion_ids) for s in samples]


def _sampling(chosen: list[TrainSample], spans, shape) -> dict[str, torch.Tensor]:
    """Each completion token's temperature, top-k and top-p as [R, T] tensors at the token's position (none when
    every sample was drawn at temperature 1 without filtering: the forward's defaults)."""
    if all(s.temperature == 1.0 and not s.top_k and s.top_p >= 1.0 for s in chosen):
        return {}
    out = {"temperature": torch.ones(shape), "top_k": torch.zeros(shape, dtype=torch.long),
           "top_p": torch.ones(shape)}
    for s, (row, start, end) in zip(chosen, spans):
        out["temperature"][row, start:end] = s.temperature if s.temperature > 0 else 1.0  # greedy: raw log-probs
        out["top_k"][row, start:end] = s.top_k
        out["top_p"][row, start:end] = s.top_p
    return out


def _stack(rows: list[Sequence[float] | torch.Tensor], shape, device) -> torch.Tensor:
    """Per-sequence values (lists or tensors) into a [B, L] fp32 tensor, right-padded with 0."""
    out = torch.zeros(shape, device=device)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.as_tensor(row, dtype=torch.float32).to(device)
    return out


class Reduced:
    """Per-micro-batch (or per-rank) metric shares reduced over the batch: keys ending in `_min` / `_max` by min /
    max, the rest summed (the means are shares of the global mean, see rl.algos.metrics)."""

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
