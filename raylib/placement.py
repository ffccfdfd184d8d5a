"""Where a step that loads model weights runs, on which device and in which dtype: the one placement rule.

Training runs on Ray Train workers (`raylib.train`). Every other step that loads weights -- TALLRec scoring,
BIGRec/GenRec beams and embeddings, CoReLLa's routed scoring, RecCocktail's mixing, scoring, timing and Tune
trials, SASRec and DCNv2 inference -- runs through `run` (a Ray task) or `start` (a Ray actor), with the
resources `for_job` reads from the job's config:

  GPU jobs (train.use_gpu)   `inference.gpus` GPUs (a fraction lets several steps share one) and `inference.cpus`
                             CPUs (0: train.cpus_per_worker, at least 1)
  CPU jobs                   `inference.cpus` CPUs (0: every core of the node) and as many math threads

So the driver process loads no weights at all: under `ray job submit` it runs on the head node, which in
`cluster.yaml` is a CPU-only machine. On a CPU laptop a task given every core scores as fast as the driver
itself did (measured: docs/scale.md, `raylib bench placement`).

Inside a task, `device()` is the GPU Ray assigned when the process sees CUDA, else the CPU: Ray started with
logical GPUs on a CPU machine (`ray.init(num_gpus=2)`, as the tests do) schedules GPU tasks whose code then
runs on the CPU.

The dtype rule (`choose_dtype`), for training, scoring, generation and serving alike: "auto" is bf16 on GPUs
that support it, fp16 on older GPUs, fp32 on CPUs (bf16 moved AUC by up to 0.03 here and was slower on CPUs
without AMX); an explicit dtype is honoured.

Every weight load calls `note_weights_loaded`: with RAYLIB_LOAD_LOG set, it appends one JSON line (what, pid,
node, GPU ids, device) to that file, which is how the tests prove where each step ran.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Callable

import torch

from raylib import RaylibError

LOAD_LOG_ENV = "RAYLIB_LOAD_LOG"
DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
          "fp32": torch.float32, "float32": torch.float32}


# ------------------------------------------------------------------ device and dtype
def device() -> torch.device:
    """The GPU this process was given when it sees CUDA (Ray sets CUDA_VISIBLE_DEVICES), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def choose_dtype(requested: str, on: torch.device | str | None = None) -> torch.dtype:
    """The dtype rule: "auto" = bf16 on a GPU that has it, fp16 on an older GPU, fp32 on a CPU; else as asked."""
    where = torch.device(on) if on is not None else device()
    if requested == "auto":
        if where.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if requested not in DTYPES:
        raise RaylibError(f"dtype {requested!r} is not one of auto, {', '.join(DTYPES)}.")
    return DTYPES[requested]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ------------------------------------------------------------------ where a step runs
@dataclasses.dataclass(frozen=True)
class Placement:
    """The resources of one inference task or actor. `cpus` 0: every core of the largest node."""
    gpus: float = 0.0
    cpus: int = 0
    address: str | None = None  # the job's ray_address (None: RAY_ADDRESS, or a local Ray)

    def resolved_cpus(self) -> int:
        """`cpus`, or 0 resolved: this machine's cores on a local Ray (it has more logical CPUs than cores,
        `runtime.ensure_ray`), the largest node's CPUs on a cluster."""
        if self.cpus > 0:
            return self.cpus
        if self.address or os.environ.get("RAY_ADDRESS"):
            import ray

            return int(max([n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")] or [1])) or 1
        return os.cpu_count() or 1

    def ray_options(self) -> dict[str, float]:
        """`.options(...)` of a task or actor (and a Serve replica's ray_actor_options)."""
        return {"num_cpus": self.resolved_cpus(), "num_gpus": self.gpus}

    def tune_resources(self) -> dict[str, float]:
        """A Tune trial's resources: Ray hides GPUs from a trial that asks for none."""
        return {"cpu": self.resolved_cpus(), "gpu": self.gpus}


def for_job(job) -> Placement:
    """The placement of a job's inference steps, from `train.use_gpu` and the `inference` section."""
    inference = job.inference
    if job.train.use_gpu:
        return Placement(gpus=inference.gpus, cpus=inference.cpus or max(1, job.train.cpus_per_worker),
                         address=job.ray_address)
    return Placement(gpus=0.0, cpus=inference.cpus, address=job.ray_address)


def _call(fn: Callable, threads: int, args: tuple, kwargs: dict) -> Any:
    """Inside the task: math threads = the CPUs it holds (Ray sets OMP_NUM_THREADS too), libraries quiet."""
    from raylib.runtime import quiet_libraries

    torch.set_num_threads(max(1, threads))
    quiet_libraries()
    return fn(*args, **kwargs)


def get(ref) -> Any:
    """`ray.get(ref)`; a user error raised inside (RaylibError) comes back as itself, one line, not a traceback."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, RaylibError):
            raise RaylibError(str(err.cause)) from None
        raise


def run(fn: Callable, *args, placement: Placement, **kwargs) -> Any:
    """`fn(*args, **kwargs)` in a Ray task with `placement`'s resources; its result (or its exception)."""
    import ray

    from raylib.runtime import ensure_ray

    ensure_ray(placement.address)
    options = placement.ray_options()
    task = ray.remote(_call).options(**options, name=getattr(fn, "__name__", "step"), max_retries=0)
    return get(task.remote(fn, int(options["num_cpus"]), args, kwargs))


class _Host:
    """The actor `start` makes: it builds one object and calls its methods (one actor class for every kind)."""

    def __init__(self, cls: type, threads: int, args: tuple, kwargs: dict):
        from raylib.runtime import quiet_libraries

        torch.set_num_threads(max(1, threads))
        quiet_libraries()
        self.obj = cls(*args, **kwargs)

    def call(self, method: str, args: tuple, kwargs: dict) -> Any:
        return getattr(self.obj, method)(*args, **kwargs)


class Placed:
    """A handle on an object living in a Ray actor: `handle.call("method", ...)`, then `close()` (or `with`)."""

    def __init__(self, actor):
        self.actor = actor

    def call(self, method: str, *args, **kwargs) -> Any:
        return get(self.actor.call.remote(method, args, kwargs))

    def close(self) -> None:
        """End the actor as it would end itself: its process exits between calls, after its objects are freed.
        `ray.kill` sends a SIGTERM that can land while the actor's Python is collecting garbage, and the user's
        terminal gets a traceback ("Exception ignored in ... SystemExit: 1"); it stays the fallback for an actor
        that does not end within a minute."""
        import ray

        actor, self.actor = self.actor, None
        if actor is None:
            return
        try:
            ray.get(actor.__ray_terminate__.remote(), timeout=60)
        except ray.exceptions.RayActorError:
            pass  # ended: the call never returns, its actor is gone
        except ray.exceptions.GetTimeoutError:
            ray.kill(actor)

    def __enter__(self) -> "Placed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start(cls: type, *args, placement: Placement, **kwargs) -> Placed:
    """`cls(*args, **kwargs)` built in a Ray actor with `placement`'s resources, for several calls."""
    import ray

    from raylib.runtime import ensure_ray

    ensure_ray(placement.address)
    options = placement.ray_options()
    actor = ray.remote(_Host).options(**options, name=None, max_restarts=0).remote(
        cls, int(options["num_cpus"]), args, kwargs)
    return Placed(actor)


# ------------------------------------------------------------------ what the workers really have
_BACKEND: dict[str, str] = {}  # asked once per driver process (the backend, resolved dtypes)


def _cuda_here() -> bool:
    return torch.cuda.is_available()


def process_group_backend(use_gpu: bool, address: str | None = None) -> str:
    """torch.distributed's backend for training workers: NCCL when GPU workers see CUDA, gloo otherwise (CPU
    workers, or logical GPUs on a CPU machine). Asked once of a task holding a GPU, as a worker would."""
    if not use_gpu:
        return "gloo"
    if "gpu" not in _BACKEND:
        import ray

        from raylib.runtime import ensure_ray

        ensure_ray(address)
        # a sliver of a GPU: it lands where the workers will (a GPU node) without waiting for a whole free card
        has_cuda = ray.get(ray.remote(_cuda_here).options(num_cpus=0, num_gpus=0.01).remote())
        nccl = torch.distributed.is_available() and torch.distributed.is_nccl_available()
        _BACKEND["gpu"] = "nccl" if has_cuda and nccl else "gloo"
    return _BACKEND["gpu"]


def _dtype_here(requested: str) -> str:
    return str(choose_dtype(requested))


def dtype_there(requested: str, placement: Placement) -> str:
    """The dtype `requested` resolves to where `placement`'s steps run (a GPU's bf16 or fp16, a CPU's fp32), as
    `str(torch dtype)`: asked once of a task holding a sliver of a GPU when the steps ask for GPUs."""
    if placement.gpus <= 0:
        return str(choose_dtype(requested, "cpu"))
    key = f"dtype:{requested}"
    if key not in _BACKEND:
        import ray

        from raylib.runtime import ensure_ray

        ensure_ray(placement.address)
        _BACKEND[key] = ray.get(ray.remote(_dtype_here).options(num_cpus=0, num_gpus=0.01).remote(requested))
    return _BACKEND[key]


# ------------------------------------------------------------------ instrumentation
def note_weights_loaded(what: str, on: torch.device | str) -> None:
    """With RAYLIB_LOAD_LOG set: one JSON line saying which process (pid, Ray node, GPU ids) loaded `what`."""
    path = os.environ.get(LOAD_LOG_ENV)
    if not path:
        return
    record = {"what": what, "pid": os.getpid(), "device": str(on), "gpu_ids": [], "node_id": None}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        record["node_id"] = ray.get_runtime_context().get_node_id()
        record["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


def read_load_log(path: str | os.PathLike, start: int = 0) -> list[dict[str, Any]]:
    """The records `note_weights_loaded` appended to `path`, from byte `start` on."""
    with open(path, encoding="utf-8") as log:
        log.seek(start)
        return [json.loads(line) for line in log if line.strip()]
