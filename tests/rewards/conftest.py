"""One sandbox (two worker processes) for the whole rewards test session; tests must not start their own pools."""

import pytest

from rewards.api import RewardInput
from rewards.runner import RewardRunner, RunnerConfig
from rewards.sandbox import Sandbox, SandboxConfig

TIMEOUT_S = 4.0
"""The sandbox's per-call limit in these tests (the time-limit tests allow it plus a margin)."""


@pytest.fixture(scope="session")
def sandbox():
    with Sandbox(SandboxConfig(workers=2, timeout_s=TIMEOUT_S, memory_mb=2048)) as box:
        yield box


@pytest.fixture(scope="session")
def runner(sandbox):
    with RewardRunner(RunnerConfig(sandbox=sandbox.config), sandbox=sandbox) as r:
        yield r


@pytest.fixture(scope="session")
def mk():
    """RewardInput.make: mk(completion, reference=None, mode="auto", meta=None)."""
    return RewardInput.make
