"""`rl-eval --checkpoint DIR [--data FILE] [--modes short,long,auto] [--n N] --out DIR`: mode-switch evaluation.

DIR is a checkpoint directory (the release, a run's export/), one run checkpoint (RUN/checkpoints/step-N) or a
run directory (the base model and every kept checkpoint: curves over steps). Without --data, a run's own rows:
its held-out rows (run.eval_rows), else its data (--max-rows N); the output says which. Writes OUT/summary.json,
OUT/results.jsonl, OUT/accuracy_vs_tokens.png, OUT/length_hist.png (and OUT/curves.png for several checkpoints).

`rl-eval --compare ARM=FOLDER [ARM=FOLDER ...] --out DIR`: several evaluations (arms: runs trained differently,
evaluated on the same rows) side by side, per mode: OUT/comparison.json and OUT/comparison.png
(`rl/evaluation/compare.py`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _table(summary: dict) -> str:
    cols = ("accuracy", "reward_mean", "tokens_mean", "tokens_p90", "truncation_rate", "compliance_rate", "think_rate")
    lines = [f"{'checkpoint':<14}{'mode':<7}" + "".join(f"{c:>16}" for c in cols)]
    for t in summary["checkpoints"]:
        for mode, s in t["modes"].items():
            cells = "".join(f"{'-' if s[c] is None else format(s[c], '.3g'):>16}" for c in cols)
            lines.append(f"{t['name']:<14}{mode:<7}{cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rl-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint dir, RUN/checkpoints/step-N, or a run dir")
    parser.add_argument("--compare", nargs="+", metavar="ARM=FOLDER",
                        help="instead of evaluating: put several rl-eval --out folders (arms) side by side in "
                             "OUT/comparison.json and OUT/comparison.png")
    parser.add_argument("--different-rows", action="store_true",
                        help="with --compare: allow arms evaluated on different rows")
    parser.add_argument("--data", help="evaluation rows (JSONL, Parquet, a `datasets` folder or hub id), read with "
                                       "the run's data.* settings (column mapping, sources); default for a run: its "
                                       "held-out rows, else its data (--max-rows N)")
    parser.add_argument("--split", help="the split of a `datasets` folder or hub id (default: the run's data.split)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--modes", default="short,long", help="comma-separated: short, long, auto")
    parser.add_argument("--n", type=int, default=1, help="samples per row and mode")
    parser.add_argument("--max-rows", type=int, default=0, help="the first N valid rows (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, help="every mode's budget (default: the run's per mode)")
    parser.add_argument("--temperature", type=float, help="every mode's temperature (default: the run's)")
    parser.add_argument("--dtype", help="vLLM dtype (default: the run's rollout.dtype, else auto)")
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--no-base", action="store_true", help="for a run directory: skip the base model")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, and vLLM and Ray log warnings only")
    parser.add_argument("--debug", action="store_true", help="full tracebacks")
    args = parser.parse_args(argv)
    if args.compare:
        return _compare(args)
    if not args.checkpoint:
        parser.error("--checkpoint is required (or --compare ARM=FOLDER ...)")
    if args.quiet:  # read by vLLM when it is first imported (below), and by the engine's own processes
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("RAY_LOG_TO_STDERR", "0")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s")
    from model.checkpoint import CheckpointError
    from rl.config import ConfigError

    from .run import EvalSettings, run_eval

    try:
        settings = EvalSettings(modes=[m.strip() for m in args.modes.split(",") if m.strip()], n=args.n,
                                max_rows=args.max_rows, seed=args.seed, include_base=not args.no_base,
                                max_new_tokens=args.max_new_tokens, temperature=args.temperature, dtype=args.dtype,
                                max_model_len=args.max_model_len, progress=not args.quiet, split=args.split)
        summary = run_eval(args.checkpoint, args.data, args.out, settings)
    except (ValueError, OSError, ConfigError, CheckpointError) as e:
        if args.debug:
            raise
        print(f"rl-eval: {e}", file=sys.stderr)
        return 2
    print(f"rl-eval: evaluated {summary['data']['used']}")
    print(_table(summary))
    print(f"rl-eval: wrote {args.out}/summary.json, results.jsonl and {', '.join(summary['figures'].values())}")
    return 0


def _compare(args) -> int:
    from .compare import compare, format_table

    try:
        bad = [a for a in args.compare if "=" not in a or not a.split("=", 1)[0]]
        if bad:
            raise ValueError(f"--compare {bad[0]!r}: expected ARM=FOLDER (a name, then an rl-eval --out folder)")
        arms = dict(a.split("=", 1) for a in args.compare)
        result = compare(arms, args.out, same_rows=not args.different_rows)
    except (ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"rl-eval: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"rl-eval: wrote {args.out}/comparison.json and comparison.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
