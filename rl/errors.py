"""Expected failures of a run: each is reported by the commands as one line naming the file, row, key or part
(a traceback only with `--debug`)."""

from model.checkpoint import CheckpointError  # noqa: F401  (run checkpoints fail as model checkpoints do: by file)


class RunError(RuntimeError):
    """A failure the user can act on from its message alone."""


class LearnerRankLost(RunError):
    """A rank of the sharded learner died (its process killed, out of memory): the step it was in is lost."""


class RewardFailure(RunError):
    """A reward part that failed on every row for too many steps in a row (`reward.max_failed_steps`)."""


class NothingTrained(RunError):
    """A run that ended without a single update."""


class NonFiniteUpdates(RunError):
    """Optimizer updates skipped for a non-finite gradient norm, `learner.max_skipped_steps` in a row."""


class DataError(RunError, ValueError):
    """Data that cannot make a run as a whole (no valid row left, a column mapping that does not fit the data set);
    a single bad row is a `rl.data.RowError`."""
