"""`rl-reward` on the example files of the repository (examples/rewards/)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from rewards.cli import main, parse_row
from rewards.combine import combine

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "rewards"


def run_cli(runner, tmp_path, *args):
    out = tmp_path / "out.jsonl"
    code = main([*args, "--output", str(out)], runner=runner)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return code, rows


def by_id(rows):
    return {r["id"]: r for r in rows}


@pytest.mark.parametrize("name, path, expected", [
    ("math", "math.jsonl", {"m1": 1.0, "m2": 0.0, "m3": 0.0, "m4": 1.0, "m5": 1.0, "m6": 1.0, "m7": 0.0, "m8": 0.0,
                            "m9": 1.0, "m10": 1.0}),
    ("choice", "choice.jsonl", {"c1": 1.0, "c2": 0.0, "c3": 1.0, "c4": 0.0, "c5": 1.0}),
    ("acc", "text.jsonl", {"t1": 1.0, "t2": 1.0, "t3": 1.0, "t4": 1.0, "t5": 1.0, "t6": 0.0}),
    ("examples/rewards/my_reward.py:concise_match", "my_reward.jsonl", {"p1": 1.0, "p2": 0.5, "p3": 0.0, "p4": None}),
])
def test_examples(runner, tmp_path, monkeypatch, name, path, expected):
    monkeypatch.chdir(ROOT)
    code, rows = run_cli(runner, tmp_path, name, "--input", str(EXAMPLES / path))
    assert code == 0
    assert {k: r["score"] for k, r in by_id(rows).items()} == expected
    assert all(r["error"] is None and r["seconds"] >= 0 for r in rows)
    assert [r["line"] for r in rows] == list(range(1, len(rows) + 1))


def test_combine_example(runner, tmp_path):
    code, rows = run_cli(runner, tmp_path, "combine", "--input", str(EXAMPLES / "combine.jsonl"))
    assert code == 0 and all(r["error"] is None for r in rows)
    rows = by_id(rows)
    assert rows["g1-a"]["parts"]["acc"] == 1.0 and rows["g1-b"]["parts"]["acc"] == 0.0
    assert rows["g1-c"]["parts"]["format"] == 0.0  # empty reasoning
    assert rows["g1-d"]["parts"]["repetition"] == -1.0
    assert rows["g2-c"]["parts"]["format"] == 0.0  # thinking in short mode
    ids = list(rows)
    groups = [i.split("-")[0] for i in ids]
    modes = ["long" if i.startswith("g1") else "short" for i in ids]
    parts = {p: [rows[i]["parts"][p] for i in ids] for p in rows["g1-a"]["parts"]}
    assert [rows[i]["score"] for i in ids] == pytest.approx(combine(parts, modes, groups))
    assert max(ids[:4], key=lambda i: rows[i]["score"]) == "g1-a"
    assert max(ids[4:], key=lambda i: rows[i]["score"]) == "g2-a"


def test_combine_options_and_config_file(runner, tmp_path):
    config = tmp_path / "combine.yaml"
    config.write_text("weights: {acc: 1.0, format: 0.0, repetition: 0.0, reward_model: 0.0}\n")
    code, rows = run_cli(runner, tmp_path, "combine", "--input", str(EXAMPLES / "combine.jsonl"),
                         "--config", str(config))
    assert code == 0 and [r["score"] for r in rows] == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert set(rows[0]["parts"]) == {"acc"}


def test_malformed_lines_are_error_rows(runner, tmp_path):
    code, rows = run_cli(runner, tmp_path, "math", "--input", str(EXAMPLES / "malformed.jsonl"))
    assert code == 0
    errors = {r["line"]: r["error"] for r in rows}
    assert errors == {
        1: None,
        2: "line 2: not valid JSON (Expecting value at column 1)",
        3: "line 3: field 'completion' is missing",
        4: "line 4: field 'mode' must be one of short, long, auto, got 'medium'",
        5: "line 5: field 'meta' must be an object, got list",
        6: "line 6: a row must be a JSON object, got list",
        8: None,  # line 7 is blank: skipped
    }
    assert [r["score"] for r in rows] == [1.0, None, None, None, None, None, 1.0]
    assert rows[2]["id"] == "no-completion"


def test_parse_row_field_types():
    assert parse_row('{"completion": 3}', 9)[2] == "line 9: field 'completion' must be a string, got int"
    assert parse_row('{"completion": "x", "group": [1]}', 2)[2] == ("line 2: field 'group' must be a string or "
                                                                    "an integer")
    sample, extra, error = parse_row('{"completion": "a</think>b", "answer": 5, "id": 7, "meta": null}', 1)
    assert error is None and sample.answer_text == "b" and sample.reference == 5 and extra == {"id": 7}


def test_options_and_unknown_reward(runner, tmp_path, capsys):
    code, rows = run_cli(runner, tmp_path, "number", "--input", str(EXAMPLES / "text.jsonl"), "--option", "rel_tol=0.5")
    assert code == 0 and by_id(rows)["t6"]["score"] == 1.0  # 7 vs 8 within 50%
    code, _ = run_cli(runner, tmp_path, "no_such_reward", "--input", str(EXAMPLES / "math.jsonl"))
    assert code == 2 and "unknown reward 'no_such_reward'" in capsys.readouterr().err


def test_list(capsys):
    assert main(["--list"]) == 0
    listing = capsys.readouterr().out
    for name in ("math", "choice", "number", "exact", "regex", "format", "repetition", "overlong", "prob",
                 "reward_model", "acc", "combine"):
        assert f"\n{name} " in "\n" + listing
    assert "rel_tol = 0.0001" in listing


def test_module_entry_point_end_to_end(tmp_path):
    """The real command in a fresh process (its own sandbox), reading stdin and writing stdout."""
    rows = (EXAMPLES / "math.jsonl").read_text()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "rewards.cli", "math", "--input", "-", "--workers", "1"],
                          input=rows, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    out = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["score"] for r in out] == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert "rl-reward math: 10 rows, 10 scored, 0 errors" in done.stderr


def test_command_errors_are_one_line_and_non_zero(runner, tmp_path, capsys):
    good = tmp_path / "rows.jsonl"
    good.write_text(json.dumps({"completion": "\\boxed{2}", "answer": "2"}) + "\n")
    cases = [(["math", "--input", str(tmp_path / "missing.jsonl")], 2, "--input " + str(tmp_path / "missing.jsonl")),
             (["nosuch", "--input", str(good)], 2, "cannot use reward 'nosuch': unknown reward 'nosuch'"),
             (["math", "--option", "nosuch=1", "--input", str(good)], 2, "unexpected keyword argument 'nosuch'"),
             (["math", "--input", str(good), "--output", str(tmp_path / "no" / "dir" / "o.jsonl")], 2, "--output")]
    for args, code, message in cases:
        assert main(args, runner=runner) == code, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("rl-reward: ") and message in err, err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"completion": "x"\n')
    assert main(["math", "--input", str(bad), "--output", str(tmp_path / "o.jsonl")], runner=runner) == 1  # nothing scored
