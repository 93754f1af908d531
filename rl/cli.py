"""`rl-train --config configs/NAME.yaml [--resume] [--check] [dotted.key=value ...]`: the hybrid-mode GRPO run.

The run directory is `run.dir` (e.g. `run.dir=runs/exp1`). The whole config is checked before anything starts
(the tree's own constraints, then `rl.preflight`: paths, reward parts, resume); `--check` stops there.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import config as config_io


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rl-train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a YAML file (configs/*.yaml); omitted: the embedded defaults")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in run.dir")
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
    from .preflight import preflight

    problems = preflight(cfg, resume=args.resume)
    if problems:
        print("rl-train: config error: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    if args.check:
        print(f"rl-train: config OK ({args.config or 'embedded defaults'})")
        return 0
    from .trainer import Trainer

    history = Trainer(cfg, resume=args.resume).fit()
    if history:
        last = history[-1]
        shown = {k: round(v, 4) for k, v in last.items() if k.startswith(("reward/", "accuracy/")) and
                 (k.endswith("/mean") or k.startswith("accuracy/")) and isinstance(v, float)}
        print(f"rl-train: {cfg.run.steps} steps done; run directory {cfg.run.dir}; last step {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
