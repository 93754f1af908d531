"""The vLLM plugin this project ships: `register()` is its `vllm.general_plugins` entry point (pyproject.toml), so
every process that starts an engine, the multiprocess engine's own included, knows
- the architecture `ARCH` (`rollouts.vllm.video.MiniCPMV45Video`: MiniCPM-V 4.5 with video packed through the
  3D-Resampler); an engine uses it only when `make_llm(..., video=True)` asks for it;
- the weight-transfer backend `rollouts.vllm.transfer.BACKEND` (both halves, engine and trainer), which an engine
  uses when started with `weight_transfer_config` naming it (`make_llm` does).
Registering adds names and changes nothing else. Idempotent; importing the modules is left to the first engine
that needs them (lazy `module:class` entries)."""

ARCH = "MiniCPMV45VideoRL"
TRANSFER_BACKEND = "minicpmv_rl"
"""`rollouts.vllm.transfer.BACKEND` (kept here so that registering imports nothing)."""


def register() -> None:
    from vllm import ModelRegistry
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

    if ARCH not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCH, "rollouts.vllm.video:MiniCPMV45Video")
    for factory, cls in ((WeightTransferEngineFactory, "EngineReceiver"),
                         (WeightTransferTrainerFactory, "TransferSender")):
        if TRANSFER_BACKEND not in factory._registry:
            factory.register_engine(TRANSFER_BACKEND, "rollouts.vllm.transfer", cls)
