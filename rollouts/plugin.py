"""The vLLM plugin this project ships: `register()` is its `vllm.general_plugins` entry point (pyproject.toml), so
every process that starts an engine, the multiprocess engine's own included, knows the architecture `ARCH`
(`rollouts.vllm_video.MiniCPMV45Video`: MiniCPM-V 4.5 with video packed through the 3D-Resampler). Registering adds
a name and changes nothing else: an engine uses the class only when `make_llm(..., video=True)` asks for it.
Idempotent; importing vLLM's model code is left to the first engine that needs it (a lazy `module:class` entry)."""

ARCH = "MiniCPMV45VideoRL"


def register() -> None:
    from vllm import ModelRegistry

    if ARCH not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCH, "rollouts.vllm_video:MiniCPMV45Video")
