"""Scoring rollouts with the combined reward (hand-built results, a real one-worker sandbox), and the metric rows."""

import pytest

from rewards import CombineConfig, RewardRunner, RunnerConfig, SandboxConfig
from rl.metrics import mode_metrics
from rl.scoring import metric_rows, score_results
from rollouts.types import RolloutRequest, RolloutResult, RolloutSample

# acc (the row's verifier), format at half weight, and DAPO's overlong penalty on tiny budgets, so that the token
# count scoring passes (len(completion_token_ids)) decides the penalty: long ramps over 9..12 tokens, short over 5..6.
CONFIG = dict(parts={"acc": "acc", "format": "format", "overlong": "overlong"},
              weights={"acc": 1.0, "format": 0.5, "overlong": 1.0}, group_normalize=(),
              part_options={"overlong": {"max_tokens": {"long": 12, "short": 6},
                                         "buffer_tokens": {"long": 4, "short": 2}}})


@pytest.fixture(scope="module")
def runner():
    with RewardRunner(RunnerConfig(sandbox=SandboxConfig(workers=1, timeout_s=20.0, memory_mb=2048))) as r:
        yield r


def sample(text: str, tokens: int, mode: str, truncated: bool = False, index: int = 0) -> RolloutSample:
    return RolloutSample(request_id="r", index=index, mode=mode, prompt_token_ids=[1, 2, 3],
                         completion_token_ids=list(range(100, 100 + tokens)), logprobs=[-0.5] * tokens, text=text,
                         answer=text.rpartition("</think>")[2], finish_reason="length" if truncated else "stop",
                         truncated=truncated, policy_version=0)


def result(samples: list[RolloutSample], answer=None, mode: str = "long", error: str | None = None,
           **meta) -> RolloutResult:
    for i, s in enumerate(samples):
        s.index = i
    request = RolloutRequest(request_id="r", messages=[], mode=mode, n=max(1, len(samples)),
                             meta={"answer": answer, **meta})
    return RolloutResult(request=request, samples=samples, error=error)


def math_long():
    """Three long samples of `4`: right, wrong and near the budget, truncated without `</think>`."""
    return result([sample("Add them.</think>\n\nThe answer is \\boxed{4}.", 5, "long"),   # 1 + 0.5 + 0
                   sample("Add them.</think>\n\n\\boxed{5}", 10, "long"),                 # 0 + 0.5 - 0.5
                   sample("Add them and \\boxed{4}", 13, "long", truncated=True)],       # 0 + 0 - 1
                  answer="4", id="m")


def exact_short():
    return result([sample("paris", 3, "short"), sample("Lyon", 6, "short")],  # 1 + 0.5 + 0; 0 + 0.5 - 1
                  answer="Paris", mode="short", reward="exact", id="e")


def totals_of(scored):
    return [totals for _, totals, _ in scored]


def test_totals_match_hand_computed_values(runner):
    results = [math_long(), exact_short(),
               result([sample("B", 2, "short")], answer="dog", mode="short", reward="choice",
                      reward_meta={"options": ["cat", "dog"]}),  # the row's meta reaches the verifier: 1 + 0.5
               result([sample("4.0", 2, "short")], answer="4", mode="short")]  # no verifier named: the default
    scored = score_results(results, runner, CombineConfig(**CONFIG), default_reward="number")
    assert all(r is given for (r, _, _), given in zip(scored, results, strict=True))
    assert totals_of(scored) == [pytest.approx([1.5, 0.0, -1.0]), pytest.approx([1.5, -0.5]), [1.5], [1.5]]
    assert scored[0][2] == [{"acc": 1.0, "format": 1.0, "overlong": 0.0},
                            {"acc": 0.0, "format": 1.0, "overlong": pytest.approx(-0.5)},
                            {"acc": 0.0, "format": 0.0, "overlong": -1.0}]
    assert scored[1][2] == [{"acc": 1.0, "format": 1.0, "overlong": 0.0}, {"acc": 0.0, "format": 1.0, "overlong": -1.0}]

    # default_reward is used only where the request names no verifier: exact says "4.0" is not "4"
    again = score_results(results, runner, CombineConfig(**CONFIG), default_reward="exact")
    assert totals_of(again)[3] == [0.5] and totals_of(again)[:3] == totals_of(scored)[:3]


def test_the_samples_of_one_result_form_one_group(runner):
    config = CombineConfig(**{**CONFIG, "group_normalize": ("overlong",), "weights": {"acc": 0.0, "format": 0.0,
                                                                                      "overlong": 1.0}})
    one = result([sample("a</think>b", 8, "long"), sample("a</think>b", 10, "long")], answer="4")   # 0, -0.5
    two = result([sample("a</think>b", 11, "long"), sample("a</think>b", 13, "long")], answer="4")  # -0.75, -1
    scored = score_results([one, two], runner, config, default_reward="math")
    # z within each result: [+1, -1] twice; one group over all four would give [1.52, 0.17, -0.51, -1.18]
    assert totals_of(scored) == [pytest.approx([1.0, -1.0]), pytest.approx([1.0, -1.0])]
    assert [p["overlong"] for p in scored[1][2]] == pytest.approx([-0.75, -1.0])  # parts stay raw


def test_a_failed_request_gets_no_scores_and_the_others_keep_theirs(runner):
    config = CombineConfig(**CONFIG)
    failed = result([], answer="4", error="worker 1 died")
    alone = score_results([math_long(), exact_short()], runner, config, default_reward="math")
    scored = score_results([math_long(), failed, exact_short()], runner, config, default_reward="math")
    assert scored[1] == (failed, [], [])
    assert totals_of(scored) == [totals_of(alone)[0], [], totals_of(alone)[1]]
    assert [parts for _, _, parts in scored] == [alone[0][2], [], alone[1][2]]
    assert score_results([failed], runner, config, default_reward="math") == [(failed, [], [])]
    assert score_results([], runner, config, default_reward="math") == []


@pytest.mark.parametrize("policy", ["propagate", "zero"])
def test_a_none_part_propagates_or_counts_as_zero(runner, policy):
    no_reference = result([sample("Add.</think>\n\n\\boxed{4}", 5, "long"), sample("Add.</think>\n\n", 10, "long")])
    scored = score_results([no_reference, exact_short()], runner, CombineConfig(**CONFIG, none_policy=policy),
                           default_reward="math")
    assert [p["acc"] for p in scored[0][2]] == [None, None]  # math cannot score without a reference
    assert [p["format"] for p in scored[0][2]] == [1.0, 0.0]  # an empty answer is malformed
    if policy == "propagate":
        assert totals_of(scored)[0] == [None, None]
    else:
        assert totals_of(scored)[0] == pytest.approx([0.5, -0.5])
    assert totals_of(scored)[1] == pytest.approx([1.5, -0.5])  # the other result is not touched


def test_metric_rows_feed_mode_metrics(runner):
    no_reference = result([sample("Add.</think>\n\n\\boxed{4}", 5, "long")])
    failed = result([], answer="4", error="timeout")
    scored = score_results([math_long(), failed, exact_short(), no_reference], runner, CombineConfig(**CONFIG),
                           default_reward="math")
    rows = metric_rows(scored)
    assert all(r.pop("prompt_tokens") == 3 and r.pop("group") == "r" and r.pop("source") is None for r in rows)
    assert [r.pop("thinks") for r in rows] == [True, True, True, False, False, True]  # long mode reasons first
    assert rows == [
        {"mode": "long", "reward": pytest.approx(1.5), "parts": {"acc": 1.0, "format": 1.0, "overlong": 0.0},
         "tokens": 5, "truncated": False},
        {"mode": "long", "reward": pytest.approx(0.0), "parts": {"acc": 0.0, "format": 1.0, "overlong": -0.5},
         "tokens": 10, "truncated": False},
        {"mode": "long", "reward": pytest.approx(-1.0), "parts": {"acc": 0.0, "format": 0.0, "overlong": -1.0},
         "tokens": 13, "truncated": True},
        {"mode": "short", "reward": pytest.approx(1.5), "parts": {"acc": 1.0, "format": 1.0, "overlong": 0.0},
         "tokens": 3, "truncated": False},
        {"mode": "short", "reward": pytest.approx(-0.5), "parts": {"acc": 0.0, "format": 1.0, "overlong": -1.0},
         "tokens": 6, "truncated": False},
        {"mode": "long", "reward": None, "parts": {"acc": None, "format": 1.0, "overlong": 0.0},
         "tokens": 5, "truncated": False},
    ]
    m = mode_metrics(rows)
    assert m["reward/mean"] == pytest.approx((1.5 + 0.0 - 1.0 + 1.5 - 0.5) / 5)
    assert m["mode/long_share"] == pytest.approx(4 / 6)
    assert m["reward/long/mean"] == pytest.approx(0.5 / 3) and m["reward/short/mean"] == pytest.approx(0.5)
    assert m["accuracy/long"] == pytest.approx(1 / 4) and m["accuracy/short"] == pytest.approx(1 / 2)
    assert m["format/long"] == pytest.approx(3 / 4) and m["format/short"] == 1.0
    assert m["reward/long/overlong"] == pytest.approx(-1.5 / 4) and m["reward/long/acc"] == pytest.approx(1 / 3)
    assert m["tokens/long/mean"] == pytest.approx(33 / 4) and m["tokens/short/mean"] == pytest.approx(4.5)
    assert m["truncation/long"] == pytest.approx(1 / 4) and m["truncation/short"] == 0.0
    assert m["reward/min"] == -1.0 and m["reward/max"] == 1.5 and m["reward/short/std"] == pytest.approx(1.0)
    assert m["tokens/long/min"] == 5 and m["tokens/long/max"] == 13 and "tokens/prompt/mean" not in m
    assert m["unscored/long"] == pytest.approx(1 / 4) and m["unscored/short"] == 0.0


def test_trl_and_verl_metrics_spread_zero_std_groups_prompt_lengths_and_sources():
    def row(group, reward, source, acc, tokens=4, prompt=10):
        return {"mode": "short", "reward": reward, "parts": {"acc": acc}, "tokens": tokens, "truncated": False,
                "prompt_tokens": prompt, "group": group, "source": source}

    rows = [row("a", 1.0, "geo.jsonl", 1.0), row("a", 1.0, "geo.jsonl", 1.0),  # no spread
            row("b", 0.0, "sci.jsonl", 0.0, prompt=30), row("b", 1.0, "sci.jsonl", 1.0, tokens=8),
            row("c", None, "sci.jsonl", None)]  # unscored: not a group with scores
    m = mode_metrics(rows)
    assert m["frac_reward_zero_std"] == 0.5  # a of {a, b}
    assert m["accuracy/source/geo.jsonl"] == 1.0 and m["accuracy/source/sci.jsonl"] == pytest.approx(1 / 3)
    assert m["tokens/prompt/mean"] == pytest.approx(14.0) and m["tokens/prompt/max"] == 30
    assert m["reward/std"] == pytest.approx(0.4330127) and m["tokens/short/max"] == 8
