from pathlib import Path

import pytest

from rl.config import ConfigError, TrainConfig, load, save, to_dict

CONFIGS = sorted((Path(__file__).parents[3] / "configs").glob("*.yaml"))


def test_configs_found():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_loads(path):
    cfg = load(path)
    assert isinstance(cfg, TrainConfig) and cfg.rollout.n >= 2 and cfg.run.steps >= 1


def test_overrides_and_errors_name_the_key(tmp_path):
    cfg = load(CONFIGS[0], ["learner.lr=3e-4", "rollout.short.max_new_tokens=7", "run.dir=x"])
    assert cfg.learner.lr == 3e-4 and cfg.rollout.short.max_new_tokens == 7 and cfg.run.dir == "x"
    with pytest.raises(ConfigError, match=r"learner\.lr: Input should be a valid number.*'fast'"):
        load(None, ["learner.lr=fast"])
    with pytest.raises(ConfigError, match=r"rollout\.nn: unknown key \(known here: auto, backend, cpus_per_worker"):
        load(None, ["rollout.nn=3"])
    with pytest.raises(ConfigError, match=r"modes\.long_fraction: Input should be less than or equal to 1"):
        load(None, ["modes.long_fraction=2"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: learner: expected a mapping"):
        load(bad)
    with pytest.raises(ConfigError, match=r"override 'run.dir': expected key=value"):
        load(None, ["run.dir"])
    with pytest.raises(ConfigError, match=r"missing.yaml: config file not found"):
        load(tmp_path / "missing.yaml")


def test_every_problem_is_listed_once():
    with pytest.raises(ConfigError) as err:
        load(None, ["learner.lr=-1", "rollout.n=0"])
    lines = str(err.value).splitlines()
    assert any("learner.lr: Input should be greater than 0 (got -1)" in line for line in lines)
    assert any("rollout.n: Input should be greater than or equal to 2 (got 0)" in line for line in lines)


def test_a_key_in_the_wrong_section_points_to_the_right_one():
    with pytest.raises(ConfigError, match=r"learner\.loss_agg: unknown key; did you mean algo\.loss_agg\?"):
        load(None, ["learner.loss_agg=token-mean"])


def test_saved_config_round_trips(tmp_path):
    cfg = load(CONFIGS[0], ["learner.betas=[0.9, 0.95]", "algo.clip_high=0.28", "algo.mini_batches=2"])
    save(cfg, tmp_path / "c.yaml")
    again = load(tmp_path / "c.yaml")
    assert to_dict(again) == to_dict(cfg) and again.learner.betas == (0.9, 0.95)


def test_yaml_1_2_scalars(tmp_path):
    """YAML 1.1 reads `1e-4` as a string; a reward part's options are a free mapping that nothing converts."""
    path = tmp_path / "c.yaml"
    path.write_text("reward:\n  combine:\n    part_options: {acc: {options: {math: {rel_tol: 1e-4}}}}\n")
    assert load(path).reward.combine.part_options["acc"]["options"]["math"]["rel_tol"] == 1e-4
    cfg = load(None, ["reward.combine.part_options.acc.options.math.rel_tol=2e-3", "learner.lr=1e-6"])
    assert cfg.reward.combine.part_options["acc"]["options"]["math"]["rel_tol"] == 2e-3
    assert cfg.learner.lr == 1e-6
    assert load(None, ["run.dir='1e-4'"]).run.dir == "1e-4"  # quoted: still a string
    assert load(None, ["algo.kl=off", "run.async_mode=off"]).algo.kl == "off"  # YAML 1.1 would read False
    with pytest.raises(ConfigError, match="run.tensorboard: Input should be a valid boolean"):
        load(None, ["run.tensorboard=maybe"])


def test_a_config_whose_aliases_expand_without_bound_is_refused(tmp_path):
    """The "billion laughs": nine levels of nine aliases each are a few hundred bytes and 10^9 values expanded."""
    import pytest

    from rl.config import ConfigError, load

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"laughs\.yaml: not valid YAML \(expands to more than 100,000 values"):
        load(path)
    shared = tmp_path / "anchors.yaml"  # an anchor used a few times is fine
    shared.write_text("rollout:\n  short: &s {temperature: 0.8, max_new_tokens: 256}\n  auto: *s\n")
    cfg = load(shared)
    assert cfg.rollout.auto.temperature == cfg.rollout.short.temperature == 0.8
