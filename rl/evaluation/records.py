"""Evaluation as data: rows x modes -> rollout requests -> scored per-sample records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from rollouts.types import RolloutRequest, RolloutResult

from ..data.loader import to_request
from ..data.schema import Row
from ..metrics import correct
from ..scoring import Scored
from .compliance import complies, thinks


def eval_requests(rows: list[Row], modes: list[str], n: int = 1, seed: int = 0) -> list[RolloutRequest]:
    """Every row in every mode, n samples each, seeded (the same samples on any run of the same weights)."""
    requests = []
    for m, mode in enumerate(modes):
        for i, row in enumerate(rows):
            request = to_request(row, mode, n, f"eval-{mode}-{i}")
            request.seed = seed + (m * len(rows) + i) * n * 16  # vLLM seeds sample k with seed + k
            requests.append(request)
    return requests


def records_of(scored: list[Scored], **labels) -> list[dict]:
    """One record per sample (a failed request: one record with its error); `labels` (checkpoint, step) added."""
    out = []
    for result, totals, parts in scored:
        meta = result.request.meta
        base = {**labels, "row_id": meta.get("id"), "mode": result.request.mode, "reference": meta.get("answer")}
        if not result.ok:
            out.append({**base, "index": None, "error": result.error, "text": "", "answer": "", "reward": None,
                        "parts": {}, "correct": None, "tokens": 0, "truncated": False, "compliant": False,
                        "thinks": False})
            continue
        for s, total, part in zip(result.samples, totals, parts):
            out.append({**base, "index": s.index, "error": None, "text": s.text, "answer": s.answer,
                        "reward": total, "parts": part, "correct": correct(part), "tokens": len(s.completion_token_ids),
                        "truncated": s.truncated, "finish_reason": s.finish_reason,
                        "compliant": complies(s.text, s.mode), "thinks": thinks(s.text, s.mode)})
    return out


def write_records(path: Path, records: list[dict], append: bool = False) -> None:
    """JSON lines, one record each."""
    with open(path, "a" if append else "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def evaluate_rows(generate: Callable[[list[RolloutRequest]], list[RolloutResult]],
                  score: Callable[[list[RolloutResult]], list[Scored]], rows: list[Row], modes: list[str],
                  n: int = 1, seed: int = 0, **labels) -> list[dict]:
    """Sample every row in every mode through `generate` (a worker's or the pool's), score, and return records."""
    return records_of(score(generate(eval_requests(rows, modes, n, seed))), **labels)
