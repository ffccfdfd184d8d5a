"""Where Ray Train keeps a run's checkpoints: a local folder, an NFS mount or an object store URI.

Any pyarrow filesystem URI works (s3://bucket/prefix, gs://bucket/prefix, file:///abs/path); a plain path is a
local or network-mounted folder. On several nodes every worker uploads its own checkpoint files, so all of them
must see the same storage: a node-local folder would split a checkpoint across machines (Ray Train then fails
at the first report with a message about a missing marker file). `check_shared` finds that before training.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from raylib import RaylibError

RUN_NAME = "train"  # Ray Train's run folder under the storage path


def storage_path(job) -> str:
    """The job's storage: `train.storage_path`, or `<output_dir>/ray`; plain paths made absolute."""
    chosen = job.train.storage_path or str(Path(job.output_dir).expanduser() / "ray")
    return chosen if is_uri(chosen) else str(Path(chosen).expanduser().resolve())


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


def has_file_named(storage: str, name: str) -> bool:
    """True when a file called `name` is anywhere under the run folder (a checkpoint's state file)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(storage)
    base = f"{root.rstrip('/')}/{RUN_NAME}"
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return False
    return any(i.base_name == name for i in fs.get_file_info(pafs.FileSelector(base, recursive=True)))


def discard(storage: str) -> None:
    import pyarrow.fs as pafs

    fs, root = filesystem(storage)
    if fs.get_file_info(root).type == pafs.FileType.Directory:
        fs.delete_dir(root)


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
