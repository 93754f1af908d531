"""Shared fixtures: one tiny MiniCPM-V 4.5 checkpoint and one vLLM engine per test session."""

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    from model.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def processor(tiny_ckpt):
    from model.processor import Processor

    return Processor.from_pretrained(tiny_ckpt)


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    from model import MiniCPMV

    return MiniCPMV.from_pretrained(tiny_ckpt).eval()


@pytest.fixture(scope="session")
def llm(tiny_ckpt):
    from rollouts.vllm.engine import make_llm

    return make_llm(tiny_ckpt, dtype="float32", max_model_len=4096)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
