"""Connecting to Ray: an existing cluster (`ray job submit`, `ray start`) or a local one started here.

Quiet by default: a user sees the job's own lines (data summary, a progress bar per epoch, one line per
validation, the final table); Ray's, DeepSpeed's and transformers' detail stays in Ray's logs
(`/tmp/ray/session_latest/logs`). `verbose=True` (`--verbose` on every job) brings it back to the terminal.
"""

from __future__ import annotations

import logging
import os

# Ray Train V2 prints each worker line twice without this; set before ray is imported.
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
# A local Ray runs its workers at nice 15; on a busy laptop the training/scoring workers then lose the CPU to
# Ray's own daemons (measured ~30% slower steps here). Workers of a local Ray run at normal priority.
os.environ.setdefault("RAY_worker_niceness", "0")

# What every process of a quiet run inherits: library warnings and C++ info/error chatter off.
QUIET_ENV = {
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning,ignore::UserWarning",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def verbose() -> bool:
    """Whether this run shows Ray's, DeepSpeed's and the libraries' own detail (`--verbose`; every Ray process of
    the job inherits it through RAYLIB_VERBOSE)."""
    return bool(os.environ.get("RAYLIB_VERBOSE"))


def quiet_libraries() -> None:
    """In this process: the libraries' own INFO lines and progress bars off (call after importing them)."""
    if verbose():
        return
    # The root logger too: some of Ray Train's INFO lines (a report dump per checkpoint) use file-named loggers.
    for name in ("", "DeepSpeed", "deepspeed", "torch.distributed", "ray", "ray.train", "ray.tune", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def set_verbose(verbose: bool) -> None:
    """Before Ray starts: verbose or quiet for this process and every Ray process the job starts."""
    if verbose:
        os.environ["RAYLIB_VERBOSE"] = "1"
        return
    import warnings

    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():  # else DeepSpeed warns on import that it fell back to the CPU
            os.environ["DS_ACCELERATOR"] = "cpu"
    quiet_libraries()


def ensure_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Connect to `address` (or RAY_ADDRESS, set by `ray job submit`); else start a local Ray.

    A local Ray gets at least 4 logical CPUs: several 1-CPU actors (controller, workers) on a 2-core laptop
    otherwise wait on each other (NOTES: a starved 2-CPU Ray hangs). `num_gpus`: the GPUs it offers (None:
    RAYLIB_LOCAL_GPUS, else the ones Ray finds); more than the machine has are logical GPUs, whose tasks run on
    the CPU: how placement is tested on a CPU machine."""
    import ray

    if ray.is_initialized():
        return
    env = {"RAYLIB_VERBOSE": "1"} if verbose() else {k: os.environ.get(k, v) for k, v in QUIET_ENV.items()}
    if os.environ.get("RAYLIB_LOAD_LOG"):  # `raylib.placement.note_weights_loaded`, in every Ray process
        env["RAYLIB_LOAD_LOG"] = os.environ["RAYLIB_LOAD_LOG"]
    options = dict(log_to_driver=True, logging_level=logging.INFO if verbose() else logging.WARNING,
                   logging_config=ray.LoggingConfig(log_level="INFO" if verbose() else "WARNING"))
    address = address or os.environ.get("RAY_ADDRESS")
    if address:  # a cluster (or `ray job submit`): its runtime environment (working_dir) stays as submitted
        ray.init(address=address, **options)
        return
    if not verbose():  # nothing preempts a local machine; its watcher only logs a start-up error
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    if num_gpus is None and os.environ.get("RAYLIB_LOCAL_GPUS"):
        num_gpus = int(os.environ["RAYLIB_LOCAL_GPUS"])
    ray.init(num_cpus=num_cpus or max(4, os.cpu_count() or 1), num_gpus=num_gpus, runtime_env={"env_vars": env},
             **options)


def in_ray_worker() -> bool:
    """True inside a Ray task or actor (not in the driver)."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    return ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def progress(iterable, desc: str, disable: bool = False):
    """A progress bar over `iterable`: tqdm in the driver; in a Ray task or actor Ray's tqdm, which the driver
    draws as one bar (a plain tqdm there would reach the terminal as a stream of `(pid=...)` lines)."""
    if disable:
        return iterable
    if in_ray_worker():
        from ray.experimental.tqdm_ray import tqdm as ray_tqdm

        return _closed_at_end(ray_tqdm(iterable, desc=desc))
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)


def _closed_at_end(bar):
    """Ray's bar stays open (its clock running on the driver's screen) until closed: close it when done."""
    try:
        yield from bar
    finally:
        bar.close()
