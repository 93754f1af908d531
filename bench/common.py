"""Shared by the benchmarks."""

import sys

import ray.cloudpickle

# Ray actors do not have this repository on their path: ship the function's code, not a reference to it.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def force_full_length(worker) -> bool:
    """Make a RolloutWorker (run inside its Ray actor via __ray_call__) ignore EOS, so that every completion has
    exactly max_new_tokens tokens and throughput compares like for like."""
    original = worker.sampling_for

    def full_length(request, prompt):
        params = original(request, prompt)
        params.min_tokens, params.ignore_eos = params.max_tokens, True
        return params

    worker.sampling_for = full_length
    return True
