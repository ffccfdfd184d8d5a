"""Pipelines that resume: each finished stage's result is kept as JSON under a key of what produced it.

Every state file a rerun reads (stage caches, `finished.json`, `run.json`, a job's `report.json`, the MLflow run
it continues) is written by `write_json`: a unique temporary file, flushed to disk, renamed over the old one. A
kill or a full disk mid-write leaves the old file or none, never half of one; and `read_json` takes a file it
cannot read as absent (a cache miss), not as a traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator


def write_json(path: str | Path, value: Any, indent: int | None = 1) -> Path:
    """`value` as JSON at `path`, atomically and durably (see the module docstring)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(json.dumps(value, indent=indent, default=str))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_json(path: str | Path) -> Any | None:
    """The JSON at `path`; None when there is none or it cannot be read (cut short by a kill, say)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def file_sha1(path: str | Path) -> str:
    """The SHA-1 of a file's bytes: what a cached stage's key holds for a model or an adapter it used."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def cached_value(path: Path, key: dict[str, Any]) -> Any | None:
    """The result kept in `path` for this `key`, or None (none kept, another key's, or a file cut short)."""
    saved = read_json(path)
    if isinstance(saved, dict) and saved.get("key") == _key_hash(key) and "value" in saved:
        return saved["value"]
    return None


def keep(path: Path, key: dict[str, Any], value: Any) -> Any:
    """Write `value` to `path` under `key` (`write_json`); returns it."""
    write_json(path, {"key": _key_hash(key), "value": value}, indent=None)
    return value


def cached_stage(path: Path, key: dict[str, Any], compute):
    """`compute()` unless `path` holds its result for the same `key` (JSON); the result is written atomically."""
    value = cached_value(path, key)
    return value if value is not None else keep(path, key, compute())


LOCK_FILE = ".raylib.lock"
_HELD: dict[str, int] = {}  # folder -> how deep this process holds it (a job's stages train inside its folder)


@contextlib.contextmanager
def folder_in_use(folder: str | Path) -> Iterator[Path]:
    """Hold `<folder>/.raylib.lock` while a job writes into `folder`: a second job started into the same folder
    stops at once with one line (the pid holding it) instead of interleaving checkpoints and MLflow runs. An
    `flock`, so the kernel releases it when its holder dies (no stale lock after a kill); re-entered freely by
    the process that holds it."""
    import fcntl

    from raylib import RaylibError

    path = Path(folder).expanduser().resolve()
    key = str(path)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield path
        finally:
            _HELD[key] -= 1
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RaylibError(f"output_dir {path} is in use by another job (pid {holder}): wait for it to end, or "
                          "give this one another output_dir.") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _HELD[key] = 1
    try:
        yield path
    finally:
        del _HELD[key]
        os.close(fd)  # releases the lock
