"""`rl-reward NAME --input rows.jsonl [--output out.jsonl]`: score rows with one reward, to check it before a run.

Input: one JSON object per line with `completion` (string), `answer` (the reference; optional), `mode`
(`short`/`long`/`auto`, default `auto`), `meta` (object, optional), `id` and `group` (optional; `group` is the
z-normalisation group of `combine`). Output: one JSON line per input row, in order, with `line`, `score` (number or
null), `error` (null or a message) and `seconds` (plus `id` when given, and `parts` for `combine`). A malformed line
gives a row whose error names the line and the field; the other rows are scored.

NAME: a built-in (`--list`), an entry point, a `module:function` or `file.py:function` path, or `combine`
(the weighted sum; its settings from `--config file.json|yaml` and `--option`).

Exit status: 0 when rows were scored (error rows included), 1 when every row failed, 2 when the reward, an option
or a file is unusable (checked before any row is read: one line on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any, Iterable, TextIO

from core.modes import MODES

from .api import RewardInput, _REGISTRY, builtin_names, get_reward
from .combine import CombineConfig, score_combined
from .runner import RewardRunner, RunnerConfig
from .sandbox import SandboxConfig


def parse_row(line: str, number: int) -> tuple[RewardInput | None, dict[str, Any], str | None]:
    """(sample, extra fields {id, group}, error) of one input line; error names the line and the field."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, {}, f"line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(row, dict):
        return None, {}, f"line {number}: a row must be a JSON object, got {type(row).__name__}"
    extra = {k: row[k] for k in ("id", "group") if k in row}
    if "completion" not in row:
        return None, extra, f"line {number}: field 'completion' is missing"
    if not isinstance(row["completion"], str):
        kind = type(row["completion"]).__name__
        return None, extra, f"line {number}: field 'completion' must be a string, got {kind}"
    mode = row.get("mode", "auto")
    if mode not in MODES:
        return None, extra, f"line {number}: field 'mode' must be one of {', '.join(MODES)}, got {mode!r}"
    meta = row.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        return None, extra, f"line {number}: field 'meta' must be an object, got {type(meta).__name__}"
    if "group" in extra and not isinstance(extra["group"], (str, int)):
        return None, extra, f"line {number}: field 'group' must be a string or an integer"
    return RewardInput.make(row["completion"], row.get("answer"), mode, meta), extra, None


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option wants key=value, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _load_config(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(f)
        else:
            data = json.load(f)
    if not isinstance(data, dict):
        raise SystemExit(f"rl-reward: {path} must hold a mapping of options")
    return data


def _list(out: TextIO) -> None:
    for name in builtin_names():
        fn = _REGISTRY[name]
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        out.write(f"{name:14s} {doc}\n")
        config = getattr(fn, "__reward__", {}).get("config")
        if config is not None:
            for f in dataclasses.fields(config):
                missing = f.default is dataclasses.MISSING
                default = f.default_factory() if missing else f.default  # type: ignore[misc]
                out.write(f"{'':14s}   {f.name} = {default!r}\n")
    out.write(f"{'combine':14s} The weighted sum of parts (options: the fields of rewards.combine.CombineConfig).\n")


def run(name: str, lines: Iterable[str], out: TextIO, options: dict[str, Any], runner: RewardRunner) -> dict[str, Any]:
    """Score the lines and write one JSON line per row; returns a summary."""
    rows: list[dict[str, Any]] = []
    samples: list[RewardInput] = []
    where: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        sample, extra, error = parse_row(line, number)
        row: dict[str, Any] = {"line": number, **({"id": extra["id"]} if "id" in extra else {})}
        if error is not None:
            row.update(score=None, error=error, seconds=0.0)
        else:
            row["_group"] = extra.get("group", f"_row{number}")
            where.append(len(rows))
            samples.append(sample)  # type: ignore[arg-type]
        rows.append(row)
    if samples:
        if name == "combine":
            scored = score_combined(samples, [rows[i]["_group"] for i in where], CombineConfig(**options), runner)
            for k, i in enumerate(where):
                o = scored.total[k]
                rows[i].update(score=o.score, error=o.error, seconds=round(o.seconds, 6),
                               parts={p: v[k].score for p, v in scored.parts.items()})
        else:
            for i, o in zip(where, runner.score(name, samples, **options)):
                rows[i].update(score=o.score, error=o.error, seconds=round(o.seconds, 6))
    for row in rows:
        row.pop("_group", None)
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    scores = [r["score"] for r in rows if r["score"] is not None]
    return {"rows": len(rows), "scored": len(scores), "errors": sum(r["error"] is not None for r in rows),
            "mean": sum(scores) / len(scores) if scores else None}


def main(argv: list[str] | None = None, runner: RewardRunner | None = None) -> int:
    """The command line. `runner`: use this runner (and its sandbox) instead of starting one (tests, notebooks)."""
    parser = argparse.ArgumentParser(prog="rl-reward", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?",
                        help="reward: built-in name, entry point, module:function, file.py:function, or combine")
    parser.add_argument("--input", "-i", help="rows, one JSON object per line ('-' for stdin)")
    parser.add_argument("--output", "-o", help="output JSON lines (default: stdout)")
    parser.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                        help="a reward option (VALUE parsed as JSON when it can be); repeatable")
    parser.add_argument("--config", help="a JSON or YAML file of options (with `combine`: CombineConfig fields)")
    parser.add_argument("--timeout", type=float, default=SandboxConfig.timeout_s, help="seconds per call")
    parser.add_argument("--workers", type=int, default=SandboxConfig.workers, help="sandbox worker processes")
    parser.add_argument("--memory-mb", type=int, default=SandboxConfig.memory_mb, help="address-space bound per worker")
    parser.add_argument("--in-process", action="store_true",
                        help="no sandbox: run here without limits (to debug a plugin)")
    parser.add_argument("--list", action="store_true", help="list the built-in rewards and their options")
    args = parser.parse_args(argv)
    if args.list:
        _list(sys.stdout)
        return 0
    if not args.name or not args.input:
        parser.error("NAME and --input are required (or --list)")
    options = _load_config(args.config) if args.config else {}
    options.update(dict(args.option))
    config = RunnerConfig(sandbox=SandboxConfig(workers=args.workers, timeout_s=args.timeout,
                                                memory_mb=args.memory_mb), in_process=args.in_process)
    try:  # the reward and its options, before any row is read or a sandbox starts
        CombineConfig(**options) if args.name == "combine" else get_reward(args.name, **options)
    except (KeyError, ValueError, TypeError, ImportError, AttributeError, OSError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"rl-reward: cannot use reward {args.name!r}: {reason}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    try:
        source = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    except OSError as exc:
        print(f"rl-reward: --input {args.input}: cannot read it ({exc.strerror or exc})", file=sys.stderr)
        return 2
    try:
        out = sys.stdout if not args.output else open(args.output, "w", encoding="utf-8")
    except OSError as exc:
        source.close()
        print(f"rl-reward: --output {args.output}: cannot write it ({exc.strerror or exc})", file=sys.stderr)
        return 2
    try:
        if runner is not None:
            summary = run(args.name, source, out, options, runner)
        else:
            with RewardRunner(config) as own:
                summary = run(args.name, source, out, options, own)
    except (KeyError, ValueError, TypeError, ImportError, AttributeError) as exc:
        print(f"rl-reward: cannot use reward {args.name!r}: {exc}", file=sys.stderr)
        return 2
    finally:
        if source is not sys.stdin:
            source.close()
        if out is not sys.stdout:
            out.close()
    mean = "-" if summary["mean"] is None else f"{summary['mean']:.4g}"
    print(f"rl-reward {args.name}: {summary['rows']} rows, {summary['scored']} scored, {summary['errors']} errors, "
          f"mean score {mean} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 1 if summary["rows"] and not summary["scored"] and summary["errors"] == summary["rows"] else 0


if __name__ == "__main__":
    sys.exit(main())
