from pathlib import Path

import pytest

from rl.config import ConfigError, load, save, to_dict
from rl.run_config import TrainConfig

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads(path):
    cfg = load(TrainConfig, path)
    assert cfg.rollout.n >= 1 and cfg.run.steps >= 1


def test_paper_defaults():
    cfg = TrainConfig()
    assert cfg.rollout.n == 8 and cfg.modes.long_fraction == 0.5
    assert cfg.rollout.long.temperature == 1.0 and cfg.rollout.long.max_new_tokens == 8192
    assert cfg.learner.kl == "off" and cfg.learner.lr == 1e-6 and cfg.learner.schedule == "constant"
    assert dict(cfg.reward.combine.weights) == {"acc": 1.0, "format": 1.0, "repetition": 1.0, "reward_model": 0.5}


def test_overrides_and_errors_name_the_key(tmp_path):
    cfg = load(TrainConfig, CONFIGS[0], ["learner.lr=3e-4", "rollout.short.max_new_tokens=7", "run.dir=x"])
    assert cfg.learner.lr == 3e-4 and cfg.rollout.short.max_new_tokens == 7 and cfg.run.dir == "x"
    with pytest.raises(ConfigError, match=r"learner\.lr: expected a number, got 'fast'"):
        load(TrainConfig, None, ["learner.lr=fast"])
    with pytest.raises(ConfigError, match=r"rollout\.nn: unknown key"):
        load(TrainConfig, None, ["rollout.nn=3"])
    with pytest.raises(ConfigError, match=r"modes: long_fraction=2"):
        load(TrainConfig, None, ["modes.long_fraction=2"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: learner: expected a mapping"):
        load(TrainConfig, bad)


def test_saved_config_round_trips(tmp_path):
    cfg = load(TrainConfig, CONFIGS[0], ["learner.betas=[0.9, 0.95]"])
    save(cfg, tmp_path / "c.yaml")
    again = load(TrainConfig, tmp_path / "c.yaml")
    assert to_dict(again) == to_dict(cfg)


def test_rollout_cores_and_eval_settings(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert load(TrainConfig, None, []).rollout_cpus() == 16  # a lone CPU worker gets every core
    assert load(TrainConfig, None, ["rollout.num_workers=3"]).rollout_cpus() == 5
    assert load(TrainConfig, None, ["rollout.gpus_per_worker=1"]).rollout_cpus() == 1
    assert load(TrainConfig, None, ["rollout.cpus_per_worker=4"]).rollout_cpus() == 4
    with pytest.raises(ConfigError, match=r"rollout: rollout.num_workers must be >= 1"):
        load(TrainConfig, None, ["rollout.num_workers=0"])
    with pytest.raises(ConfigError, match=r"run.eval_modes=\['short', 'fast'\]"):
        load(TrainConfig, None, ["run.eval_modes=[short, fast]"])
