"""The prompt stream of a run: shuffled epochs over the valid rows, resumable, turned into rollout requests."""

from __future__ import annotations

import logging
import random
from pathlib import Path

from rollouts.types import RolloutRequest

from .rows import Row, load_rows

log = logging.getLogger(__name__)


class PromptDataset:
    def __init__(self, rows: list[Row], errors: list[str] | None = None, shuffle: bool = True, seed: int = 0,
                 eval_holdout: int = 0):
        if len(rows) <= eval_holdout:
            raise ValueError(f"{len(rows)} valid rows: not enough for training after holding out {eval_holdout}")
        self.errors = errors or []
        self.eval = rows[:eval_holdout]
        self.rows = rows[eval_holdout:]
        self.shuffle, self.seed = shuffle, seed
        self.epoch, self.index = 0, 0

    @classmethod
    def from_config(cls, cfg, seed: int = 0, eval_holdout: int = 0) -> "PromptDataset":
        path = Path(cfg.path)
        if not path.is_file() and cfg.demo:
            from .demo_sets import write_demo

            write_demo(cfg.demo, path, rows=cfg.demo_rows, seed=seed)
        rows, errors = load_rows(path, cfg.on_bad_row, cfg.default_reward)
        for message in errors[:5]:
            log.warning("skipped: %s", message)
        if errors:
            log.warning("%s: %d bad rows skipped, %d kept", path, len(errors), len(rows))
        return cls(rows, errors, cfg.shuffle, seed, eval_holdout)

    @property
    def bad_rows(self) -> int:
        return len(self.errors)

    def _order(self) -> list[int]:
        order = list(range(len(self.rows)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, k: int) -> list[Row]:
        """The next k rows, across epoch boundaries (each epoch a fresh seeded shuffle)."""
        out, order = [], self._order()
        while len(out) < k:
            if self.index >= len(order):
                self.epoch, self.index = self.epoch + 1, 0
                order = self._order()
            out.append(self.rows[order[self.index]])
            self.index += 1
        return out

    def eval_rows(self, k: int) -> list[Row]:
        return (self.eval or self.rows)[:k]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "rows": len(self.rows)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("rows") != len(self.rows):
            raise ValueError(f"the data changed since the checkpoint: {state.get('rows')} rows then, "
                             f"{len(self.rows)} now")
        self.epoch, self.index = state["epoch"], state["index"]

    @staticmethod
    def to_request(row: Row, mode: str, n: int, request_id: str) -> RolloutRequest:
        meta = {"answer": row.answer, "reward": row.reward, "row_id": row.id, "source": row.source,
                "line": row.line, "reward_meta": dict(row.meta)}
        return RolloutRequest(request_id=request_id, messages=row.messages, mode=mode, n=n, meta=meta)
