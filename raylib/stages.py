"""Pipelines that resume: each finished stage's result is kept as JSON under a key of what produced it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha1(path: str | Path) -> str:
    """The SHA-1 of a file's bytes: what a cached stage's key holds for a model or an adapter it used."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def cached_value(path: Path, key: dict[str, Any]) -> Any | None:
    """The result kept in `path` for this `key`, or None."""
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == _key_hash(key):
            return saved["value"]
    return None


def keep(path: Path, key: dict[str, Any], value: Any) -> Any:
    """Write `value` to `path` under `key` (JSON, atomically); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": _key_hash(key), "value": value}))
    tmp.replace(path)
    return value


def cached_stage(path: Path, key: dict[str, Any], compute):
    """`compute()` unless `path` holds its result for the same `key` (JSON); the result is written atomically."""
    value = cached_value(path, key)
    return value if value is not None else keep(path, key, compute())
