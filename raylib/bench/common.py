"""What every benchmark does with its report: where it lies (a relative path is under the project, so a run
from any folder writes the committed file), reading back what a partial run wrote, and writing it with its
PNG and Markdown. The JSON is written atomically (`raylib.stages.write_json`): a killed run leaves the last
complete report, which the next run resumes from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from raylib.assets import PROJECT_DIR


def report_path(report: str | Path) -> Path:
    path = Path(report).expanduser()
    return path if path.is_absolute() else PROJECT_DIR / path


def read_report(path: Path) -> dict[str, Any]:
    """The report a previous run saved at `path`; {} when there is none or it cannot be read."""
    from raylib.stages import read_json

    found = read_json(path)
    return found if isinstance(found, dict) else {}


def write_report(report: dict[str, Any], path: Path, plot: Callable[[dict[str, Any], Path], None] | None = None,
                 markdown: Callable[[dict[str, Any]], str] | None = None) -> Path:
    """`report` as JSON at `path`, then `plot(report, <path>.png)` and `markdown(report)` in `<path>.md`."""
    from raylib.stages import write_json

    write_json(path, json.loads(json.dumps(report, default=_plain)))
    if plot is not None:
        plot(report, path.with_suffix(".png"))
    if markdown is not None:
        path.with_suffix(".md").write_text(markdown(report))
    return path


def _plain(value: Any) -> Any:
    """numpy (and torch) numbers and arrays as JSON numbers and lists; anything else (paths, dtypes) as text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)
