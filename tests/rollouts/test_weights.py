"""Full weights through Ray's object store: packed by the pool, unpacked by a worker, unchanged."""

import torch

from rollouts.weights import from_shared, to_shared


def test_shared_weights_round_trip_unchanged():
    weights = [("a.weight", torch.randn(3, 4)), ("b.bias", torch.randn(5).to(torch.bfloat16))]
    packed = to_shared(weights)
    assert [(name, dtype) for name, dtype, _ in packed] == [("a.weight", "float32"), ("b.bias", "bfloat16")]
    back = list(from_shared(packed))
    assert [name for name, _ in back] == ["a.weight", "b.bias"]
    for (_, ours), (_, theirs) in zip(back, weights):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
