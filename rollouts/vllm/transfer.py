"""This project's weight-transfer backend for vLLM 0.32's weight-transfer API (`vllm.distributed.weight_transfer`):
an engine side (`EngineReceiver`, in every engine process) and a trainer side (`TransferSender`, in the learner's
rank 0), registered with vLLM's two factories under `BACKEND` by the project's `vllm.general_plugins` entry point
(`rollouts.vllm.plugin.register`), so every engine process has them.

It speaks vLLM's protocol: the trainer calls `init_weight_transfer_engine` once (every engine joins the group),
then per update `start_weight_update` (vLLM's layerwise reload begins), `update_weights` (run while the trainer
broadcasts: each bucket is loaded as it arrives) and `finish_weight_update` (the reload is finalized: the CPU
kernels' repacking, the quantized layers' processing). What it adds to vLLM's NCCL backend: the same protocol over
a gloo group on CPUs (`rollouts.transfer.Group`: only the group differs between the CPU suite and a GPU run), and
a checksum of every tensor each engine process received, which the sender compares with its own after every update
(`rollouts.transfer.verify`): an engine that silently kept old weights is an error naming it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import torch
from vllm.distributed.weight_transfer.base import (ParamMeta, TrainerInitInfo, TrainerWeightTransferEngine,
                                                   WeightSource, WeightTransferEngine, WeightTransferInitInfo,
                                                   WeightTransferUpdateInfo)

from ..transfer import (Group, PoolClient, SendReport, TensorMeta, free_port_socket, metas_of, node_address,
                        receive_buckets, send_buckets, update_info, verify)

from .plugin import TRANSFER_BACKEND as BACKEND  # noqa: E402 - the name both halves are registered under


@dataclass
class ReceiverInitInfo(WeightTransferInitInfo):
    group: str
    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    bucket_bytes: int
    timeout_s: float = 600.0


@dataclass
class ReceiverUpdateInfo(WeightTransferUpdateInfo):
    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]


class EngineReceiver(WeightTransferEngine[ReceiverInitInfo, ReceiverUpdateInfo]):
    """The engine side, one per engine process (a tensor-parallel engine has one per rank: each receives every
    tensor, and the model's loader keeps its shard)."""

    init_info_cls = ReceiverInitInfo
    update_info_cls = ReceiverUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.group: Group | None = None
        self.bucket_bytes = 512 << 20
        self.names: list[str] = []
        self.checksums: list[int] = []
        self.report: dict | None = None

    def init_transfer_engine(self, init_info: ReceiverInitInfo) -> None:
        """Join the group (a group this engine was in before is left first: a worker was replaced)."""
        self.shutdown()
        parallel = self.parallel_config
        rank = parallel.data_parallel_index * parallel.world_size + parallel.rank + init_info.rank_offset
        self.bucket_bytes = init_info.bucket_bytes
        self.group = Group(init_info.group, init_info.master_address, init_info.master_port, rank,
                           init_info.world_size, init_info.timeout_s)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        self.names, self.checksums, self.report = [], [], None
        initialize_layerwise_reload(self.model)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self.receive_weights(self.parse_update_info(update_info))
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def receive_weights(self, update_info: ReceiverUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("weight transfer: update_weights before init_weight_transfer_engine")
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check

        metas = metas_of({"names": update_info.names, "dtype_names": update_info.dtype_names,
                          "shapes": update_info.shapes})
        with disable_mtp_completeness_check():
            self.checksums += receive_buckets(self.group, metas, self.bucket_bytes, self.model.load_weights)
        self.names += update_info.names

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        self.report = {"names": self.names, "checksums": self.checksums}

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None


@dataclass
class SenderInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = BACKEND
    group: str = "gloo"
    world_size: int = 2
    bucket_bytes: int = 512 << 20
    timeout_s: float = 600.0


class PairsSource(WeightSource):
    """A `WeightSource` of two callables: `metas()` (names, wire dtypes and full shapes, without gathering) and
    `pairs()` (a fresh pass of (name, full tensor), each a gather on a sharded learner)."""

    def __init__(self, metas: Callable[[], list[TensorMeta]], pairs: Callable[[], Iterator]):
        self._metas, self._pairs = metas, pairs

    def tensor_metas(self) -> list[TensorMeta]:
        return self._metas()

    def metadata(self) -> list[ParamMeta]:
        return [ParamMeta(m.name, getattr(torch, m.dtype), tuple(m.shape)) for m in self._metas()]

    def __iter__(self):
        return iter(self._pairs())


class TransferSender(TrainerWeightTransferEngine[SenderInitInfo]):
    """The trainer side, on the learner's rank 0 (the other ranks only take part in the source's gathers). Opens
    the group as rank 0 while every engine joins it, then per update drives start / update (concurrently with the
    broadcast) / finish through the client, and verifies every engine's checksums."""

    init_info_cls = SenderInitInfo

    def __init__(self, *, client: PoolClient, source: PairsSource | None = None, is_sender: bool = True,
                 bucket_bytes: int = 512 << 20) -> None:
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.bucket_bytes = bucket_bytes
        self.group: Group | None = None

    @classmethod
    def trainer_init(cls, init_info: SenderInitInfo, *, client, source=None) -> "TransferSender":
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, bucket_bytes=init_info.bucket_bytes)
        if not engine.is_sender:
            return engine
        host = node_address()
        sock = free_port_socket()
        port = sock.getsockname()[1]
        info = {"group": init_info.group, "master_address": host, "master_port": port,
                "world_size": init_info.world_size, "bucket_bytes": init_info.bucket_bytes,
                "timeout_s": init_info.timeout_s}
        # Every engine blocks in init_weight_transfer_engine until the group is complete: both sides at once.
        with ThreadPoolExecutor(max_workers=1) as pool:
            joined = pool.submit(client.init_weight_transfer_engine, info)
            try:
                engine.group = Group(init_info.group, host, port, 0, init_info.world_size, init_info.timeout_s,
                                     listen_socket=sock)
            except BaseException:
                sock.close()
                raise
            joined.result()
        return engine

    def send_weights(self, weight_version: int | None = None) -> SendReport:
        """One update: returns what was sent (seconds, bytes, tensors); raises `WeightSyncError` when an engine's
        checksums differ. On the other ranks: the source's gathers only."""
        assert self.source is not None
        start = time.perf_counter()
        if not self.is_sender:
            for _ in self.source:
                pass
            return SendReport(weight_version or 0, time.perf_counter() - start, 0, 0, 0)
        metas = self.source.tensor_metas()
        self.client.start_weight_update()
        with ThreadPoolExecutor(max_workers=1) as pool:
            received = pool.submit(self.client.update_weights, update_info(metas))
            try:
                sums = send_buckets(self.group, self.source, metas, self.bucket_bytes)
            except BaseException:
                # The engines wait for buckets that will not come: closing the group fails their receive.
                self.shutdown()
                raise
            received.result()
        self.client.finish_weight_update(None if weight_version is None else str(weight_version))
        verify([m.name for m in metas], sums, self.client.reports)
        return SendReport(weight_version or 0, time.perf_counter() - start, sum(m.nbytes for m in metas),
                          len(metas), len(self.client.members))

    def shutdown(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None
