"""The bottom floor: names every other package shares (the modes and the think tags). Imports nothing of the
project; `model/`, `rewards/`, `rollouts/` and `rl/` import it."""
