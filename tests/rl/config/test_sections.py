"""The tree's own constraints: ranges, names checked against the registries, combinations of keys."""

import pytest

from rl.algos import LOSS_AGGS, register_loss_agg
from rl.config import AlgoConfig, ConfigError, DataConfig, LearnerConfig, TrainConfig, load


def test_paper_defaults():
    cfg = TrainConfig()
    assert cfg.rollout.n == 8 and cfg.modes.long_fraction == 0.5
    assert cfg.rollout.long.temperature == 1.0 and cfg.rollout.long.max_new_tokens == 8192
    assert cfg.rollout.long.max_new_tokens < cfg.rollout.max_model_len
    assert cfg.algo.kl == "off" and cfg.algo.kl_coef == 0 and cfg.algo.advantage == "grpo"
    assert cfg.learner.lr == 1e-6 and cfg.learner.schedule == "constant"
    assert dict(cfg.reward.combine.weights) == {"acc": 1.0, "format": 1.0, "repetition": 1.0, "reward_model": 0.5}


@pytest.mark.parametrize("override, message", [
    ("algo.advantage=nonsense", r"algo\.advantage: 'nonsense' is not a registered advantage estimator; allowed: "
                                r"dr_grpo, grpo, rloo"),
    ("algo.policy_loss=nonsense", r"algo\.policy_loss: 'nonsense' is not a registered policy loss; allowed: gspo"),
    ("algo.loss_agg=nonsense", r"algo\.loss_agg: 'nonsense' is not a registered loss aggregation; allowed: "
                               r"seq-mean-token-mean"),
    ("algo.kl=k9", r"algo\.kl: 'k9' is not a registered KL estimator; allowed: off, k1, k2, k3"),
    ("algo.std=median", r"algo\.std: Input should be 'sample' or 'population'"),
    ("learner.schedule=linear", r"learner\.schedule: Input should be 'constant' or 'cosine'"),
    ("learner.lr=-1", r"learner\.lr: Input should be greater than 0 \(got -1\)"),
    ("learner.lr=0", r"learner\.lr: Input should be greater than 0"),
    ("algo.clip_high=-0.1", r"algo\.clip_high: Input should be greater than or equal to 0"),
    ("algo.dual_clip_c=0.5", r"algo\.dual_clip_c: Input should be greater than 1"),
    ("rollout.n=1", r"rollout\.n: Input should be greater than or equal to 2"),
    ("rollout.num_workers=0", r"rollout\.num_workers: Input should be greater than or equal to 1"),
    ("modes.long_fraction=-0.1", r"modes\.long_fraction: Input should be greater than or equal to 0"),
    ("run.eval_modes=[short, fast]", r"run\.eval_modes\[1\]: Input should be 'short', 'long' or 'auto'"),
    ("data.on_bad_row=ignore", r"data\.on_bad_row: Input should be 'skip' or 'fail'"),
    ("sync.kind=nccl", r"sync\.kind: Input should be 'auto', 'adapter', 'merged' or 'full'"),
    ("rollout.short.top_p=0", r"rollout\.short\.top_p=0\.0: must be in \(0, 1\]"),
    ("learner.lr=.inf", r"learner\.lr: Input should be a finite number \(got inf\)"),  # nothing trains on these
    ("reward.combine.weights.acc=.inf", r"reward\.combine\.weights\.acc: Input should be a finite number"),
    ("algo.clip_high=.nan", r"algo\.clip_high: Input should be a finite number"),
    ("algo.kl_clamp=.inf", r"algo\.kl_clamp: Input should be a finite number"),
    ("algo.tis_mode=clip", r"algo\.tis_mode: Input should be 'truncate' or 'mask'"),
    ("data.columns={questoin: problem}", r"data\.columns\.questoin: not a field of the row schema; the keys are"),
    ("learner.lora_rank=1024", r"learner\.lora_rank: Input should be less than or equal to 512"),
    ("learner.attention=flash", r"learner\.attention: Input should be 'auto', 'sdpa' or 'varlen'"),
    ("rollout.long.max_new_tokens=20000", r"rollout\.long\.max_new_tokens=20000 leaves no room for the prompt in "
                                          r"rollout\.max_model_len=10240"),
])
def test_bad_values_name_the_key_and_the_allowed_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load(None, [override])


@pytest.mark.parametrize("overrides, message", [
    (["rollout.n=5", "modes.paired_fraction=0.5"], r"modes\.paired_fraction=0\.5 splits .* rollout\.n must be even "
                                                   r"and at least 4 \(got 5\)"),
    (["modes.schedule=benefit"], r"modes\.schedule=benefit learns each prompt's benefit from paired groups: set "
                                 r"modes\.paired_fraction > 0"),
    (["algo.loss_agg=seq-mean-token-sum-norm"], r"algo\.loss_agg=seq-mean-token-sum-norm needs algo\.norm_length"),
    (["algo.kl=k3"], r"algo\.kl=k3 with algo\.kl_coef=0\.0"),
    (["algo.kl_coef=0.1"], r"algo\.kl=off with algo\.kl_coef=0\.1"),
    (["sync.kind=adapter", "learner.lora=false"], r"sync\.kind=adapter needs learner\.lora=true"),
    (["sync.kind=full"], r"sync\.kind=full is for learner\.lora=false"),
    (["sync.kind=merged", "learner.lora=false"], r"sync\.kind=merged merges LoRA adapters"),
    (["sync.kind=adapter", "learner.train_vision=true"], r"use sync\.kind=merged"),
    (["run.eval_every=2", "run.eval_rows=0"], r"run\.eval_every=2 needs run\.eval_rows >= 1"),
    (["data.default_reward=prob", "data.allowed_rewards=[math]"], r"data\.default_reward='prob': not one of"),
    (["data.max_prompt_tokens=4000"], r"data\.max_prompt_tokens=4000 \+ rollout\.long\.max_new_tokens=8192 > "
                                      r"rollout\.max_model_len=10240"),
    (["cluster.learner=local", "cluster.learner_ranks=2"], r"cluster\.learner=local runs one rank"),
    (["algo.clip_high=0.28"], r"algo\.clip_high=0\.28 cannot act with one update per batch"),
    (["algo.dual_clip_c=3"], r"algo\.dual_clip_c=3\.0 cannot act with one update per batch"),
])
def test_combinations(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(None, overrides)


def test_the_good_combinations_load():
    assert load(None, ["algo.loss_agg=seq-mean-token-sum-norm", "algo.norm_length=4096"]).algo.norm_length == 4096
    assert load(None, ["algo.kl=k3", "algo.kl_coef=0.01"]).algo.kl == "k3"
    sharded_full_kl = ["cluster.learner_ranks=2", "learner.lora=false", "algo.kl=k3", "algo.kl_coef=0.1"]
    assert load(None, sharded_full_kl).algo.kl == "k3"  # the sharded learner builds a sharded reference
    assert load(None, ["learner.train_vision=true", "sync.kind=merged"]).sync.kind == "merged"
    assert load(None, ["algo.clip_high=0.28", "algo.ppo_epochs=2"]).algo.clip_high == 0.28


def test_a_name_registered_by_the_user_is_accepted():
    @register_loss_agg("test-sum-of-everything")
    def everything(loss_mat, mask, *, num_tokens=None, num_seqs=None, norm_length=None):
        return (loss_mat * mask).sum()

    try:
        assert AlgoConfig(loss_agg="test-sum-of-everything").loss_agg == "test-sum-of-everything"
    finally:
        del LOSS_AGGS["test-sum-of-everything"]
    with pytest.raises(ValueError, match="not a registered loss aggregation"):
        AlgoConfig(loss_agg="test-sum-of-everything")


def test_sections_check_in_python_too():
    with pytest.raises(ValueError, match="lr"):
        LearnerConfig(lr=-1.0)
    with pytest.raises(ValueError, match="data.path: no data file given"):
        DataConfig()
    cfg = LearnerConfig()
    with pytest.raises(ValueError, match="lr"):
        cfg.lr = -1.0  # assignments are checked as well


def test_rollout_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert load(None, []).rollout.cpus() == 16  # a lone CPU worker gets every core
    assert load(None, ["rollout.num_workers=3"]).rollout.cpus() == 5
    assert load(None, ["rollout.gpus_per_worker=1"]).rollout.cpus() == 1
    assert load(None, ["rollout.cpus_per_worker=4"]).rollout.cpus() == 4


def test_field_docs_are_the_descriptions():
    fields = LearnerConfig.__pydantic_fields__
    assert fields["lr"].description.startswith("Paper: constant 1e-6")
    undocumented = [name for cls in (AlgoConfig, LearnerConfig) for name, f in cls.__pydantic_fields__.items()
                    if not f.description and name not in ("lora_rank", "lora_alpha", "lora_dropout", "weight_decay",
                                                           "betas", "warmup_steps", "total_steps", "max_grad_norm",
                                                           "padded_batch_size", "gradient_checkpointing",
                                                           "clip_low", "kl_coef")]
    assert not undocumented


def test_the_column_keys_are_the_row_schemas_fields():
    from rl.config.sections import COLUMN_FIELDS
    from rl.data.external import SHAPED
    from rl.data.schema import FIELDS

    assert set(COLUMN_FIELDS) == set(FIELDS) | SHAPED


def test_the_config_imports_and_loads_without_torch():
    """A launcher or a login node writes and checks configs with no torch, transformers, vLLM or Ray installed
    (a finder that refuses them stands in for their absence); the algo names are checked where torch is."""
    import subprocess
    import sys

    script = """
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'vllm', 'ray', 'peft', 'PIL'):
            raise ImportError('not installed: ' + name)
sys.meta_path.insert(0, Absent())
import rl.config
cfg = rl.config.load('configs/tiny_cpu.yaml', ['data.columns.question=problem', 'rollout.n=4'])
assert cfg.rollout.n == 4 and cfg.algo.kl == 'off'
rl.config.dump(cfg)
print('ok')
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_configs_kl_off_is_the_algos():
    from rl.algos import KL_OFF
    from rl.config.sections import KL_OFF as CONFIG_KL_OFF

    assert CONFIG_KL_OFF == KL_OFF == AlgoConfig().kl
