"""The methods `make_llm` adds to vLLM's worker (`worker_extension_cls`): they run in the process that holds the
model, whichever process that is (vLLM's multiprocess engine: its engine-core process), called through
`collective_rpc` by name, so nothing but plain values crosses the process boundary."""

from __future__ import annotations


class EngineWeightLoader:
    """Mixed into vLLM's worker class by `make_llm` (vLLM's `worker_extension_cls`); its methods run in the
    process that holds the model, whichever process that is. Names carry a prefix: vLLM refuses an extension
    whose attributes clash with the worker's."""

    def rl_reload_from_dir(self, path: str) -> int:
        """Full weights from a safetensors directory (a single `model.safetensors` or an index), read tensor by
        tensor (memory-mapped) and loaded through the worker's own `reload_weights`, which repacks them for the
        CPU kernels and resets the runner's LoRA, encoder and multimodal state, exactly like an in-process reload
        from in-memory pairs. The engine's model directory stays what it was (vLLM's reload from a path would
        repoint it). Returns the number of tensors read."""
        from model.checkpoint import iter_safetensors

        count = 0

        def counted():
            nonlocal count
            for pair in iter_safetensors(path):
                count += 1
                yield pair

        self.reload_weights(weights_iterator=counted())  # type: ignore[attr-defined]
        return count

    def rl_transfer_report(self) -> dict | None:
        """What the last in-memory weight update delivered to this process (`rollouts.vllm.transfer.EngineReceiver`):
        the names and checksums of the tensors received, then cleared (a report is read once)."""
        engine = getattr(self, "weight_transfer_engine", None)
        report = getattr(engine, "report", None)
        if engine is not None:
            engine.report = None
        return report
