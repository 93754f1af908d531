import pytest

from rollouts.pool import longest_first
from rollouts.types import RolloutRequest, SamplingConfig


def test_request_and_sampling_checks():
    with pytest.raises(ValueError, match="n=0"):
        RolloutRequest("r", [], n=0).check()
    with pytest.raises(ValueError, match="mode='fast'"):
        RolloutRequest("r", [], mode="fast").check()
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0).validate()
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingConfig(max_new_tokens=0).validate()


def test_longest_first_balances_by_hand():
    # costs 8, 7, 6, 5, 4 on two idle workers: 8->w0, 7->w1, 6->w1 (7<8), 5->w0 (8<13), 4->w0 (13=13: lowest)
    assert longest_first([8, 7, 6, 5, 4], [0, 0]) == [0, 1, 1, 0, 0]
    # a worker that already has queued work gets the next item later
    assert longest_first([3, 3], [10, 0]) == [1, 1]
    # four long groups and four short ones on two workers: two long groups each
    owners = longest_first([800] * 4 + [50] * 4, [0, 0])
    assert sorted(owners[:4]) == [0, 0, 1, 1]
