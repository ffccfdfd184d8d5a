"""Data at scale: `python -m jobs.bench_scale_data [--config FILE] [field=value ...]`, the same as `raylib bench scale-data`."""

from __future__ import annotations

import sys

from jobs.cli import run_entry


def main(argv: list[str] | None = None) -> int:
    return run_entry("bench", "scale-data", argv)


if __name__ == "__main__":
    sys.exit(main())
