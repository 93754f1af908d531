"""The in-memory weight transfer's wire (rollouts/transfer.py): buckets, checksums, a real gloo group of one sender
and several receivers, and the verification that names the engine and the tensor."""

import threading

import pytest
import torch

from rollouts.transfer import (Group, Member, PoolClient, TensorMeta, WeightSyncError, checksum, free_port_socket,
                               plan_buckets, receive_buckets, send_buckets, update_info, verify)


def tensors():
    g = torch.Generator().manual_seed(0)
    return [("a.weight", torch.randn(64, 32, generator=g)), ("b.bf16", torch.randn(300, generator=g).bfloat16()),
            ("c.ids", torch.arange(7)), ("d.mask", torch.tensor([True, False, True])),
            ("e.scalar", torch.tensor(2.5)), ("f.empty", torch.zeros(0, 4)),
            ("g.big", torch.randn(40, 40, generator=g)), ("h.half", torch.randn(5, generator=g).half())]


def metas(pairs):
    return [TensorMeta(n, str(t.dtype).removeprefix("torch."), list(t.shape)) for n, t in pairs]


def test_buckets_close_before_the_size_is_passed_and_a_large_tensor_travels_alone():
    assert plan_buckets([3, 3, 3, 10, 1], 6) == [[0, 1], [2], [3], [4]]
    assert plan_buckets([1, 1, 1], 100) == [[0, 1, 2]]
    assert plan_buckets([], 5) == []


def test_checksums_see_a_changed_word_a_swap_and_a_truncation_and_agree_on_equal_bytes():
    t = torch.randn(1000)
    assert checksum(t) == checksum(t.clone()) == checksum(t.reshape(10, 100).t().contiguous().t())
    changed = t.clone()
    changed[500] += 1e-3
    swapped = t.clone()
    swapped[[2, 3]] = swapped[[3, 2]]
    assert len({checksum(t), checksum(changed), checksum(swapped), checksum(t[:-1]), checksum(torch.zeros(1000))}) == 5
    assert checksum(torch.zeros(0)) != checksum(torch.zeros(1))
    assert checksum(torch.randn(1001).bfloat16()) >= 0  # odd byte counts, non-32-bit dtypes
    big = torch.randn(3 << 20)
    assert checksum(big, chunk=1 << 16) == checksum(big)  # chunking changes nothing


class Recorder:
    """A group that records what it is asked to broadcast."""
    device = torch.device("cpu")

    def __init__(self):
        self.sent = []

    def broadcast(self, tensor):
        self.sent.append(tensor.clone())


def test_the_sender_packs_buckets_and_refuses_a_source_that_disagrees_with_its_metadata():
    pairs = tensors()
    group = Recorder()
    sums = send_buckets(group, iter(pairs), metas(pairs), bucket_bytes=4096)
    sizes = [m.span for m in metas(pairs)]
    assert all(size % 16 == 0 and size >= m.nbytes for size, m in zip(sizes, metas(pairs)))
    assert [t.numel() for t in group.sent] == [sum(sizes[i] for i in b) for b in plan_buckets(sizes, 4096)]
    assert sums == [checksum(t) for _, t in pairs]
    wrong = metas(pairs)
    wrong[1].dtype = "float32"
    with pytest.raises(ValueError, match="b.bf16"):
        send_buckets(Recorder(), iter(pairs), wrong, 4096)
    with pytest.raises(ValueError, match="ended after 2 of 8 tensors.*c.ids"):
        send_buckets(Recorder(), iter(pairs[:2]), metas(pairs), 4096)
    with pytest.raises(ValueError, match="more than the 7 tensors.*h.half"):
        send_buckets(Recorder(), iter(pairs), metas(pairs)[:7], 4096)


def test_one_broadcast_reaches_every_receiver_of_a_gloo_group():
    pairs = tensors()
    info = update_info(metas(pairs))
    sock = free_port_socket()
    port = sock.getsockname()[1]
    got: dict[int, tuple[list, list]] = {}

    def receiver(rank):
        group = Group("gloo", "127.0.0.1", port, rank, 3, timeout_s=60)
        loaded = []
        sums = receive_buckets(group, metas(pairs), 1000, lambda ps: loaded.extend((n, t.clone()) for n, t in ps))
        got[rank] = (loaded, sums)
        group.close()

    threads = [threading.Thread(target=receiver, args=(r,)) for r in (1, 2)]
    for t in threads:
        t.start()
    sender = Group("gloo", "127.0.0.1", port, 0, 3, timeout_s=60, listen_socket=sock)
    sent = send_buckets(sender, iter(pairs), metas(pairs), 1000)
    for t in threads:
        t.join(60)
    sender.close()
    assert info["names"] == [n for n, _ in pairs]
    for rank in (1, 2):
        loaded, sums = got[rank]
        assert sums == sent
        assert [n for n, _ in loaded] == [n for n, _ in pairs]
        for (_, ours), (_, theirs) in zip(loaded, pairs):
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and torch.equal(ours, theirs)
    verify(info["names"], sent, [("rollout worker 0", {"names": info["names"], "checksums": got[1][1]}),
                                 ("rollout worker 1", {"names": info["names"], "checksums": got[2][1]})])


def test_verification_names_the_worker_and_the_tensor():
    names, sums = ["x", "y", "z"], [1, 2, 3]
    verify(names, sums, [("rollout worker 0", {"names": names, "checksums": [1, 2, 3]})])
    with pytest.raises(WeightSyncError, match="rollout worker 1: tensor 'y' arrived with checksum 5"):
        verify(names, sums, [("rollout worker 0", {"names": names, "checksums": [1, 2, 3]}),
                             ("rollout worker 1", {"names": names, "checksums": [1, 5, 3]})])
    with pytest.raises(WeightSyncError, match="rollout worker 2 received 2 tensors.*first missing: 'z'"):
        verify(names, sums, [("rollout worker 2", {"names": ["x", "y"], "checksums": [1, 2]})])
    with pytest.raises(WeightSyncError, match="rollout worker 3 reported no weight update"):
        verify(names, sums, [("rollout worker 3", None)])


def test_the_client_gives_each_worker_the_ranks_after_the_previous_ones():
    class Worker:
        def __init__(self):
            self.info = None

        def transfer_init(self, info):
            self.info = info

    workers = [Worker() for _ in range(3)]
    PoolClient([Member(w, i, 0, ranks=2 if i == 1 else 1) for i, w in enumerate(workers)]).init_weight_transfer_engine(
        {"world_size": 5})
    assert [w.info["rank_offset"] for w in workers] == [1, 2, 4]
