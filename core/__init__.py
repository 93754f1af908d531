"""The bottom floor: what every other package shares: the modes and the think tags (`modes.py`), and processes
that clean up after themselves (`process.py`: liveness, private temp folders, dying with an owner). Imports nothing
of the project; `model/`, `rewards/`, `rollouts/` and `rl/` import it."""
