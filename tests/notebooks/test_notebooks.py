"""The notebooks run top to bottom on the tiny model (nbclient, a real kernel), and their outputs say what they
should: not only that no cell raised."""

import json
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).parents[2]


def execute(name: str, monkeypatch, **env) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    return nb


def outputs(nb) -> list[dict]:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def text(nb) -> str:
    parts = []
    for o in outputs(nb):
        parts.append(o.get("text", ""))
        parts += [o.get("data", {}).get(kind, "") for kind in ("text/plain", "text/html")]
    return "\n".join(parts)


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs(nb))


def test_mode_switch_eval(monkeypatch, tmp_path):
    run = tmp_path / "run"
    nb = execute("mode_switch_eval.ipynb", monkeypatch, RUN_DIR=run, STEPS=2)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    assert images(nb) >= 3  # training curves, accuracy against tokens, length histograms
    out = text(nb)
    assert "2 steps logged" in out and "eval/accuracy/short" in out
    summary = json.loads((run / "eval-latest" / "summary.json").read_text())
    assert list(summary["modes"]) == ["short", "long", "auto"] and summary["checkpoints"][0]["name"] == "step-000002"
    # the summary table and the side-by-side completions, as displayed
    assert "compliance_rate" in out and "think_rate" in out and "correct (short / long)" in out
    first_row = json.loads((run / "eval-latest" / "results.jsonl").read_text().splitlines()[0])
    assert first_row["row_id"] in out
    assert "vllm" not in out.lower()  # the CLI's engine logs stay out of the notebook
    # the run's own held-out rows, read as its trainer read them; nothing written beside the user's data
    assert "evaluated: the run's 4 held-out rows of" in out and summary["data"]["rows"] == 4
    data = Path(yaml.safe_load((run / "config.yaml").read_text())["data"]["path"])
    assert not list((data if data.is_absolute() else ROOT / data).parent.glob("notebook_eval*"))
    assert "budget" in out and "samples" in out  # the table's columns
    compared = json.loads((run / "compare" / "comparison.json").read_text())  # section 6: the run as one arm
    assert list(compared["arms"]) == ["run"] and set(compared["arms"]["run"]) == {"short", "long", "auto"}
    assert images(nb) >= 4


def test_reward_authoring(monkeypatch, tmp_path):
    nb = execute("reward_authoring.ipynb", monkeypatch, WORK_DIR=tmp_path, STEPS=2)
    out = text(nb)
    # brief statement, in long mode after </think>, reasoning ignored, at length, a wrong number, no reference
    assert "scores: [1.0, 1.0, 0.0, 0.5, 0.0, None]" in out
    assert "picky: score=None error=ValueError: cannot judge explosions" in out
    assert "sleepy: score=None error=timeout" in out
    assert "2 steps done" in out and "reward/short/mine" in out and "reward/long/mine" in out
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("reward/short/mine" in r and "reward/long/mine" in r for r in rows)
    assert images(nb) == 1
