"""Micro-batches by token budget: several sequences per row, no padding to the longest.

Hybrid batches mix short answers of tens of tokens with long traces of thousands; padding them to the longest
wastes most of the compute. Sequences are packed first-fit-decreasing into micro-batches of at most
`budget` tokens (a sequence longer than the budget gets a micro-batch of its own).
"""

from __future__ import annotations


def pack_by_budget(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of total <= budget (first fit, longest first). Every index appears
    exactly once; bins are returned in a deterministic order (by their first, longest, member)."""
    if budget < 1:
        raise ValueError(f"budget={budget}: must be >= 1")
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(budget - lengths[i])
    return bins


def pad_by_budget(lengths: list[int], budget: int) -> list[list[int]]:
    """Length-sorted padded micro-batches: longest first, a batch grows while rows x its longest <= budget.
    Similar lengths share a batch, so padding stays small without packing's dense cross-sequence attention mask
    (which costs (sum of lengths)^2 per row where no varlen attention kernel exists, as on the CPU)."""
    if budget < 1:
        raise ValueError(f"budget={budget}: must be >= 1")
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pad_by_count(lengths: list[int], per_batch: int) -> list[list[int]]:
    """The padded baseline: consecutive groups of `per_batch` sequences (each padded to its longest)."""
    return [list(range(i, min(i + per_batch, len(lengths)))) for i in range(0, len(lengths), per_batch)]


def padding_fraction(lengths: list[int], batches: list[list[int]], packed: bool) -> float:
    """Share of the computed token positions that are padding. Packed: one row per micro-batch, as long as its
    contents; padded: rows x the longest row of the micro-batch."""
    real = sum(lengths)
    if packed:
        computed = sum(sum(lengths[i] for i in b) for b in batches)
    else:
        computed = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - real / computed if computed else 0.0
