"""REWARDS.md stays true: its example file is the repository's, its commands print what it shows, its code runs."""

import json
import pathlib
import re
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = (ROOT / "REWARDS.md").read_text()


def blocks(marker: str) -> list[str]:
    """The fenced block after each `<!-- marker -->` (with its argument, if any, kept in the marker)."""
    return re.findall(rf"<!-- {marker} -->\n```\w*\n(.*?)```", DOC, flags=re.DOTALL)


def without_seconds(line: str) -> dict:
    row = json.loads(line)
    assert isinstance(row.pop("seconds"), (int, float))
    return row


def test_example_file_is_the_one_in_the_repository():
    for path, body in re.findall(r"<!-- example-file: (\S+) -->\n```python\n(.*?)```", DOC, flags=re.DOTALL):
        assert (ROOT / path).read_text() == body, path


def test_example_commands_print_what_the_doc_shows():
    (console,) = blocks("example-run")
    runs = re.split(r"^\$ ", console, flags=re.MULTILINE)[1:]
    assert runs
    for run in runs:
        command, *expected = run.strip().splitlines()
        argv = shlex.split(command)
        assert argv[0] == "rl-reward"
        done = subprocess.run([sys.executable, "-m", "rewards.cli", *argv[1:], "--workers", "1"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert [without_seconds(x) for x in done.stdout.splitlines()] == [without_seconds(x) for x in expected]


def test_example_code_runs(monkeypatch):
    monkeypatch.chdir(ROOT)
    code = blocks("example-python")
    assert len(code) >= 2
    namespace: dict = {"__name__": "rewards_doc_example"}
    for body in code:
        exec(compile(body, "REWARDS.md", "exec"), namespace)  # the doc's own code, not model text
