"""Where Ray Train keeps a run's checkpoints: a local folder, an NFS mount or an object store URI.

Any pyarrow filesystem URI works (s3://bucket/prefix, gs://bucket/prefix, file:///abs/path); a plain path is a
local or network-mounted folder. On several nodes every worker uploads its own checkpoint files, so all of them
must see the same storage: a node-local folder would split a checkpoint across machines (Ray Train then fails
at the first report with a message about a missing marker file). `check_shared` finds that before training.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

from raylib import RaylibError

RUN_NAME = "train"  # Ray Train's run folder under the default storage path (`<output_dir>/ray`)
RUN_MARKER = ".raylib-run.json"  # written by this project into each run folder it makes: what it may delete


def storage_path(job) -> str:
    """The job's storage: `train.storage_path`, or `<output_dir>/ray`; plain paths made absolute."""
    chosen = job.train.storage_path or str(Path(job.output_dir).expanduser() / "ray")
    return chosen if is_uri(chosen) else str(Path(chosen).expanduser().resolve())


def run_name(job) -> str:
    """The run's own folder under its storage. Under the default `<output_dir>/ray`, "train"; under a
    `train.storage_path` that many runs share (an NFS mount, an s3:// prefix), a name derived from the run's
    output_dir (every stage of a pipeline has its own), so that no run resumes, or deletes, another's."""
    if not job.train.storage_path:
        return RUN_NAME
    output = Path(job.output_dir).expanduser().resolve()
    return f"{output.name}-{hashlib.sha1(str(output).encode()).hexdigest()[:16]}"


def is_uri(path: str) -> bool:
    return "://" in path


def filesystem(storage: str):
    """(pyarrow filesystem, path inside it) for a storage path or URI."""
    import pyarrow.fs as pafs

    if not is_uri(storage):
        return pafs.LocalFileSystem(), storage
    try:
        return pafs.FileSystem.from_uri(storage)
    except Exception as e:  # noqa: BLE001  (pyarrow raises several types for bad or unreachable URIs)
        raise RaylibError(f"train.storage_path {storage!r}: pyarrow cannot open it ({e}).") from e


def has_file_named(storage: str, run: str, name: str) -> bool:
    """True when a file called `name` is anywhere under the run's folder (a checkpoint's state file)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(storage)
    base = f"{root.rstrip('/')}/{run}"
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return False
    return any(i.base_name == name for i in fs.get_file_info(pafs.FileSelector(base, recursive=True)))


def mark(storage: str, run: str, owner: dict[str, str]) -> None:
    """Write `RUN_MARKER` into the run's folder: this project made it (and `discard` may delete it)."""
    fs, root = filesystem(storage)
    base = f"{root.rstrip('/')}/{run}"
    fs.create_dir(base, recursive=True)
    with fs.open_output_stream(f"{base}/{RUN_MARKER}") as out:
        out.write(json.dumps(owner).encode())


def discard(storage: str, run: str, ours: bool = False) -> None:
    """Delete the run's own folder under the storage (never the storage itself, nor another run's), and only
    when this project made it: it holds `RUN_MARKER`, or the caller knows it is ours (`ours`: the default layout
    inside an output_dir whose run.json says so). Anything else is refused with one line."""
    import pyarrow.fs as pafs

    fs, root = filesystem(storage)
    base = f"{root.rstrip('/')}/{run}"
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return
    if not ours and fs.get_file_info(f"{base}/{RUN_MARKER}").type != pafs.FileType.File:
        raise RaylibError(f"train.fresh_start: {base} holds no {RUN_MARKER}, so raylib did not make it (or an "
                          "older raylib did); it is left alone: delete it yourself if it is this run's.")
    fs.delete_dir(base)


def check_shared(storage: str) -> None:
    """On a cluster of several nodes, a local storage path must be the same folder on all of them (NFS):
    write a marker here and ask one task pinned to every other alive node whether it sees it."""
    import ray

    if is_uri(storage) and not storage.startswith("file://"):
        return  # an object store is shared by construction
    local = storage.removeprefix("file://")
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != ray.get_runtime_context().get_node_id()]
    if not nodes:
        return
    Path(local).mkdir(parents=True, exist_ok=True)
    marker = Path(local) / f".shared-check-{uuid.uuid4().hex}"
    marker.write_text("raylib")
    try:
        blind = nodes_missing(str(marker), nodes)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise RaylibError(shared_storage_error(storage, blind))


def nodes_missing(marker: str, nodes: list[dict]) -> list[str]:
    """Addresses of the nodes on which `marker` does not exist."""
    import os

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    checks = [sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(marker)
              for n in nodes]
    return [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(nodes, ray.get(checks, timeout=120)) if not ok]


def shared_storage_error(storage: str, blind: list[str]) -> str:
    return (f"train.storage_path {storage} is not shared: node(s) {', '.join(blind)} cannot see it. Training on "
            "several nodes needs storage every node sees: an NFS mount at the same path on every node, or an "
            "object store URI (train.storage_path=s3://bucket/prefix or gs://...).")
