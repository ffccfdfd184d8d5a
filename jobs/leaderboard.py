"""The leaderboard: `python -m jobs.leaderboard [--config FILE] [section.field=value ...]`, the same as `raylib bench leaderboard`."""

from __future__ import annotations

import sys

from jobs.cli import run_entry


def main(argv: list[str] | None = None) -> int:
    return run_entry("bench", "leaderboard", argv)


if __name__ == "__main__":
    sys.exit(main())
