"""Mode-switch evaluation: each mode's accuracy against the tokens it spends, per checkpoint (`rl-eval`)."""

from .compliance import complies, thinks
from .records import eval_requests, evaluate_rows, records_of
from .run import EvalSettings, run_eval
from .summary import flat_metrics, summarize, summarize_mode
from .targets import Target, find_targets

__all__ = ["EvalSettings", "Target", "complies", "eval_requests", "evaluate_rows", "find_targets", "flat_metrics",
           "records_of", "run_eval", "summarize", "summarize_mode", "thinks"]
