"""What a learner process holds: resident memory (CPU) and the accelerator's peak, in MB."""

from __future__ import annotations

from pathlib import Path

import torch

MB = 2**20


def resident_mb(reset_peak: bool = False) -> tuple[float, float]:
    """This process's resident memory and its peak so far, in MB (/proc/self/status VmRSS, VmHWM). reset_peak:
    the peak restarts from now (Linux' clear_refs; where it cannot, the peak stays the process's)."""
    if reset_peak:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def start_peak(device: torch.device) -> None:
    """On CUDA, restart the allocator's peak that `peak_mb` reads (one step's). The process's resident high-water
    mark is left alone: resetting it would also reset what the trainer reports as its own peak when the learner
    shares its process."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float:
    """On CUDA, the most memory torch allocated on the GPU since `start_peak` (what runs out first there); elsewhere
    the process's peak resident memory so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MB
    return resident_mb()[1]
