"""Reliability and security: `python -m jobs.bench_reliability [--config FILE] [field=value ...]`, the same as `raylib bench reliability`."""

from __future__ import annotations

import sys

from jobs.cli import run_entry


def main(argv: list[str] | None = None) -> int:
    return run_entry("bench", "reliability", argv)


if __name__ == "__main__":
    sys.exit(main())
