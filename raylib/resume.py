"""Pipelines that resume: each finished stage's result is kept as JSON under a key of what produced it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def cached_stage(path: Path, key: dict[str, Any], compute):
    """`compute()` unless `path` holds its result for the same `key` (JSON); the result is written atomically."""
    key_hash = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key_hash:
            return saved["value"]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key_hash, "value": value}))
    tmp.replace(path)
    return value
