"""`rl-train --config configs/NAME.yaml [--resume | --overwrite] [--check] [dotted.key=value ...]`: the hybrid-mode
GRPO run.

The run directory is `run.dir` (e.g. `run.dir=runs/exp1`); it belongs to one run: a new run needs it empty,
`--resume` continues the run there, `--overwrite` deletes it first. The whole config is checked before anything
starts (the tree's own constraints, then `rl.preflight`: paths, reward parts, the run directory, resume); `--check`
stops there. Expected failures (a bad row, an unreadable checkpoint, a reward part that always fails, a full disk)
end with one line naming the file, row, key or part and exit 1; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import config as config_io


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rl-train", description=__doc__.split("\n\n")[0].replace("\n", " "),
                                     epilog=__doc__.split("\n\n", 1)[1].replace("\n", " "))
    parser.add_argument("--config", help="a YAML file (configs/*.yaml); omitted: the embedded defaults")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run.dir")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run already in run.dir (a new run needs an empty run.dir otherwise)")
    parser.add_argument("--debug", action="store_true", help="full tracebacks for every error")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--check", action="store_true",
                        help="check the config (values, names, paths, reward parts) and exit; starts nothing")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = config_io.load(args.config, args.overrides)
    except config_io.ConfigError as e:
        print(f"rl-train: config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config_io.dump(cfg))
        return 0
    from .preflight import clear_run_dir, preflight

    problems = preflight(cfg, resume=args.resume, overwrite=args.overwrite)
    if problems:
        print("rl-train: config error: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.check:
        print(f"rl-train: config OK ({args.config or 'embedded defaults'})")
        return 0
    if args.overwrite:
        clear_run_dir(cfg)
    try:
        history = run(cfg, args.resume, own_process=argv is None)
    except _expected() as e:
        if args.debug:
            raise
        print(f"rl-train: error: {e}", file=sys.stderr)
        return 1
    if history:
        last = history[-1]
        shown = {k: round(v, 4) for k, v in last.items() if k.startswith(("reward/", "accuracy/")) and
                 (k.endswith("/mean") or k.startswith("accuracy/")) and isinstance(v, float)}
        print(f"rl-train: {cfg.run.steps} steps done; run directory {cfg.run.dir}; last step {shown}")
    return 0


def run(cfg, resume: bool, own_process: bool = False) -> list[dict]:
    """own_process: this process is the rl-train command, not a caller's (see `Trainer`'s `own_tempdir`)."""
    from .trainer import Trainer

    return Trainer(cfg, resume=resume, own_tempdir=own_process).fit()


def _expected() -> tuple[type[BaseException], ...]:
    """Failures with a message that says it all (file, row, key or part): one line, no traceback."""
    from .data import RowError
    from .errors import CheckpointError, RunError

    return (RunError, RowError, CheckpointError, config_io.ConfigError, OSError)


if __name__ == "__main__":
    sys.exit(main())
