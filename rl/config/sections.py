"""The configuration tree of `rl-train`: one class per component (suffix `Config`), a one-line docstring per field,
and each field's constraint declared on it (`Field(gt=0)`, a `Literal` of the allowed values, a registry name).

Defaults follow the paper where it speaks (GRPO, no KL, no entropy loss, 8 samples per prompt, 50% long-mode
prompts, temperature 1.0, constant lr 1e-6, 8192 long-mode tokens, R = acc + format + repetition +
0.5 z(reward_model)) and say so where it is silent. `configs/*.yaml` override them; `rl-train --config F a.b=value`
overrides those. Everything here is checked when the tree is built: a bad value fails before anything starts.

Two sections are the lower packages' own types, used as they are: `rollouts.SamplingConfig` (one mode's sampling)
and `rewards.CombineConfig` (the combined reward); `model/`, `rollouts/` and `rewards/` never import `rl/`.
"""

from __future__ import annotations

import os
from dataclasses import field
from typing import TYPE_CHECKING, Annotated, Literal, Optional

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from core.modes import FIXED_MODES, MODES
from core.plugins import absolute_spec, is_path_spec, load_callable
from model.targets import LLM_LORA_TARGETS
from rewards import VERIFIERS, CombineConfig, RunnerConfig, SandboxConfig
from rollouts.types import SamplingConfig


if TYPE_CHECKING:
    from ..algos import Objective

KL_OFF = "off"
"""`algo.kl`'s value for no KL term (rl.algos.KL_OFF; rl.algos itself, which needs torch, is imported when a name
is checked, so that this module imports without torch)."""

# Unknown keys are errors; assignments are checked too; so is a non-finite number (inf, nan: nothing trains on it);
# each field's docstring is its description.
SECTION = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True, allow_inf_nan=False)

Mode = Literal[MODES]  # type: ignore[valid-type]


def _registered(table_name: str, kind: str, *extra: str):
    """A name that must be registered in `rl.algos.<table_name>` (its registries: users may register their own)."""

    def check(name: str) -> str:
        try:
            from .. import algos
        except ImportError:  # no torch here (a launcher writing configs): checked where the run loads the config
            return name
        table = getattr(algos, table_name)
        if name in table or name in extra:
            return name
        if is_path_spec(name):  # a user's function: it must load now, not in the middle of a run
            try:
                fn = load_callable(absolute_spec(name))
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"{name!r}: the {kind} does not load ({type(e).__name__}: {e})") from None
            if not callable(fn):
                raise ValueError(f"{name!r}: not a function")
            return absolute_spec(name)  # so that learner ranks in other directories find the file
        try:
            found = algos.entry_point(table_name, name)  # an installed package's, by name
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{name!r}: the {kind}'s entry point does not load ({type(e).__name__}: {e})") from None
        if found is not None:
            return name
        raise ValueError(f"{name!r} is not a registered {kind}; allowed: {', '.join(list(extra) + sorted(table))}, "
                         f"a 'module:function' / 'file.py:function' path, or an entry point of the group "
                         f"{algos.ENTRY_POINT_GROUPS[table_name]!r}")

    return AfterValidator(check)


@dataclass(config=SECTION)
class ModelConfig:
    """The policy to start from."""
    path: str = "runs/tiny-model"
    """A MiniCPM-V 4.5 checkpoint directory (the release, or one this project wrote)."""
    build_tiny_if_missing: bool = True
    """When `path` does not exist, build the tiny random checkpoint there (the CPU demo)."""
    tiny_seed: int = Field(0, ge=0, le=2**32 - 1)


COLUMN_FIELDS = ("answer", "question", "messages", "images", "videos", "id", "reward", "mode", "meta", "image",
                 "choices")
"""The keys `data.columns` takes: the row schema's fields (`rl.data.schema.FIELDS`) and the shapes `rl.data.external`
turns into them (`SHAPED`: an `image` column, a `choices` list)."""


def _no_open_list(value):
    if value is None:
        raise ValueError("null would let each row name any module or file as its reward, and loading a data set "
                         "would import and run it: list the rewards rows may name (the built-in verifiers: "
                         f"{', '.join(VERIFIERS)}; a plugin by its 'file.py:function' or 'module:function' spec)")
    return value


@dataclass(config=SECTION)
class DataConfig:
    """Training prompts: the files, how bad rows are handled, the order."""
    path: str | list[str] = ""
    """A JSONL or Parquet file, a folder of them, a `datasets` folder (`save_to_disk`), a hub id (`owner/name`, with
    `split`), or a list of these (rl/data/external.py)."""
    split: Optional[str] = None
    """The split of a `datasets` folder, a hub id or a `DatasetDict` given from Python; None: its only split, else
    "train". A single `Dataset` from Python is one split: set this only to its own split's name."""
    columns: dict[str, str] = field(default_factory=dict)
    """This schema's fields (`COLUMN_FIELDS`: question, answer, images, image, choices, messages, reward, mode, meta,
    id, videos) -> the data set's columns, e.g. {question: problem, answer: solution}; columns the schema does not know are left out."""
    source_column: Optional[str] = None
    """With reward_by_source: the column naming each row's source (verl's `data_source`)."""
    reward_by_source: dict[str, str] = field(default_factory=dict)
    """A reward per source for mixed sets: {source value: verifier}; every row's source must be a key."""
    system_prompt: Optional[str] = None
    """A system message put before each row's messages (a row with its own system message keeps it). Paper silent:
    none."""
    prompt_template: Optional[str] = None
    """Each row's user text written from this template, `{question}` standing for the row's question (for a
    `messages` row, the text of its last user message), e.g. EasyR1's geometry3k format prompt
    "{question} ... put the final answer in \\boxed{}." (other braces are kept as they are). Must contain
    `{question}` once. None: the question as it is."""
    on_bad_row: Literal["skip", "fail"] = "skip"
    """skip: leave a bad row out and count it; fail: stop at the first bad row with its error."""
    default_reward: str = "math"
    """The verifier of rows that name none."""
    allowed_rewards: Annotated[list[str], BeforeValidator(_no_open_list)] = field(
        default_factory=lambda: list(VERIFIERS))
    """Reward names rows may give: the `acc` reward's verifiers and the data schema's check read this one list. A
    plugin is listed by its spec (`path/to/file.py:function`, `module:function`, an entry point); rows then name it
    by that spec or by the name it registers with `@register_reward("name")`. Only the config names code: a row
    naming anything else is a bad row, and nothing it names is imported (null, "any spec", is refused)."""
    shuffle: bool = True
    """A fresh seeded shuffle every epoch; False: file order."""
    seed: Optional[int] = Field(None, ge=0, le=2**32 - 1)
    """The shuffle seed (and the held-out draw's); None: run.seed. PromptDataset.from_config's `seed` argument
    overrides it."""

    def shuffle_seed(self, run_seed: int) -> int:
        return self.seed if self.seed is not None else run_seed
    max_rows: int = Field(0, ge=0)
    """Keep the first N valid rows (0: all); reading stops there."""
    check_images: Literal["load", "lazy"] = "load"
    """load: decode every image when loading; lazy: check they exist now and decode a row's images when first drawn."""
    max_image_pixels: Optional[int] = Field(89_478_485, ge=1)
    """The most pixels (width x height) a row's image may have: a larger one is a bad row (a decompression-bomb guard,
    checked on the image header before any pixel is decoded, when rows are loaded or first drawn). Default: PIL's own
    limit, 89,478,485; None: no limit. The rollout workers' processor decodes images under the same limit (PIL's
    process-wide limit is left as it is)."""
    max_prompt_tokens: Optional[int] = Field(None, ge=1)
    """A row whose prompt is longer is a bad row: text, image and video tokens as model.processor builds them, for
    the row's mode (the longer of short and long for a row without one), checked at load (image sizes from their
    headers alone). Unset, a run uses rollout.max_model_len minus the longest mode's max_new_tokens (the defaults:
    10240 - 8192 = 2048: `TrainConfig.prompt_token_limit`), so a prompt the engine could not serve is a bad row
    before anything starts. A DataConfig alone (rl-reward, load_rows) with None: no check; the check needs the
    processor: PromptDataset.from_config(cfg, processor=Processor.from_pretrained(checkpoint))."""
    max_errors: int = Field(20, ge=0)
    """Error messages kept in the report (all bad rows are counted)."""
    demo: Optional[str] = None
    """When `path` is a missing .jsonl file, generate this demo set there (rl.data.demo.DEMO_SETS)."""
    demo_rows: int = Field(256, ge=1)
    """Rows of the generated demo set."""
    video_fps: float = Field(3.0, gt=0)
    """Video rows: frames sampled per second (the release's `choose_fps`, 3; `model/video.py`)."""
    video_max_frames: int = Field(180, ge=1)
    """Video rows: frames kept before packing (the release's MAX_NUM_FRAMES, 180)."""
    video_max_packing: int = Field(3, ge=1, le=6)
    """Video rows: at most this many consecutive frames share one 3D-Resampler package of 64 tokens (the release's
    MAX_NUM_PACKING, 3; the resampler takes up to 6)."""
    video_folder_fps: float = Field(3.0, gt=0)
    """Video rows given as a folder of frame images: the rate the frames were taken at."""

    @model_validator(mode="after")
    def _check(self):
        if not self.path:
            raise ValueError("data.path: no data file given")
        unknown = [k for k in self.columns if k not in COLUMN_FIELDS]
        if unknown:
            raise ValueError(f"data.columns.{unknown[0]}: not a field of the row schema; the keys are the schema's "
                             f"fields ({', '.join(COLUMN_FIELDS)}) and the values the data set's columns")
        if self.prompt_template is not None and self.prompt_template.count("{question}") != 1:
            raise ValueError(f"data.prompt_template={self.prompt_template!r}: must contain {{question}} once (where "
                             "each row's question goes)")
        if bool(self.reward_by_source) != bool(self.source_column):
            raise ValueError("data.reward_by_source and data.source_column go together: the column names each row's "
                             "source, the mapping its reward")
        if self.default_reward not in self.allowed_rewards and \
                all(a in VERIFIERS for a in self.allowed_rewards):  # a listed plugin's own names: rl.preflight
            raise ValueError(f"data.default_reward={self.default_reward!r}: not one of data.allowed_rewards "
                             f"({', '.join(self.allowed_rewards)})")
        return self

    def video_sampling(self) -> dict:
        """`model.video.load_video`'s options (the processor's `video_sampling`)."""
        return {"fps": self.video_fps, "max_frames": self.video_max_frames, "max_packing": self.video_max_packing,
                "folder_fps": self.video_folder_fps}


@dataclass(config=SECTION)
class ModeScheduleConfig:
    """Which prompts are sampled in long mode (paper: a constant half of them), and the measured benefit of thinking
    (`rl/modes.py`)."""
    long_fraction: float = Field(0.5, ge=0, le=1)
    """Share of prompts assigned to long mode (at step 0 for linear/step schedules; with `benefit`, the long-mode
    probability of a prompt nothing is known about yet)."""
    schedule: Literal["constant", "linear", "step", "benefit"] = "constant"
    """constant | linear (from long_fraction to long_fraction_end over ramp_steps) | step (switch at ramp_steps) |
    benefit (each prompt's long-mode probability from its measured benefit: needs paired_fraction > 0)."""
    long_fraction_end: float = Field(0.5, ge=0, le=1)
    ramp_steps: int = Field(0, ge=0)
    respect_data_mode: bool = True
    """A row with its own `mode` keeps it; False assigns every row by the schedule."""
    auto_fraction: float = Field(0.0, ge=0, le=1)
    """Share of prompts sampled in auto mode (the template pre-fills nothing: the model chooses whether to think);
    drawn before the long/short split. Paper: 0 (it trains the two modes). Train the choice with a token cost
    (`reward.combine` parts) and `algo.choice_weight`; logged as think_rate/auto (and per source)."""
    paired_fraction: float = Field(0.0, ge=0, le=1)
    """Share of prompts sampled in both modes: two groups of rollout.n / 2 samples, one per mode, each its own
    advantage group (short against short, long against long). The pair measures the prompt's benefit of thinking
    (`token_cost`). Paper: none (0)."""
    token_cost: float = Field(0.0, ge=0)
    """lambda of the measured benefit: delta = mean reward(long) - mean reward(short) - lambda * (mean tokens(long) -
    mean tokens(short)) / token_scale. 0: thinking is judged by reward alone."""
    token_scale: int = Field(1000, ge=1)
    """Tokens per unit of token_cost (1000: lambda is the reward one thousand more tokens must earn)."""
    benefit_decay: float = Field(0.5, gt=0, le=1)
    """Weight of a new measurement in a prompt's running estimate (an exponential average; the source's and the
    data set's estimates, the fallbacks for prompts not measured yet, average the same way)."""
    benefit_temperature: float = Field(0.1, gt=0)
    """Long-mode probability = sigmoid(estimate / benefit_temperature): 0.1 makes a benefit of +0.2 reward ~88%."""
    benefit_floor: float = Field(0.05, ge=0, le=0.5)
    """The least probability of either mode under `benefit` (exploration: no prompt is ever decided for good)."""


def _paper_sampling(max_new_tokens: int):
    return lambda: SamplingConfig(max_new_tokens=max_new_tokens)


@dataclass(config=SECTION)
class RolloutConfig:
    """Sampling: the worker pool and per-mode sampling settings."""
    backend: str = "vllm"
    """The rollout backend each worker runs (`rollouts/backend.py`): vllm (`rollouts.vllm.worker.RolloutWorker`),
    fake (`rollouts.fake.FakeBackend`: scripted answers without a model, for tests), or a `module:Class` of one's
    own that keeps the contract of `rollouts.backend.RolloutBackend`."""
    num_workers: int = Field(1, ge=1)
    prompts_per_step: int = Field(8, ge=1)
    """Prompts per step (the paper: 128)."""
    n: int = Field(8, ge=2)
    """Samples per prompt (the paper: 8); a group needs at least 2 for a baseline."""
    max_model_len: int = Field(10240, ge=1)
    """vLLM's context (prompt + completion tokens): the paper's 8192 long-mode tokens plus 2048 for the prompt."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """vLLM dtype; "auto" serves an fp32 checkpoint in bf16 (use float32 for exact agreement on CPU)."""
    gpus_per_worker: float = Field(0, ge=0)
    cpus_per_worker: int = Field(0, ge=0)
    """CPU cores per worker (its torch/OpenMP threads). 0: without GPUs, the machine's cores shared among the
    workers (generation and the update take turns, so a lone worker gets every core); with GPUs, 1."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs per vLLM engine (tensor parallelism); gpus_per_worker should match it."""
    video: Optional[bool] = None
    """Serve video prompts with this project's vLLM class for MiniCPM-V 4.5 (`rollouts/vllm/video.py`, registered by
    the `vllm.general_plugins` entry point): video frames packed through the 3D-Resampler as the learner packs them.
    vLLM's own class encodes each frame alone, so video rows are refused with false. None: on when the data has
    video rows."""
    stall_timeout_s: Optional[float] = Field(600.0, gt=0)
    """An engine step that runs longer than this is a hung engine core: the worker is ended and replaced (its
    requests resubmitted), as when vLLM's engine core process dies (`rollouts/vllm/loop.py`). A step is milliseconds
    on a GPU and seconds on a CPU; the default leaves room for a long prefill. None: wait for ever."""
    kv_after_update: Literal["keep", "recompute"] = "keep"
    """run.async_mode=fully_async: what an in-flight weight update does to the running requests' KV cache. keep
    (PipelineRL's): it stays, nothing is recomputed, and their later tokens attend to keys and values of the older
    weights (the engine's log-probs are still those of what was sampled, so the importance weight stays right).
    recompute: vLLM preempts them and recomputes their prompt and tokens so far with the new weights (image
    features included): their later tokens are exactly the new policy's, for a prefill of every running request
    at every update. Paper silent (it trains on-policy)."""
    partial_rollouts: bool = False
    """Requests stopped for no fault keep what they drew and go on later from there, not drawn again (verl's and
    slime's partial rollouts, AReaL's interruptible ones): the groups over-provisioned dynamic sampling
    (`algo.oversample`) stops once its batch is full are interrupted, their samples so far (tokens, the engine's
    log-probs, versions) carried to the next round, which resumes them before drawing new prompts
    (`rl.batches.Collector.carried`, saved in checkpoints); and with run.async_mode=fully_async, the groups running
    when a checkpoint or an evaluation pauses the producer are interrupted and carried the same way instead of
    being waited for (the pause no longer lasts as long as the longest running group). A resumed sample's earlier tokens come from an older
    policy: the loss weighs them against the engine's log-probs (`algo.tis_cap`), and a carried group older than
    `algo.max_staleness` when its turn comes is dropped (`rollout/partial_too_old`). Logged:
    `rollout/partial_resumed`, `rollout/partial_tokens_saved`. Off: they are aborted and their rows left for this
    epoch (the paper is silent; on-policy GRPO draws every sample from the current weights). Requests preempted by
    an in-flight update with kv_after_update=recompute keep their tokens in vLLM itself."""
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    """vLLM's share of each of its GPUs' memory (weights, activations, KV cache). Raise it when the learner has
    GPUs of its own (cluster.learner_gpus_per_rank); keep room for the learner when both share a GPU."""
    short: SamplingConfig = field(default_factory=_paper_sampling(1024))
    long: SamplingConfig = field(default_factory=_paper_sampling(8192))
    """The paper: 8192 new tokens, temperature 1.0."""
    auto: SamplingConfig = field(default_factory=_paper_sampling(8192))

    @model_validator(mode="after")
    def _check(self):
        from rollouts.backend import BACKENDS

        module, sep, cls = self.backend.partition(":")
        if self.backend not in BACKENDS and not (sep and module and cls):
            raise ValueError(f"rollout.backend={self.backend!r}: expected one of {sorted(BACKENDS)} or a "
                             "'module:Class' path")
        for mode in MODES:
            sampling: SamplingConfig = getattr(self, mode)
            sampling.validate(f"rollout.{mode}")
            if sampling.max_new_tokens >= self.max_model_len:
                raise ValueError(f"rollout.{mode}.max_new_tokens={sampling.max_new_tokens} leaves no room for the "
                                 f"prompt in rollout.max_model_len={self.max_model_len}: raise max_model_len or "
                                 "lower max_new_tokens")
        return self

    def sampling(self) -> dict[str, SamplingConfig]:
        """Mode -> sampling, as the rollout pool takes it."""
        return {mode: getattr(self, mode) for mode in MODES}

    def cpus(self) -> int:
        """`cpus_per_worker`, with 0 resolved (see its docstring)."""
        if self.cpus_per_worker:
            return self.cpus_per_worker
        return 1 if self.gpus_per_worker else max(1, (os.cpu_count() or 1) // self.num_workers)


@dataclass(config=SECTION)
class RewardConfig:
    """The combined reward (defaults: the paper's R = acc + format + repetition + 0.5 z(reward_model))."""
    combine: CombineConfig = field(default_factory=CombineConfig)
    timeout_s: float = Field(10.0, gt=0)
    """Per reward call (a hung verifier gives None for that row)."""
    workers: int = Field(2, ge=1)
    memory_mb: int = Field(4096, ge=256)
    """Address-space limit of each sandboxed reward worker. At least 256: below ~128 MB the `math` verifier's
    parser (math-verify, sympy) runs out of memory and every reference reads as unparseable."""
    max_failed_steps: int = Field(3, ge=1)
    """A reward part that fails (raises or times out) on every row of this many steps in a row stops the run
    (each such step is a warning; errors and timeouts are counted in reward/errors/<part>, reward/timeouts/<part>)."""

    def runner_config(self) -> RunnerConfig:
        return RunnerConfig(sandbox=SandboxConfig(workers=self.workers, timeout_s=self.timeout_s,
                                                  memory_mb=self.memory_mb))


@dataclass(config=SECTION)
class AlgoConfig:
    """The RL math: advantages, batch filtering, the policy loss and its clip, loss aggregation, KL, TIS. Each
    registered function (rl.algos) takes the options it declares from here, by name."""
    advantage: Annotated[str, _registered("ADVANTAGE_ESTIMATORS", "advantage estimator")] = "grpo"
    """grpo | dr_grpo | rloo (rl.algos.ADVANTAGE_ESTIMATORS)."""
    std: Literal["sample", "population"] = "sample"
    """GRPO's std: sample (n-1, as TRL) or population."""
    eps: float = Field(1e-6, ge=0)
    """GRPO: added to the group std before dividing."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal (zero advantage) and refill the batch (off in the paper)."""
    max_refill_rounds: int = Field(2, ge=0)
    """Dynamic sampling: extra rollout rounds per step at most; the step goes on with what it has. (fully_async: a
    step takes fewer groups than a batch once 1 + this many rounds of prompts that lost groups, dropped or failed,
    finished since the last step.)"""
    oversample: Optional[float] = Field(None, ge=1)
    """Dynamic sampling: each round submits this many times the groups still needed and judges each group as it
    finishes; the groups with reward variance are kept in submission order (not finishing order, which would
    favour short completions), and once the batch is full the requests after them still running are aborted (their
    rows are not revisited this epoch, like dropped groups). Refill rounds stay the fallback. None: 1.5 with dynamic
    sampling (verl's DAPO recipe over-samples too; the paper is silent), 1.0 (exactly the groups needed) otherwise."""
    ppo_epochs: int = Field(1, ge=1)
    """Passes over each rollout batch (verl's ppo_epochs, TRL's num_iterations). Paper silent; 1: on-policy."""
    mini_batches: int = Field(1, ge=1)
    """Optimizer steps per pass, each on one contiguous part of the batch with its own loss normalisers (RLPR,
    by the paper's group: 768 prompts per batch, PPO mini-batches of 192, i.e. 4). With more than one update in
    all, the learner first stores the old log-probs of the weights that sampled and the clip acts; the scheduler
    counts optimizer steps."""
    policy_loss: Annotated[str, _registered("POLICY_LOSSES", "policy loss")] = "ppo_clip"
    """ppo_clip | gspo (rl.algos.POLICY_LOSSES)."""
    clip_low: Optional[float] = Field(None, ge=0)
    clip_high: Optional[float] = Field(None, ge=0)
    """Paper silent. None: the policy loss's own (ppo_clip: PPO's 0.2 both ways; gspo: its paper's 3e-4 / 4e-4).
    DAPO's clip-higher is clip_high=0.28 with ppo_clip."""
    dual_clip_c: Optional[float] = Field(None, gt=1)
    """Dual clip for negative advantages (c > 1; verl uses 3); None: off."""
    loss_agg: Annotated[str, _registered("LOSS_AGGS", "loss aggregation")] = "token-mean"
    """Paper silent: DAPO's token-mean over the global batch (rl.algos.LOSS_AGGS)."""
    norm_length: Optional[int] = Field(None, ge=1)
    """Dr. GRPO's constant (seq-mean-token-sum-norm): the generation budget."""
    kl: Annotated[str, _registered("KL_ESTIMATORS", "KL estimator", KL_OFF)] = KL_OFF
    """Paper: no KL (and then no reference model is built). k1 | k2 | k3 to enable (with kl_coef > 0). The
    reference is the base checkpoint, frozen (the same after a resume; not in checkpoints): LoRA runs it as the
    policy with adapters disabled (and the checkpoint's vision tower / resampler when those train); full weights
    keep a frozen copy in the compute dtype, sharded like the policy by the sharded learner (one more bf16 model,
    /N per rank)."""
    kl_coef: float = Field(0.0, ge=0)
    max_staleness: int = Field(1, ge=0)
    """run.async_mode=one_step_off / fully_async, rollout.partial_rollouts: a sample whose oldest token was drawn more
    than this many policy versions before the update it would go into is dropped (counted in staleness/dropped), or,
    fully async with staleness_policy=wait, never drawn that early. One-step-off keeps every sample at age <= 1."""
    staleness_policy: Literal["wait", "drop"] = "wait"
    """run.async_mode=fully_async: wait (AReaL's bound: the producer draws a prompt only while the groups ahead of
    the learner are fewer than max_staleness batches, and the learner waits for a running group about to pass the
    bound, so no sample exceeds it and none is wasted) or drop (the producer runs ahead as far as run.buffer_groups
    lets it; groups past the bound are dropped at the update)."""
    kl_clamp: Optional[float] = Field(10.0, gt=0)
    """The per-token KL estimate is clamped to [-kl_clamp, kl_clamp] (verl's low_var_kl clamps k3 to +-10, its
    default here); None: as defined (k3 is unbounded where the policy gives a token far less than the reference)."""
    kl_importance: Optional[bool] = None
    """Weigh the KL term by pi / pi_behaviour (DeepSeek-V3.2's importance-corrected KL, `rl.algos.kl.kl_penalty`'s
    old_logp), the behaviour policy's log-probs being the engine's where reported: unbiased when the samples come
    from an older policy. None: on with run.async_mode one_step_off or fully_async (samples of older versions), off
    otherwise."""
    tis_cap: Optional[float] = Field(2.0, ge=1)
    """Truncated importance sampling between the rollout engine's and the learner's log-probs; None = off."""
    tis_level: Literal["token", "sequence"] = "token"
    """TIS weight per token (verl's default), or the product of a sequence's token ratios on each of its tokens."""
    tis_mode: Literal["truncate", "mask"] = "truncate"
    """truncate: min(w, tis_cap) (TIS); mask: w where w <= tis_cap, else 0 (drop the token; MIS)."""
    choice_weight: Optional[float] = Field(None, ge=0)
    """Auto mode (the model chooses whether to think): None, its choice token (the completion's first, `<think>` or
    not) is a response token like the others; a weight, Thinkless's decoupled GRPO: the choice tokens' loss is
    summed per sequence and weighed apart (`rl.algos.Objective.choice_weight`). Paper silent (it trains no auto
    mode); acts on auto-mode samples only (`modes.auto_fraction`, or rows whose data says auto)."""

    @model_validator(mode="after")
    def _check(self):
        if self.loss_agg == "seq-mean-token-sum-norm" and self.norm_length is None:
            raise ValueError("algo.loss_agg=seq-mean-token-sum-norm needs algo.norm_length (Dr. GRPO's constant: "
                             "the generation budget in tokens)")
        clips = {k: v for k, v in (("clip_low", self.clip_low), ("clip_high", self.clip_high),
                                    ("dual_clip_c", self.dual_clip_c)) if v is not None}
        if clips and self.ppo_epochs * self.mini_batches == 1:
            raise ValueError(f"algo.{next(iter(clips))}={next(iter(clips.values()))} cannot act with one update per "
                             "batch (the ratio is 1): set algo.ppo_epochs or algo.mini_batches above 1, or leave the "
                             "clip unset")
        if self.oversample is not None and self.oversample > 1 and not self.dynamic_sampling:
            raise ValueError(f"algo.oversample={self.oversample} acts only with algo.dynamic_sampling=true (without it "
                             "every group is kept, so there is nothing to over-provision for)")
        if (self.kl == KL_OFF) != (self.kl_coef == 0):
            raise ValueError(f"algo.kl={self.kl} with algo.kl_coef={self.kl_coef}: a KL term needs both an "
                             "estimator (k1 | k2 | k3) and kl_coef > 0; leave both off (the paper) otherwise")
        return self

    def oversample_factor(self) -> float:
        """`oversample` with None resolved (see its docstring)."""
        if self.oversample is not None:
            return self.oversample
        return 1.5 if self.dynamic_sampling else 1.0

    def options(self) -> dict:
        """The knobs as keyword options; each registered function takes those it declares (rl.algos.options_for)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def objective(self, one_step_off: bool = False) -> Objective:
        """What `rl.algos.compute_loss` computes; `kl_importance` None resolved by the loop (see its docstring)."""
        from ..algos import Objective

        kl_importance = one_step_off if self.kl_importance is None else self.kl_importance
        return Objective(policy_loss=self.policy_loss, loss_agg=self.loss_agg, kl=self.kl, kl_coef=self.kl_coef,
                         kl_clamp=self.kl_clamp, kl_importance=kl_importance, tis_cap=self.tis_cap,
                         tis_level=self.tis_level, tis_mode=self.tis_mode, choice_weight=self.choice_weight,
                         options=self.options())


@dataclass(config=SECTION)
class LearnerConfig:
    """The learner: what trains, the optimizer and its schedule, micro-batching, precision."""
    lora: bool = True
    """LoRA adapters (PEFT) on the LLM's linear layers; False trains the full weights."""
    lora_rank: int = Field(16, ge=1, le=512)
    """The adapters' rank; vLLM serves them with the smallest max_lora_rank it accepts at or above it (1, 8, 16, 32,
    64, 128, 256, 320, 512: `rollouts.vllm.engine.engine_lora_rank`), so at most 512."""
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_targets: str = LLM_LORA_TARGETS
    """Which modules get adapters (PEFT's target_modules); default: the LLM's linear layers, not the vision tower's."""
    train_vision: bool = False
    """Also train the vision encoder (full weights; with LoRA, sync must then be "merged")."""
    train_resampler: bool = False
    """Also train the resampler (as train_vision)."""
    lr: float = Field(1e-6, gt=0)
    """Paper: constant 1e-6 (for full weights; LoRA usually wants ~1e-5 to 1e-4)."""
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    """AdamW's epsilon (torch's default). Adam's step is ~lr x sign(g) where |g| >> eps, so gradient entries near
    zero move by up to lr on rounding noise alone; a larger eps damps them."""
    schedule: Literal["constant", "cosine"] = "constant"
    """constant | cosine (to 0 at total_steps), after warmup_steps of linear warm-up. The schedule counts training
    steps (one per batch, whatever algo.mini_batches x algo.ppo_epochs optimizer updates each takes)."""
    warmup_steps: int = Field(0, ge=0)
    """Training steps of linear warm-up."""
    total_steps: Optional[int] = Field(None, ge=1)
    """The schedule's length in training steps. None: run.steps (rl-train); a value that disagrees with run.steps is
    a config error. A learner built without a run needs it for the cosine schedule."""
    max_grad_norm: float = Field(1.0, gt=0)
    max_skipped_steps: int = Field(3, ge=1)
    """An optimizer update whose gradient norm is not finite (on any rank) is skipped on every rank, its gradients
    zeroed, and counted (learner/skipped_steps); this many skipped in a row stop the run with an error."""
    micro_batch_tokens: int = Field(2048, ge=1)
    """Token budget of one micro-batch (prompt + completion tokens). With varlen attention (`attention`: auto) a
    packed row's attention costs the sum of its sequences' squares, not the row's length squared, so the budget
    trades memory, not speed, on the CPU too (BENCHMARKS.md); the GPU configs raise it to 12288-16384."""
    packing: bool = True
    """Pack sequences by token budget into rows (per-sequence positions, no attention across them): no padding
    at all, and with `attention` auto no T x T mask either (`model/attention.py`). False: padded micro-batches."""
    sort_by_length: bool = True
    """Padded micro-batches only: length-sorted batches of at most micro_batch_tokens (rows x longest), the
    fastest layout on the CPU; False pads `padded_batch_size` sequences in arrival order (the naive baseline)."""
    padded_batch_size: int = Field(4, ge=1)
    logprob_chunk_tokens: int = Field(1024, ge=0)
    """Scored tokens per chunk of the log-prob head (`model/logprob_head.py`): log-probs and entropy come from the
    final hidden states a chunk at a time, recomputed in the backward, so the fp32 logits over the vocabulary exist
    for one chunk only (1024 x 151748 x 4 B = 0.6 GB for the release; unchunked, ~10 GB per copy at 16k scored
    tokens). 1024 keeps the head's peak near 1.2 GB at any micro-batch size (BENCHMARKS.md), while a 1024-row matmul
    with the LM head is still large enough to run at full speed on a GPU. 0: all scored tokens at once (same values,
    a different summation order of the LM head's gradient)."""
    attention: Literal["auto", "sdpa", "varlen"] = "auto"
    """The LLM's attention over packed rows (`model/attention.py`; the vision tower always runs SDPA). auto / varlen:
    no T x T mask for a packed row: on CUDA in bf16/fp16 torch's `varlen_attn` kernel (flash-attention's
    `flash_attn_varlen_func` where torch lacks it), on the CPU (and fp32 on CUDA) causal SDPA per sequence; a padded
    batch runs SDPA with its padding mask. sdpa: torch's SDPA with transformers' dense block-diagonal mask over the
    whole packed row (the old behaviour; (sum of lengths)^2 work per layer)."""
    gradient_checkpointing: bool = False
    bf16: bool = True
    """bf16 autocast on CUDA; the CPU runs fp32 unless cpu_bf16."""
    cpu_bf16: bool = False
    """bf16 autocast on the CPU too, as TRL's GRPOConfig does by default. On CPUs with AVX512-BF16 or AMX the
    update takes ~2/3 of the fp32 time (bench/e2e.py), but its log-probs no longer match an fp32 rollout engine's
    (rl-doctor, TIS weights). Off: fp32."""
    entropy_metric: bool = True
    """Log the policy's mean token entropy (no entropy loss: the paper has none)."""


@dataclass(config=SECTION)
class ClusterConfig:
    """Where the work runs: the Ray cluster, the learner's ranks and the resources of both sides. Ray gives whole
    GPUs to one actor each, so learner ranks and rollout workers get disjoint GPUs unless fractions ask them to share
    (e.g. 0.5 each: one GPU holds the learner and a vLLM engine)."""
    address: Optional[str] = None
    """A running Ray cluster to join (`ray start --head` prints it): a multi-node run is the same command on the
    head node. None: RAY_ADDRESS if set, else Ray starts on this machine."""
    learner: Literal["auto", "local", "sharded"] = "auto"
    """local: the whole model in the trainer's process (1 rank, no GPUs given to it by Ray); sharded: FSDP2 over
    torch.distributed, each rank a Ray actor; auto: sharded when learner_ranks > 1 or learner_gpus_per_rank > 0."""
    learner_ranks: int = Field(1, ge=1)
    """Learner processes (the sharded learner's ranks)."""
    learner_gpus_per_rank: float = Field(0, ge=0)
    learner_cpus_per_rank: float = Field(1, gt=0)
    """Ray CPUs per learner rank (on a machine without GPUs, also its torch threads)."""
    learner_resources: dict[str, float] = Field(default_factory=dict)
    """Ray custom resources each learner rank requests, e.g. {"learner_node": 1} with the nodes started as
    `ray start --resources='{"learner_node": 8}'`: how a run puts its learner on chosen nodes."""
    rollout_resources: dict[str, float] = Field(default_factory=dict)
    """The same for each rollout worker."""

    @model_validator(mode="after")
    def _check(self):
        if self.learner == "local" and (self.learner_ranks > 1 or self.learner_gpus_per_rank > 0):
            raise ValueError(f"cluster.learner=local runs one rank in the trainer's process: it cannot take "
                             f"cluster.learner_ranks={self.learner_ranks} or learner_gpus_per_rank="
                             f"{self.learner_gpus_per_rank} (use sharded or auto)")
        return self

    def sharded(self) -> bool:
        """Whether the learner is the sharded one (Ray actors) rather than the local one."""
        if self.learner != "auto":
            return self.learner == "sharded"
        return self.learner_ranks > 1 or self.learner_gpus_per_rank > 0


@dataclass(config=SECTION)
class SyncConfig:
    """How new weights reach the rollout workers."""
    kind: Literal["auto", "adapter", "merged", "full"] = "auto"
    """auto: the adapter alone for LoRA, merged weights when vision/resampler train too, else full."""
    transport: Literal["auto", "nccl", "gloo", "staging"] = "auto"
    """How full and merged weights travel (`rollouts/transfer.py`). nccl / gloo: in memory through vLLM's
    weight-transfer API, one broadcast group spanning the learner's rank 0 and every engine (each bucket sent once
    to all of them, on any node), gathered from the learner's shards in the engines' dtype; every update is
    verified by per-tensor checksums from every engine (`sync/verified`). nccl: between GPUs (learner and engines
    on GPUs of their own); gloo: the same protocol over CPUs (the CPU suite, or no NCCL path between them). staging:
    safetensors shards written to a folder every engine reads (/dev/shm on one node, else run.dir/.sync), for
    clusters where neither group can form. auto: nccl when the learner ranks and the engines hold whole GPUs of
    their own, else gloo.
    A LoRA adapter (kind adapter) always travels as a small folder."""
    bucket_mb: int = Field(512, ge=1)
    """Full and merged weights travel in buckets of this many MB (a larger tensor alone): one broadcast per bucket
    in memory, one safetensors shard per bucket with staging. The learner's rank 0 holds at most one bucket plus one
    tensor; each engine one received bucket."""
    timeout_s: float = Field(600.0, gt=0)
    """How long the learner and the engines wait for each other in the in-memory transfer (forming the group, a
    bucket): a worker that died mid-transfer fails the sync after at most this long instead of hanging it."""

    def resolved_transport(self, kind: str, gpus: bool) -> str:
        """"adapter" for an adapter sync, else the transport with auto resolved (`gpus`: the learner and the
        engines are on GPUs)."""
        if kind == "adapter":
            return "adapter"
        if self.transport == "auto":
            return "nccl" if gpus else "gloo"
        return self.transport


@dataclass(config=SECTION)
class RunConfig:
    """The run: length, seed, outputs."""
    dir: str = "runs/tiny"
    steps: int = Field(4, ge=1)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    """Seeds Python's, torch's and the engines' generators (each request's seed derives from it), the LoRA
    initialisation and the data order; at most 2**32 - 1, numpy's and most seeding APIs' limit."""
    save_every: int = Field(2, ge=0)
    """Checkpoint every N steps (and at the end); 0 = only at the end."""
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(0, ge=0)
    """Evaluate per mode every N steps on `eval_rows` held-out prompts (0 = off)."""
    eval_rows: int = Field(8, ge=0)
    """Held-out rows (taken out of training) for `eval_every`."""
    eval_modes: list[Mode] = Field(default_factory=lambda: list(FIXED_MODES), min_length=1)
    """The modes each evaluation runs (short | long | auto); keys eval/accuracy/<mode>, eval/tokens/<mode>/mean,
    eval/compliance/<mode>, eval/think_rate/<mode>, ... as rl-eval's summary. Records go to run.dir/eval.jsonl."""
    eval_n: int = Field(1, ge=1)
    """Samples per held-out row and mode."""
    tensorboard: bool = True
    wandb: bool = False
    mlflow: bool = False
    project: Optional[str] = None
    """The W&B project / MLflow experiment (None: theirs by default)."""
    name: Optional[str] = None
    """The run's name in W&B / MLflow (None: run.dir's last folder)."""
    tags: list[str] = Field(default_factory=list)
    """Tags of the run in W&B / MLflow."""
    log_completions_every: int = Field(0, ge=0)
    """Every N steps, a table of sampled completions (prompt, completion, mode, reward and its parts; the first
    `log_completions` samples of the step's groups: those generated for it, dropped ones included; with
    async_mode=fully_async, the groups it trained on): run.dir/completions.jsonl, TensorBoard text, a W&B table.
    0: off."""
    log_completions: int = Field(8, ge=1)
    """Samples per completions table."""
    export: bool = True
    """Write run.dir/export: a standard checkpoint directory (LoRA merged) that vLLM and model/ load."""
    progress: bool = True
    async_mode: Literal["off", "one_step_off", "fully_async"] = "off"
    """off: each step generates, then updates (on-policy; the paper's loop). one_step_off (verl's one-step-off
    pipeline; `run.async` in the issue, a Python keyword): the next step's batch is generated (and scored) on the
    rollout workers while the learner updates on this one, with the weights from before this update, so a sample
    is one policy version old when it is learnt from; the weights sync between steps. The loss then weighs each
    token by the truncated ratio of the learner's log-prob to the engine's (TIS: `algo.tis_cap`, required), and
    `algo.max_staleness` bounds the age. A checkpoint saves the batch in flight, and a resumed run trains on it
    (`rl/loops/one_step_off.py`). fully_async: generation never waits for the learner: a producer thread keeps the
    engines fed group by group (`buffer_groups` ahead of the learner), each step trains on the oldest finished
    groups, and the new weights load into the engines between two of their steps, the running requests kept
    (`rollout.kv_after_update`), so a sample may span policy versions (`rl/loops/fully_async.py`);
    `algo.max_staleness` and `algo.staleness_policy` bound the lag."""
    buffer_groups: Optional[int] = Field(None, ge=1)
    """run.async_mode=fully_async: groups ahead of the learner, at most: running in the engines or finished and
    scored, not yet trained on (a checkpoint lets the running ones finish and saves the finished ones; a resumed run
    trains on them). None: two batches (2 x rollout.prompts_per_step). At least one batch, at most 8."""

    def buffer_size(self, prompts_per_step: int) -> int:
        """`buffer_groups` with None resolved."""
        return self.buffer_groups if self.buffer_groups is not None else 2 * prompts_per_step

    @model_validator(mode="after")
    def _check(self):
        if self.eval_every and not self.eval_rows:
            raise ValueError(f"run.eval_every={self.eval_every} needs run.eval_rows >= 1 held-out rows")
        return self


def _demo_data():
    return DataConfig(path="runs/demo-data/count_shapes.jsonl", demo="count_shapes")


@dataclass(config=SECTION)
class TrainConfig:
    """The whole run (`rl-train`)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=_demo_data)
    """Defaults: the count_shapes demo set, generated on first use."""
    modes: ModeScheduleConfig = field(default_factory=ModeScheduleConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _check(self):
        if self.modes.paired_fraction > 0 and (self.rollout.n < 4 or self.rollout.n % 2):
            raise ValueError(f"modes.paired_fraction={self.modes.paired_fraction} splits a prompt's rollout.n samples "
                             f"into two groups of n/2, each needing 2 for a baseline: rollout.n must be even and at "
                             f"least 4 (got {self.rollout.n})")
        if self.algo.choice_weight is not None and self.modes.auto_fraction == 0 and not self.modes.respect_data_mode:
            raise ValueError("algo.choice_weight weighs the auto-mode choice token, and no prompt can be in auto mode "
                             "(modes.auto_fraction=0, modes.respect_data_mode=false): set modes.auto_fraction > 0")
        if self.modes.schedule == "benefit" and self.modes.paired_fraction == 0:
            raise ValueError("modes.schedule=benefit learns each prompt's benefit from paired groups: set "
                             "modes.paired_fraction > 0 (e.g. 0.25)")
        lora, kind = self.learner.lora, self.sync.kind
        trains_more = self.learner.train_vision or self.learner.train_resampler
        if kind == "adapter" and not lora:
            raise ValueError("sync.kind=adapter needs learner.lora=true (full-weight training syncs kind full)")
        if self.run.async_mode != "fully_async":
            idle = [f"{k}={v}" for k, v, default in (
                ("rollout.kv_after_update", self.rollout.kv_after_update, "keep"),
                ("algo.staleness_policy", self.algo.staleness_policy, "wait"),
                ("run.buffer_groups", self.run.buffer_groups, None)) if v != default]
            if idle:
                raise ValueError(f"{', '.join(idle)} act only with run.async_mode=fully_async (it is "
                                 f"{self.run.async_mode}): set it, or leave them at their defaults")
        if self.run.async_mode != "off":
            mode = self.run.async_mode
            if self.algo.tis_cap is None:
                raise ValueError(f"run.async_mode={mode} learns from samples of older policies: it needs "
                                 "algo.tis_cap (the truncated importance weights against the engine's log-probs)")
            if self.algo.max_staleness < 1:
                raise ValueError(f"run.async_mode={mode} with algo.max_staleness=0 would drop every sample "
                                 "(each is at least one policy version old): use max_staleness >= 1 or "
                                 "async_mode=off")
        if self.rollout.partial_rollouts:
            over = self.algo.dynamic_sampling and self.algo.oversample_factor() > 1
            if not over and self.run.async_mode != "fully_async":
                raise ValueError("rollout.partial_rollouts resumes the groups that over-provisioned dynamic sampling "
                                 "stops once its batch is full, or that a checkpoint or an evaluation pauses in "
                                 "run.async_mode=fully_async, and nothing else stops a request here: set "
                                 "algo.dynamic_sampling=true (algo.oversample > 1, 1.5 by default) or "
                                 "run.async_mode=fully_async, or leave it off")
            if self.algo.tis_cap is None:
                raise ValueError("rollout.partial_rollouts resumes samples drawn partly by an older policy: it needs "
                                 "algo.tis_cap (the truncated importance weights against the engine's log-probs)")
        if self.run.async_mode == "fully_async":
            per_step = self.rollout.prompts_per_step
            if self.run.buffer_groups is not None and not per_step <= self.run.buffer_groups <= 8 * per_step:
                raise ValueError(f"run.buffer_groups={self.run.buffer_groups} must hold one batch and at most 8 "
                                 f"(rollout.prompts_per_step={per_step}; each round out is a call a rollout worker "
                                 f"holds, of its 16): use {per_step} to {8 * per_step}, or leave it unset (two batches)")
            if self.algo.oversample is not None and self.algo.oversample > 1:
                raise ValueError(f"algo.oversample={self.algo.oversample} has nothing to over-provision with "
                                 "run.async_mode=fully_async: its producer keeps drawing prompts while groups are "
                                 "dropped, so leave algo.oversample unset")
        if kind == "adapter" and trains_more:
            raise ValueError("sync.kind=adapter cannot carry the trained vision/resampler weights "
                             "(learner.train_vision / train_resampler): use sync.kind=merged (or auto)")
        if kind == "full" and lora:
            raise ValueError("sync.kind=full is for learner.lora=false; LoRA syncs adapter or merged (or auto)")
        if kind == "merged" and not lora:
            raise ValueError("sync.kind=merged merges LoRA adapters: it needs learner.lora=true (else: full)")
        adapter = kind == "adapter" or (kind == "auto" and lora and not trains_more)
        if adapter and self.sync.transport in ("nccl", "gloo"):
            raise ValueError(f"sync.transport={self.sync.transport} moves full or merged weights; this run syncs a "
                             "LoRA adapter, which travels as a small folder: leave sync.transport=auto (or use "
                             "sync.kind=merged to send merged weights in memory)")
        if self.sync.transport == "nccl" and not self.on_gpus():
            raise ValueError("sync.transport=nccl needs the learner ranks and the rollout engines on GPUs of their "
                             "own (cluster.learner_gpus_per_rank >= 1 and rollout.gpus_per_worker >= 1; NCCL cannot "
                             "join two ranks on one GPU): use gloo or auto")
        if self.learner.total_steps is not None and self.learner.total_steps != self.run.steps:
            raise ValueError(f"learner.total_steps={self.learner.total_steps} disagrees with run.steps="
                             f"{self.run.steps}: the LR schedule counts training steps; leave total_steps unset (it "
                             "is run.steps) or make them equal")
        budget = self.data.max_prompt_tokens
        for mode, sampling in self.rollout.sampling().items() if budget else ():
            if budget + sampling.max_new_tokens > self.rollout.max_model_len:
                raise ValueError(f"data.max_prompt_tokens={budget} + rollout.{mode}.max_new_tokens="
                                 f"{sampling.max_new_tokens} > rollout.max_model_len={self.rollout.max_model_len}: "
                                 "a prompt that passes the data check could still overflow the context")
        return self

    def prompt_token_limit(self) -> int:
        """data.max_prompt_tokens, or unset, what the engine's context leaves for a prompt in every mode:
        rollout.max_model_len less the longest mode's max_new_tokens."""
        if self.data.max_prompt_tokens is not None:
            return self.data.max_prompt_tokens
        return self.rollout.max_model_len - max(s.max_new_tokens for s in self.rollout.sampling().values())

    def run_data(self):
        """The data settings a run loads with: data.* with the prompt-token limit resolved (`prompt_token_limit`)."""
        import dataclasses

        return dataclasses.replace(self.data, max_prompt_tokens=self.prompt_token_limit())

    def in_flight_options(self) -> dict:
        """The rollout workers' options of run.async_mode=fully_async (in-flight weight updates, the KV knob); none
        otherwise, so a backend of one's own (`rollout.backend`) need not know them."""
        if self.run.async_mode != "fully_async":
            return {}
        return {"in_flight_updates": True, "kv_after_update": self.rollout.kv_after_update}

    def on_gpus(self) -> bool:
        """Whether the learner ranks and the rollout engines hold whole GPUs of their own (then weights travel over
        NCCL). A fraction may share a GPU with the other side, where NCCL cannot form a group: gloo then."""
        return self.rollout.gpus_per_worker >= 1 and self.cluster.learner_gpus_per_rank >= 1
