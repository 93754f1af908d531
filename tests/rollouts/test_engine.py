"""An engine leaves nothing in the temp folder: vLLM's per-start rendezvous file goes with the engine's own folder."""

import os
import tempfile
from pathlib import Path

import pytest

from core.process import TMP_PREFIX, start_time
from rollouts.vllm.engine import _engine_tempdir
from rollouts.vllm.worker import RolloutWorker
from tests.rollouts.helpers import SAMPLING

pytestmark = pytest.mark.vllm


def leftovers() -> set[str]:
    root = Path(tempfile.gettempdir())
    return {p.name for p in root.iterdir() if p.name.startswith(("vllm_dist_", f"{TMP_PREFIX}{os.getpid()}-"))}


def test_a_worker_leaves_no_temp_files(tiny_ckpt):
    before = leftovers()
    worker = RolloutWorker(str(tiny_ckpt), mode_sampling=SAMPLING, dtype="float32", max_model_len=1024)
    folder = worker.llm.minicpmv_tempdir
    assert any(p.name.startswith("vllm_dist_") for p in folder.iterdir())  # vLLM's file went into it
    assert os.environ.get("TMPDIR") != str(folder) and tempfile.gettempdir() != str(folder)  # restored
    worker.shutdown()
    assert not folder.exists() and leftovers() <= before


def test_the_folders_of_dead_engines_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{TMP_PREFIX}999999999-1-x"
    dead.mkdir()
    (dead / "vllm_dist_0").write_text("")
    mine = tmp_path / f"{TMP_PREFIX}{os.getpid()}-{start_time(os.getpid())}-y"
    mine.mkdir()
    fresh = _engine_tempdir()
    assert not dead.exists() and mine.exists() and fresh.parent == tmp_path


def test_a_lora_rank_is_served_with_the_smallest_max_lora_rank_vllm_accepts():
    from typing import get_args

    from vllm.config.lora import MaxLoRARanks

    from rollouts.vllm.engine import VLLM_LORA_RANKS, engine_lora_rank

    assert VLLM_LORA_RANKS == get_args(MaxLoRARanks)  # the installed vLLM's own list
    assert [engine_lora_rank(r) for r in (1, 4, 16, 24, 48, 320, 400)] == [1, 8, 16, 32, 64, 320, 512]
    with pytest.raises(ValueError, match="up to 512"):
        engine_lora_rank(513)
