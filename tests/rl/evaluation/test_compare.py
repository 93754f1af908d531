"""`rl-eval --compare`: several evaluations (arms) side by side per mode, on the same rows only unless told."""

import json

from rl.evaluation.cli import main
from rl.evaluation.summary import summarize


def arm(folder, accuracy_long: float, tokens_long: float, rows: int = 4, think: float | None = None):
    """An rl-eval output folder whose summary is `summarize` of hand-made records."""
    records = []
    for mode, acc, tokens in (("short", 0.25, 20.0), ("long", accuracy_long, tokens_long), ("auto", 0.5, 60.0)):
        for i in range(rows):
            records.append({"row_id": f"r{i}", "mode": mode, "error": None, "reward": acc, "tokens": tokens,
                            "correct": float(i < acc * rows), "truncated": False, "compliant": True,
                            "thinks": mode == "long" or (mode == "auto" and think is not None and i < think * rows)})
    modes = summarize(records, ["short", "long", "auto"])
    folder.mkdir()
    summary = {"modes": modes, "checkpoints": [{"name": "export", "step": None, "modes": modes}],
               "data": {"path": "eval.jsonl", "rows": rows, "bad_rows": 0, "used": f"{rows} rows of eval.jsonl"},
               "settings": {"sampling": {"short": {"max_new_tokens": 64}, "long": {"max_new_tokens": 512},
                                         "auto": {"max_new_tokens": 512}}}}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_arms_side_by_side_per_mode(tmp_path, capsys):
    a = arm(tmp_path / "long_only", accuracy_long=0.75, tokens_long=400.0, think=0.75)
    b = arm(tmp_path / "hybrid", accuracy_long=0.75, tokens_long=250.0, think=0.25)
    assert main(["--compare", f"long_only={a}", f"hybrid={b}", "--out", str(tmp_path / "cmp")]) == 0
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert list(result["arms"]) == ["long_only", "hybrid"]
    assert result["arms"]["hybrid"]["long"]["tokens_mean"] == 250.0
    assert result["arms"]["long_only"]["long"]["accuracy"] == 0.75
    assert result["arms"]["hybrid"]["auto"]["think_rate"] == 0.25 and result["arms"]["long_only"]["auto"][
        "think_rate"] == 0.75
    assert result["budgets"]["hybrid"]["long"] == 512
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "hybrid" in printed and "long_only" in printed and "think_rate" in printed


def test_arms_on_different_rows_are_refused_unless_asked(tmp_path, capsys):
    a = arm(tmp_path / "a", 0.5, 100.0, rows=4)
    b = arm(tmp_path / "b", 0.5, 100.0, rows=8)
    assert main(["--compare", f"a={a}", f"b={b}", "--out", str(tmp_path / "cmp")]) == 2
    assert "the arms were evaluated on different rows (a: 4 rows of eval.jsonl; b: 8 rows of eval.jsonl)" in \
        capsys.readouterr().err
    assert main(["--compare", f"a={a}", f"b={b}", "--out", str(tmp_path / "cmp"), "--different-rows"]) == 0
    assert main(["--compare", f"{a}", "--out", str(tmp_path / "cmp")]) == 2
    assert "expected ARM=FOLDER" in capsys.readouterr().err
    assert main(["--compare", f"c={tmp_path / 'nowhere'}", "--out", str(tmp_path / "cmp")]) == 2
    assert "no summary.json" in capsys.readouterr().err
