"""What every benchmark does with its report: where it lies (a relative path is under the project, so a run
from any folder writes the committed file), reading back what a partial run wrote, and writing it with its
PNG and Markdown. The JSON is written atomically (`raylib.stages.write_json`): a killed run leaves the last
complete report, which the next run resumes from. A resumable benchmark also keeps the time every invocation
spent in its output folder (`time_spent`): its cost from nothing, across stops, and the commits that ran."""

from __future__ import annotations

import json
import time
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


INVOCATIONS_FILE = "invocations.json"


def _invocations(folder: Path) -> list[dict[str, float]] | None:
    """The folder's ledger; None when there is none or it is not one (then it starts again)."""
    from raylib.stages import read_json

    runs = read_json(folder / INVOCATIONS_FILE)
    ok = isinstance(runs, list) and all(isinstance(r, dict) and isinstance(r.get("started"), (int, float)) and
                                        isinstance(r.get("last_seen"), (int, float)) for r in runs)
    return runs if ok else None


def code_version() -> str | None:
    """The project's commit (`git rev-parse --short HEAD`, with "+changes" when tracked files differ from it), or
    None outside a git checkout: a run resumed over several stops may have run several."""
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(PROJECT_DIR), *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return None
        changed = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+changes" if changed else "")


def invocation_started(folder: Path, started: float) -> None:
    """Adds this invocation (begun at `started`, a `time.time()`, by the code of `code_version`) to
    `<folder>/invocations.json`: a resumable benchmark's stops and resumes, so its cost from nothing is known
    after any number of them (`time_spent`)."""
    from raylib.stages import write_json

    runs = _invocations(folder)
    if runs is None and (folder / INVOCATIONS_FILE).exists():
        print(f"[bench] {folder / INVOCATIONS_FILE} is not a ledger of invocations: the time spent is counted "
              "from this one", flush=True)
    write_json(folder / INVOCATIONS_FILE, [*(runs or []), {"started": started, "last_seen": time.time(),
                                                          "code": code_version()}])


def time_spent(folder: Path, now: float | None = None) -> dict[str, Any]:
    """Marks the latest invocation alive at `now` (default: now); {seconds: the wall seconds of every invocation
    into `folder` (a killed one to its last mark), invocations: how many, code: the commits they ran, in order
    (None: not recorded)}. With the folder made from nothing, the benchmark's cost from nothing, however often
    it was stopped; a rerun that finds every stage kept adds its own seconds only. Bookkeeping: a ledger it
    cannot read or write never stops the benchmark."""
    from raylib.stages import write_json

    runs = _invocations(folder)
    if not runs:
        return {"seconds": None, "invocations": 0, "code": []}
    runs[-1]["last_seen"] = time.time() if now is None else now
    try:
        write_json(folder / INVOCATIONS_FILE, runs)
    except OSError:
        pass
    return {"seconds": float(sum(r["last_seen"] - r["started"] for r in runs)), "invocations": len(runs),
            "code": list(dict.fromkeys(r.get("code") for r in runs))}
