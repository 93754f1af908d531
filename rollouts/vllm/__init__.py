"""The vLLM backend: the engine (`engine`), the thread that drives its batch (`loop`), the rollout worker (`worker`),
the weight transfer into its processes (`transfer`, `extension`), this project's MiniCPM-V class for video
(`video`, registered by `plugin`) and rl-doctor (`doctor`). The rest of `rollouts/` is engine-neutral."""
