"""The contract: splitting completions by mode, the registry and how rewards are resolved."""

import importlib.metadata
import math
import os

import pytest

import core.modes
import rewards
from rewards import api
from rewards.api import RewardInput, check_score, get_reward, register_reward

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGINS = os.path.join(HERE, "plugins_for_tests.py")


def test_modes_and_think_tags_are_reexported_for_plugins():
    """Plugins import these from rewards (split_completion is tested in tests/core/test_modes.py)."""
    assert rewards.split_completion is api.split_completion is core.modes.split_completion
    assert (api.MODES, api.THINK_OPEN, api.THINK_CLOSE) == (core.modes.MODES, "<think>", "</think>")


def test_reward_input_make_and_resolved_mode():
    s = RewardInput.make("think</think>\n\n42", "42", "auto", {"k": 1})
    assert s.answer_text == "\n\n42" and s.thinking == "think" and s.meta == {"k": 1}
    assert s.resolved_mode == "long"
    assert RewardInput.make("42").resolved_mode == "short"
    assert RewardInput.make("42", mode="long").resolved_mode == "long"


def test_builtins_are_registered():
    names = set(api.builtin_names())
    assert {"math", "choice", "number", "exact", "regex", "format", "repetition", "overlong", "prob",
            "reward_model", "acc"} <= names


def test_get_reward_builtin_with_config_options():
    plain = get_reward("number")
    loose = get_reward("number", rel_tol=0.1)
    s = RewardInput.make("The answer is 105", "100")
    assert plain.fn(s) == 0.0 and loose.fn(s) == 1.0
    assert plain.sandbox and not plain.batched and not plain.is_async and plain.source == "number"
    with pytest.raises(TypeError):
        get_reward("number", no_such_option=1)


def test_get_reward_flags_of_builtins():
    assert get_reward("reward_model").batched and not get_reward("reward_model").sandbox
    assert not get_reward("prob").sandbox


def test_get_reward_file_path_and_module_path(monkeypatch):
    by_file = get_reward(f"{PLUGINS}:with_option", bonus=0.5)
    assert by_file.fn(RewardInput.make("3", "3")) == 1.5
    assert by_file.source == f"{PLUGINS}:with_option"
    monkeypatch.syspath_prepend(HERE)
    by_module = get_reward("plugins_for_tests:good")
    assert by_module.fn(RewardInput.make("3", "3")) == 1.0
    assert get_reward(f"{PLUGINS}:batched_len").batched
    assert get_reward(f"{PLUGINS}:async_ok").is_async
    assert get_reward(f"{PLUGINS}:Scaled", scale=2.0).fn(RewardInput.make("abc")) == 6.0


def test_get_reward_relative_file_path_is_made_absolute(monkeypatch):
    monkeypatch.chdir(HERE)
    reward = get_reward("plugins_for_tests.py:good")
    assert reward.source == f"{PLUGINS}:good"


def test_get_reward_entry_point(monkeypatch):
    ep = importlib.metadata.EntryPoint(name="my_ep_reward", value="rewards.text:exact_reward",
                                       group=api.ENTRY_POINT_GROUP)

    def fake_entry_points(group=None, **kw):
        return [ep] if group == api.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(api.importlib.metadata, "entry_points", fake_entry_points)
    reward = get_reward("my_ep_reward")
    assert reward.fn(RewardInput.make("Paris", "paris")) == 1.0


def test_get_reward_unknown_names_are_clear():
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        get_reward("nope")
    with pytest.raises(ValueError, match="not found"):
        get_reward("no/such/file.py:fn")
    with pytest.raises(AttributeError):
        get_reward(f"{PLUGINS}:missing_function")


def test_get_reward_callable_and_decorator():
    @register_reward(batched=True)
    def many(samples):
        return [1.0 for _ in samples]

    reward = get_reward(many)
    assert reward.batched and reward.source is None
    assert get_reward(lambda s: 1.0).fn(None) == 1.0


def test_register_reward_refuses_a_clash():
    with pytest.raises(ValueError, match="already registered"):
        register_reward("math")(lambda s: 0.0)


def test_check_score():
    assert check_score(None) is None
    assert check_score(True) == 1.0
    assert check_score(3) == 3.0
    import numpy as np
    import torch

    assert check_score(np.float32(0.5)) == 0.5
    assert check_score(torch.tensor(0.25)) == 0.25
    for bad in ("1.0", [1.0], {"score": 1}):
        with pytest.raises(TypeError):
            check_score(bad)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="non-finite"):
            check_score(bad)


def even_reference(answer, meta):
    """The reference check of `even_for_tests`: an even whole number."""
    return None if str(answer).isdigit() and int(answer) % 2 == 0 else f"{answer!r} is not even"


@register_reward("even_for_tests", check_reference=even_reference)
def even_for_tests(sample):
    return 1.0 if sample.answer_text.strip() == sample.reference else 0.0


def test_check_reference_uses_the_plugins_own_check_in_the_data_schema(tmp_path):
    from rewards import check_reference
    from rl.data.schema import RowError, SchemaOptions, parse_row

    assert get_reward("even_for_tests").check_reference is even_reference
    assert check_reference("even_for_tests", "4") is None
    assert check_reference("even_for_tests", "3") == "'3' is not even"
    assert check_reference(f"{PLUGINS}:good", ["a", "b"]) == (
        f"a list of answers is only for reward 'exact', not '{PLUGINS}:good'")  # declares none: one answer
    options = SchemaOptions(allowed_rewards=("even_for_tests",))
    row = {"question": "Half of 8 times 2?", "answer": 8, "reward": "even_for_tests"}
    assert parse_row(row, "d.jsonl", 1, tmp_path, options).answer == "8"
    with pytest.raises(RowError) as info:
        parse_row(dict(row, answer=7), "d.jsonl", 3, tmp_path, options)
    assert (info.value.source, info.value.row, info.value.field) == ("d.jsonl", 3, "answer")
    assert str(info.value) == "d.jsonl: row 3: field 'answer': '7' is not even"
