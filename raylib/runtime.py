"""Connecting to Ray: an existing cluster (`ray job submit`, `ray start`) or a local one started here."""

from __future__ import annotations

import os

# Ray Train V2 prints each worker line twice without this; set before ray is imported.
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
# A local Ray runs its workers at nice 15; on a busy laptop the training/scoring workers then lose the CPU to
# Ray's own daemons (measured ~30% slower steps here). Workers of a local Ray run at normal priority.
os.environ.setdefault("RAY_worker_niceness", "0")


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to `address` (or RAY_ADDRESS, set by `ray job submit`); else start a local Ray.

    A local Ray gets at least 4 logical CPUs: several 1-CPU actors (controller, workers) on a 2-core laptop
    otherwise wait on each other (NOTES: a starved 2-CPU Ray hangs)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus or max(4, os.cpu_count() or 1), log_to_driver=True)

