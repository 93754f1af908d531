"""Full weights from the learner to every rollout engine in memory: one broadcast group, buckets, checksums.

The group spans the sender (the learner's rank 0) at rank 0 and every process of every engine after it (an engine
with tensor parallelism t holds t ranks): each bucket is broadcast once and every engine receives it at the same
time, on this node or another. `gloo` runs the group on CPUs (the CPU suite, or engines without a shared NCCL
path), `nccl` between GPUs; the bucket protocol, the checksums and the control calls are the same for both.

Wire protocol, per update (`send_buckets` / `receive_buckets`): the sender tells every engine the names, dtypes and
shapes of the tensors to come (the update info); both sides cut them into the same buckets (`plan_buckets`:
consecutive tensors up to `bucket_bytes`, a larger tensor alone); each bucket travels as one flat uint8 tensor,
each tensor in it starting at a multiple of `ALIGN` bytes.
Each side computes a checksum per tensor (`checksum`) of what it sent or received; the sender compares them after
the update (`verify`), so a lost, stale or misplaced tensor is an error naming the engine and the tensor.

Memory: the sender holds one bucket and the tensor being added (the source gathers one tensor at a time); each
engine holds one received bucket besides its model. At 8.7B in bf16 (17.4 GB) with 512 MiB buckets that is 35
broadcasts per update.

Engine-neutral: the vLLM side (`rollouts.vllm.transfer`) and the fake backend both receive through
`receive_buckets`; `PoolClient` drives the control calls of a pool's Ray actors.
"""

from __future__ import annotations

import math
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable

import torch

GROUPS = ("gloo", "nccl")
ALIGN = 16
"""Each tensor starts at a multiple of this many bytes in its bucket."""


class WeightSyncError(RuntimeError):
    """An engine loaded something other than what the learner sent (or not all of it)."""


def checksum(tensor: torch.Tensor, chunk: int = 1 << 24) -> int:
    """An exact integer digest of the tensor's bytes: the sum of its 32-bit words plus 3x the sum of every other
    word (so a swapped pair of words changes it), plus its byte count, modulo 2^63. Integer sums are exact, so the
    sender's GPU and an engine's CPU agree bit for bit; a chunk at a time, so no copy of a large tensor is made.
    It detects lost, stale, truncated and misplaced tensors, not a deliberate forgery."""
    flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    n = flat.numel()
    total = n
    words = flat[: n - n % 4].view(torch.int32)
    for part in words.split(chunk):
        total += int(part.sum()) + 3 * int(part[::2].sum())
    if n % 4:
        total += int(flat[n - n % 4:].sum())
    return total % (1 << 63)


@dataclass
class TensorMeta:
    name: str
    dtype: str
    """torch dtype name without the prefix: "bfloat16"."""
    shape: list[int]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * getattr(torch, self.dtype).itemsize

    @property
    def span(self) -> int:
        """Its bytes in a bucket: `nbytes` padded to `ALIGN`, so that every tensor starts where its dtype may be
        viewed (a float32 tensor cannot start at an odd byte)."""
        return -(-self.nbytes // ALIGN) * ALIGN


def update_info(metas: list[TensorMeta]) -> dict:
    """The update info every engine gets: plain lists (they cross processes as msgpack)."""
    return {"names": [m.name for m in metas], "dtype_names": [m.dtype for m in metas],
            "shapes": [list(m.shape) for m in metas]}


def metas_of(info: dict) -> list[TensorMeta]:
    return [TensorMeta(n, d, list(s)) for n, d, s in zip(info["names"], info["dtype_names"], info["shapes"])]


def plan_buckets(sizes: list[int], bucket_bytes: int) -> list[list[int]]:
    """Indices of consecutive tensors per bucket: a bucket is closed before a tensor that would take it past
    `bucket_bytes`; a tensor larger than that travels alone. Both sides compute it from the update info."""
    buckets: list[list[int]] = []
    held = 0
    for i, size in enumerate(sizes):
        if buckets and buckets[-1] and held + size <= bucket_bytes:
            buckets[-1].append(i)
            held += size
        else:
            buckets.append([i])
            held = size
    return buckets


class Group:
    """A broadcast group outside torch.distributed's default group (the learner ranks have their own): rank 0 is
    the sender. `broadcast(tensor)` sends from rank 0 or fills `tensor` on the others."""

    def __init__(self, kind: str, host: str, port: int, rank: int, world_size: int, timeout_s: float,
                 listen_socket: socket.socket | None = None):
        if kind not in GROUPS:
            raise ValueError(f"group {kind!r}: expected one of {GROUPS}")
        self.kind, self.rank, self.world_size = kind, rank, world_size
        self.device = torch.device("cpu")
        if kind == "gloo":
            from vllm.distributed.utils import stateless_init_torch_distributed_process_group

            self._pg = stateless_init_torch_distributed_process_group(
                host, port, rank, world_size, "gloo", timeout=timedelta(seconds=timeout_s),
                listen_socket=listen_socket)
        else:
            from vllm.distributed.weight_transfer.nccl_common import stateless_init_process_group

            if listen_socket is not None:
                listen_socket.close()  # NCCL's rendezvous binds the port itself
            index = torch.cuda.current_device()
            self.device = torch.device("cuda", index)
            self._pg = stateless_init_process_group(host, port, rank, world_size, device=index)

    def broadcast(self, tensor: torch.Tensor) -> None:
        if self.kind == "gloo":
            self._pg.broadcast(tensor, 0).wait()
        else:
            self._pg.broadcast(tensor, src=0, stream=torch.cuda.current_stream())

    def close(self) -> None:
        pg, self._pg = getattr(self, "_pg", None), None
        if pg is None:
            return
        try:
            if self.kind == "gloo":
                from vllm.distributed.utils import stateless_destroy_torch_distributed_process_group

                stateless_destroy_torch_distributed_process_group(pg)
            else:
                pg.destroy()
        except Exception:  # noqa: BLE001 - a group whose peers are gone: nothing left to release
            pass


def send_buckets(group: Group, pairs: Iterable[tuple[str, torch.Tensor]], metas: list[TensorMeta],
                 bucket_bytes: int) -> list[int]:
    """The sender's half: `pairs` (consumed one at a time, checked against `metas` in name, dtype and shape) cast
    to nothing, packed per `plan_buckets` and broadcast; returns the checksum of each tensor sent."""
    buckets = plan_buckets([m.span for m in metas], bucket_bytes)
    sums: list[int] = []
    it = iter(pairs)
    for bucket in buckets:
        parts = []
        for i in bucket:
            try:
                name, tensor = next(it)
            except StopIteration:
                raise ValueError(f"the weight source ended after {i} of {len(metas)} tensors (the engines wait for "
                                 f"{metas[i].name!r} next)") from None
            want = metas[i]
            got = TensorMeta(name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape))
            if got != want:
                raise ValueError(f"the weight source yielded {got} where its metadata declared {want}")
            tensor = tensor.detach().to(group.device).contiguous()
            sums.append(checksum(tensor))
            parts.append(tensor.reshape(-1).view(torch.uint8))
            if want.span > want.nbytes:
                parts.append(torch.zeros(want.span - want.nbytes, dtype=torch.uint8, device=group.device))
        flat = parts[0] if len(parts) == 1 else torch.cat(parts)
        del parts
        if flat.numel():  # a bucket of empty tensors has nothing to send (the receivers skip it alike)
            group.broadcast(flat)
        del flat
    extra = next(it, None)
    if extra is not None:
        raise ValueError(f"the weight source yielded more than the {len(metas)} tensors its metadata declared "
                         f"(first extra: {extra[0]!r})")
    return sums


def receive_buckets(group: Group, metas: list[TensorMeta], bucket_bytes: int,
                    load: Callable[[list[tuple[str, torch.Tensor]]], Any]) -> list[int]:
    """An engine's half: each bucket received into one flat buffer, split into its tensors (views), checksummed
    and handed to `load` (the engine's weight loader, which copies them into its model) before the next bucket;
    returns the checksums."""
    sums: list[int] = []
    for bucket in plan_buckets([m.span for m in metas], bucket_bytes):
        flat = torch.empty(sum(metas[i].span for i in bucket), dtype=torch.uint8, device=group.device)
        if flat.numel():
            group.broadcast(flat)
        pairs = []
        for i, part in zip(bucket, flat.split([metas[i].span for i in bucket])):
            tensor = part[:metas[i].nbytes].view(getattr(torch, metas[i].dtype)).reshape(metas[i].shape)
            sums.append(checksum(tensor))
            pairs.append((metas[i].name, tensor))
        load(pairs)
        del pairs, flat
    return sums


def verify(sent_names: list[str], sent: list[int], reports: list[tuple[str, dict]]) -> None:
    """Every engine process received every tensor with the sender's checksum, or WeightSyncError naming the
    worker and the first tensor that differs. reports: (who, {"names": [...], "checksums": [...]})."""
    for who, report in reports:
        if report is None:
            raise WeightSyncError(f"{who} reported no weight update (it received nothing)")
        names, sums = report["names"], report["checksums"]
        if names != sent_names:
            missing = [n for n in sent_names if n not in set(names)]
            raise WeightSyncError(f"{who} received {len(names)} tensors, the learner sent {len(sent_names)}"
                                  + (f" (first missing: {missing[0]!r})" if missing else " in another order"))
        for name, want, got in zip(names, sent, sums):
            if want != got:
                raise WeightSyncError(f"{who}: tensor {name!r} arrived with checksum {got}, the learner sent "
                                      f"{want}: the engine's weights are not the learner's")


def free_port_socket(host: str = "") -> socket.socket:
    """A listening socket on a free port, handed to the rendezvous store (no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen()
    return sock


def node_address() -> str:
    """This process's address as other nodes reach it (Ray's node IP in a Ray cluster)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001
        pass
    return "127.0.0.1"


@dataclass
class Member:
    """One rollout worker in the group: its Ray actor and how many group ranks its engine holds."""
    actor: Any
    worker_id: int
    generation: int
    ranks: int = 1

    @property
    def key(self) -> tuple[int, int]:
        return self.worker_id, self.generation


@dataclass
class TransferPlan:
    """What a sender needs to push one version to a set of workers; picklable (it travels to a sharded learner's
    rank 0). A plan with other members than the open group's (a worker replaced) opens a new group."""
    group: str
    members: list[Member]
    version: int
    dtype: str | None = None
    """Floating tensors travel in this dtype (the engines'); None: as the learner holds them."""
    bucket_bytes: int = 512 << 20
    timeout_s: float = 600.0
    generation: int = 0
    """Bumped by the caller to force a new group with the same members."""

    @property
    def world_size(self) -> int:
        return 1 + sum(m.ranks for m in self.members)

    @property
    def key(self) -> tuple:
        return (self.group, tuple(m.key for m in self.members), self.generation)


class PoolClient:
    """vLLM's `VLLMWeightSyncClient` (init / start / update / finish) over rollout workers that are Ray actors:
    each call goes to every worker at once and returns when all have answered. Worker i's engine takes the group
    ranks after those of workers 0..i-1 (`rank_offset`)."""

    def __init__(self, members: list[Member], timeout_s: float = 600.0):
        self.members, self.timeout_s = members, timeout_s
        self.reports: list[tuple[str, dict]] = []

    def _all(self, method: str, *args_for) -> list:
        """`method(*args)` on every member at once: a Ray actor's by `.remote`, an object of this process's (a
        `LocalPool`'s backend) in a thread (its engine blocks in the group's rendezvous and broadcasts)."""
        calls = [(getattr(m.actor, method), args) for m, args in zip(self.members, args_for)]
        if all(hasattr(fn, "remote") for fn, _ in calls):
            import ray

            return ray.get([fn.remote(*args) for fn, args in calls], timeout=self.timeout_s)
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            futures = [pool.submit(fn, *args) for fn, args in calls]
            return [f.result(timeout=self.timeout_s) for f in futures]

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        offsets, rank = [], 1
        for m in self.members:
            offsets.append(rank)
            rank += m.ranks
        self._all("transfer_init", *[({**init_info, "rank_offset": o},) for o in offsets])

    def start_weight_update(self) -> None:
        self._all("transfer_start", *[()] * len(self.members))

    def update_weights(self, update_info: dict) -> None:
        self._all("transfer_update", *[(update_info,)] * len(self.members))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        version = int(weight_version) if weight_version is not None else -1
        answers = self._all("transfer_finish", *[(version,)] * len(self.members))
        self.reports = [(f"rollout worker {m.worker_id}" + (f" (engine rank {r})" if len(per) > 1 else ""), rep)
                        for m, per in zip(self.members, answers) for r, rep in enumerate(per)]

    def shutdown(self) -> None:
        try:
            self._all("transfer_close", *[()] * len(self.members))
        except Exception:  # noqa: BLE001 - a worker that is gone has nothing to close
            pass


@dataclass
class SendReport:
    version: int
    seconds: float
    bytes: int
    tensors: int
    workers: int
    verified: bool = True
    group_seconds: float = 0.0
    """Of `seconds`, the time spent opening the group (0 when the open one was reused)."""


def wire_dtype(tensor: torch.Tensor, dtype: str | None) -> torch.dtype:
    return getattr(torch, dtype) if dtype and tensor.is_floating_point() else tensor.dtype
