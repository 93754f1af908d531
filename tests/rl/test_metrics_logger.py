"""MetricsLogger: one JSON object per step in metrics.jsonl, TensorBoard scalars, and the W&B / MLflow calls (their
packages are optional: stand-in modules record what the logger asks of them)."""

import json
import sys
import types

from rl.metrics import MetricsLogger


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs)) or self


def test_jsonl_tensorboard_wandb_mlflow(tmp_path, monkeypatch):
    wandb, mlflow = Recorder(), Recorder()
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=wandb.__getattr__("init")))
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    logger = MetricsLogger(tmp_path, tensorboard=True, wandb=True, mlflow=True, config={"learner": {"lr": 1e-6}})
    logger.log(1, {"reward/short/mean": 0.5, "loss": -0.1, "note": "text"})
    logger.log(2, {"reward/short/mean": 0.75, "loss": -0.2})
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "reward/short/mean": 0.5, "loss": -0.1, "note": "text"},
                    {"step": 2, "reward/short/mean": 0.75, "loss": -0.2}]
    assert list((tmp_path / "tensorboard").iterdir())
    names = [c[0] for c in wandb.calls]
    assert names == ["init", "log", "log", "finish"]
    assert wandb.calls[0][2]["config"] == {"learner": {"lr": 1e-6}} and wandb.calls[0][2]["dir"] == str(tmp_path)
    assert wandb.calls[1][1] == ({"reward/short/mean": 0.5, "loss": -0.1},) and wandb.calls[1][2] == {"step": 1}
    assert [c[0] for c in mlflow.calls] == ["start_run", "log_metrics", "log_metrics", "end_run"]
    assert mlflow.calls[2][1] == ({"reward.short.mean": 0.75, "loss": -0.2},) and mlflow.calls[2][2] == {"step": 2}


def test_resume_drops_the_records_of_steps_after_the_checkpoint(tmp_path):
    first = MetricsLogger(tmp_path, tensorboard=False)
    for step in (1, 2, 3):  # the run wrote step 3 and died before its checkpoint; it resumes from step 2
        first.log(step, {"loss": float(step)})
    first.close()
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"step": s, "acc": 0.5}) + "\n" for s in (2, 3)))
    again = MetricsLogger(tmp_path, tensorboard=False, resume_step=2)
    again.log(3, {"loss": 30.0})
    again.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert [json.loads(line)["step"] for line in (tmp_path / "eval.jsonl").read_text().splitlines()] == [2]
