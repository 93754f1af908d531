"""Run checkpoints: save -> load restores the learner, rotation by step number, atomic writes, export."""

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from model import MiniCPMV
from model.processor import Processor
from model.synthetic import shapes_image
from rl.checkpointing import (SUPPORT_FILES, checkpoint_dirs, export_checkpoint, load_checkpoint, load_latest,
                              rotate, save_checkpoint)
from rl.errors import CheckpointError
from rl.config import LearnerConfig
from rl.learner import LocalLearner, TrainSample

# A schedule whose lr moves every step, so a scheduler that is not restored shows in the lr.
SCHEDULE = dict(schedule="cosine", warmup_steps=1, total_steps=10, entropy_metric=False)
KINDS = {"lora": dict(lora=True, lr=1e-2),
         "lora+resampler": dict(lora=True, train_resampler=True, lr=1e-2),  # trained weights beside the adapter
         "full": dict(lora=False, lr=1e-3)}


@pytest.fixture(scope="module")
def samples(processor):
    g = torch.Generator().manual_seed(0)
    image = [{"type": "image", "image": shapes_image(2, seed=0)}, {"type": "text", "text": "Count."}]
    prompts = [processor([{"role": "user", "content": image}], "long"),  # an image: the resampler gets a gradient
               processor([{"role": "user", "content": "What is 1+1?"}], "short"),
               processor([{"role": "user", "content": "Count to three."}], "long")]
    return [TrainSample(p, torch.randint(5, 600, (n,), generator=g).tolist(), adv)
            for p, n, adv in zip(prompts, [6, 9, 4], [1.0, -1.0, 0.5])]


def make_learner(ckpt, seed: int, **config) -> LocalLearner:
    torch.manual_seed(seed)  # the LoRA A matrices are drawn at random
    return LocalLearner(ckpt, LearnerConfig(**config), device="cpu")


def trained(ckpt, samples, steps: int, seed: int = 0, **config) -> LocalLearner:
    learner = make_learner(ckpt, seed, **config)
    for _ in range(steps):
        learner.step(samples)
    return learner


def trainable(learner) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in learner.model.named_parameters() if p.requires_grad}


def stub_learner():
    """What save_checkpoint reads of a learner, without a model: for the tests of file handling."""

    class Policy(torch.nn.Linear):
        def save_pretrained(self, path):
            Path(path).mkdir()
            (Path(path) / "weights.txt").write_text(repr(self.weight.tolist()))

    model = Policy(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def save_state(path):
        model.save_pretrained(path / "policy")
        torch.save(optimizer.state_dict(), path / "optimizer.pt")

    return SimpleNamespace(model=model, optimizer=optimizer, save_state=save_state)


def names(run_dir: Path) -> list[str]:
    return [p.name for p in checkpoint_dirs(run_dir)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_save_load_round_trip_restores_the_learner(tiny_ckpt, samples, tmp_path, kind):
    config = {**SCHEDULE, **KINDS[kind]}
    a = trained(tiny_ckpt, samples, steps=2, **config)
    state = {"data": {"epoch": 1, "index": 7}, "rng": (3, (1, 2, 3), None)}
    torch.manual_seed(123)
    rng_at_save = torch.random.get_rng_state()
    path = save_checkpoint(tmp_path, 2, a, state)
    assert path == tmp_path / "checkpoints" / "step-000002" and names(tmp_path) == ["step-000002"]
    assert (path / "extra").is_dir() == (kind == "lora+resampler")

    b = make_learner(tiny_ckpt, seed=1, **config)  # another process: other LoRA init, other RNG, version 0
    before = trainable(b)
    differs = {n for n, p in trainable(a).items() if not torch.equal(p, before[n])}
    assert any(".lora_" in n for n in differs) if kind != "full" else differs
    if kind == "lora+resampler":  # the weights saved beside the adapter matter
        assert any(".resampler." in n for n in differs)
    got = load_checkpoint(path, b)

    assert got["step"] == 2 and got["data"] == state["data"] and got["rng"] == state["rng"]
    assert torch.equal(torch.random.get_rng_state(), rng_at_save)
    after = trainable(b)
    assert after.keys() == trainable(a).keys()
    for n, p in trainable(a).items():
        assert torch.equal(after[n], p), n
    assert b.version == 2
    assert b.scheduler.last_epoch == 2 and b.scheduler.get_last_lr() == a.scheduler.get_last_lr()
    assert b.optimizer.param_groups[0]["lr"] == a.optimizer.param_groups[0]["lr"] != KINDS[kind]["lr"]
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and sa
    for i in sa:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa[i][key], sb[i][key]), (i, key)

    # the next update from the restored learner is the update the saved one makes
    a.step(samples)
    b.step(samples)
    for n, p in trainable(a).items():
        torch.testing.assert_close(trainable(b)[n], p, rtol=0, atol=1e-7, msg=n)
    assert b.version == 3


def test_rotation_keeps_the_newest_by_step_number(tmp_path):
    learner = stub_learner()
    for step in (8, 9, 10):
        save_checkpoint(tmp_path, step, learner, {}, keep=2)
    # step 9 must not sort after step 10: rotation would delete step 10 and resume would pick step 9
    assert names(tmp_path) == ["step-000009", "step-000010"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000009", "step-000010"]
    save_checkpoint(tmp_path, 11, learner, {}, keep=2)
    assert names(tmp_path) == ["step-000010", "step-000011"]
    save_checkpoint(tmp_path, 12, learner, {}, keep=0)  # 0: keep every checkpoint
    assert names(tmp_path) == ["step-000010", "step-000011", "step-000012"]
    save_checkpoint(tmp_path, 13, learner, {}, keep=1)
    assert names(tmp_path) == ["step-000013"]
    assert torch.load(tmp_path / "checkpoints" / "step-000013" / "state.pt", weights_only=False)["step"] == 13
    assert checkpoint_dirs(tmp_path / "elsewhere") == []


def test_a_kill_during_rotation_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    """The deletion of an old checkpoint dies half-way (kill -9): what is left is not a `step-N` folder, and the
    resumed run's rotation (and the next save's) deletes it, so `keep` holds."""
    import rl.checkpointing as checkpointing

    learner = stub_learner()
    for step in (1, 2):
        save_checkpoint(tmp_path, step, learner, {}, keep=2)

    real_rmtree = checkpointing.shutil.rmtree

    def dies_half_way(path, ignore_errors=False):
        if not Path(path).name.startswith(".old-"):
            return real_rmtree(path, ignore_errors=ignore_errors)
        next(p for p in Path(path).iterdir() if p.is_file()).unlink()  # one file gone, then the process is killed
        raise SystemExit("killed")

    monkeypatch.setattr(checkpointing.shutil, "rmtree", dies_half_way)
    with pytest.raises(SystemExit):
        save_checkpoint(tmp_path, 3, learner, {}, keep=2)
    monkeypatch.undo()
    assert names(tmp_path) == ["step-000002", "step-000003"]  # step 1, half deleted, is no longer a checkpoint
    assert (tmp_path / "checkpoints" / ".old-step-000001").is_dir()
    rotate(tmp_path, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000002", "step-000003"]


def test_rotation_orders_steps_past_six_digits(tmp_path):
    learner = stub_learner()
    for step in (999_999, 1_000_000):
        save_checkpoint(tmp_path, step, learner, {}, keep=1)
    assert names(tmp_path) == ["step-1000000"]


def test_interrupted_write_leaves_the_previous_checkpoint(tiny_ckpt, samples, tmp_path, monkeypatch):
    config = dict(SCHEDULE, lora=True, lr=1e-2)
    learner = trained(tiny_ckpt, samples, steps=1, **config)
    at_step_1 = trainable(learner)
    save_checkpoint(tmp_path, 1, learner, {"data": "one"})
    learner.step(samples)

    real_save = torch.save

    written = []

    def dies_at_state(obj, f, *args, **kwargs):  # the adapter and optimizer.pt are written, then the disk is full
        written.append(Path(f).name)
        if Path(f).name == "state.pt":  # what torch says on a full disk: no path, no errno
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1472 vs 1366")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_at_state)
    half = tmp_path / "checkpoints" / ".tmp-step-000002"
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(tmp_path, 2, learner, {"data": "two"})
    monkeypatch.setattr(torch, "save", real_save)
    message = str(err.value)
    assert message.startswith(f"{half}: could not write the checkpoint of step 2 (RuntimeError: ")
    assert f"the previous one, {tmp_path / 'checkpoints' / 'step-000001'}, is intact" in message
    assert "optimizer.pt" in written and "state.pt" in written  # it did die mid-write
    assert not half.exists()  # and the half-written folder is gone
    assert names(tmp_path) == ["step-000001"]
    restored = make_learner(tiny_ckpt, seed=1, **config)
    state = load_checkpoint(checkpoint_dirs(tmp_path)[-1], restored)
    assert state["step"] == 1 and state["data"] == "one" and restored.version == 1
    for n, p in at_step_1.items():
        assert torch.equal(trainable(restored)[n], p), n

    # the next save goes through and leaves no temporary folder behind
    save_checkpoint(tmp_path, 2, learner, {"data": "two"})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001", "step-000002"]


def test_lora_export_is_the_merged_policy(tiny_ckpt, samples, tmp_path):
    learner = trained(tiny_ckpt, samples, steps=2, **SCHEDULE, lora=True, lr=1e-2)
    out = export_checkpoint(learner, tiny_ckpt, tmp_path / "export")
    assert out == tmp_path / "export"

    exported = MiniCPMV.from_pretrained(out).state_dict()
    expected = copy.deepcopy(learner.model).merge_and_unload().state_dict()  # peft's own merge
    assert exported.keys() == expected.keys()
    for n, t in expected.items():
        torch.testing.assert_close(exported[n], t, rtol=0, atol=1e-6, msg=n)
    base = MiniCPMV.from_pretrained(tiny_ckpt).state_dict()
    changed = {n for n, t in exported.items() if not torch.equal(t, base[n])}
    assert changed and all(n.startswith("llm.") and n.endswith("_proj.weight") for n in changed)

    # the exported model computes the trained policy's log-probabilities, and loads with its processor
    learner.model.eval()
    policy = learner.logprobs(samples)
    plain = LocalLearner(out, LearnerConfig(lora=False), device="cpu").logprobs(samples)
    for a, b in zip(policy, plain):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    present = [f for f in SUPPORT_FILES if (Path(tiny_ckpt) / f).is_file()]
    assert "tokenizer.json" in present
    for f in present:
        assert (out / f).read_bytes() == (Path(tiny_ckpt) / f).read_bytes(), f
    Processor.from_pretrained(out)


def test_full_export_and_reexport_over_it(tiny_ckpt, samples, tmp_path):
    learner = trained(tiny_ckpt, samples, steps=1, **SCHEDULE, lora=False, lr=1e-3)
    out = tmp_path / "export"
    for _ in range(2):  # the second export overwrites the first with the newer weights
        export_checkpoint(learner, tiny_ckpt, out)
        exported = MiniCPMV.from_pretrained(out).state_dict()
        current = learner.model.state_dict()
        assert exported.keys() == current.keys()
        for n, t in current.items():
            assert torch.equal(exported[n], t), n
        learner.step(samples)
    base = MiniCPMV.from_pretrained(tiny_ckpt).state_dict()
    assert any(not torch.equal(t, base[n]) for n, t in exported.items())


def test_resume_falls_back_past_a_truncated_checkpoint(tiny_ckpt, samples, tmp_path, caplog):
    config = dict(SCHEDULE, lora=True, lr=1e-2)
    learner = trained(tiny_ckpt, samples, steps=1, **config)
    at_step_1 = trainable(learner)
    save_checkpoint(tmp_path, 1, learner, {"data": "one"}, keep=3)
    learner.step(samples)
    newest = save_checkpoint(tmp_path, 2, learner, {"data": "two"}, keep=3)
    adapter = newest / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:20])  # a write cut short (a kill, a full disk)

    restored = make_learner(tiny_ckpt, seed=1, **config)
    with pytest.raises(CheckpointError, match=f"{newest}: cannot be read"):
        load_checkpoint(newest, restored)
    path, state = load_latest(tmp_path, restored, log=__import__("logging").getLogger("test"))
    assert path.name == "step-000001" and state["data"] == "one" and restored.version == 1
    for n, p in at_step_1.items():
        assert torch.equal(trainable(restored)[n], p), n
    assert f"{newest}: cannot be read" in caplog.text

    (tmp_path / "checkpoints" / "step-000001" / "state.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no checkpoint can be read: .*step-000002.*step-000001"):
        load_latest(tmp_path, make_learner(tiny_ckpt, seed=1, **config))
    with pytest.raises(CheckpointError, match="--resume: no checkpoint under"):
        load_latest(tmp_path / "empty", restored)


def test_an_interrupted_export_keeps_the_previous_one(tiny_ckpt, samples, tmp_path, monkeypatch):
    learner = trained(tiny_ckpt, samples, steps=1, lora=False, lr=1e-3, entropy_metric=False)
    out = export_checkpoint(learner, tiny_ckpt, tmp_path / "export")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    learner.step(samples)
    monkeypatch.setattr(learner, "export", lambda folder: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(CheckpointError, match=f"{out}: could not write the export"):
        export_checkpoint(learner, tiny_ckpt, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no half-written folder beside it
