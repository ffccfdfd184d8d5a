"""Shared command-line shell for jobs: config file + overrides, Ray connection, one-line user errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from raylib import RaylibError

REPO = Path(__file__).resolve().parents[1]


def job_main(config_cls: type, default_config: str, argv: list[str] | None,
             run: Callable[[Any], None]) -> int:
    parser = argparse.ArgumentParser(description=(sys.modules["__main__"].__doc__ or "").strip())
    parser.add_argument("--config", default=str(REPO / default_config), help="YAML config (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's, DeepSpeed's and library logs too")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides, e.g. train.epochs=3")
    args = parser.parse_args(argv)
    from raylib.runtime import set_verbose

    set_verbose(args.verbose)
    try:
        from raylib.config import load_config
        from raylib.runtime import ensure_ray

        config = load_config(config_cls, args.config, args.overrides)
        if hasattr(config, "train"):  # a GPU job that cannot fit (training or inference) stops before any work
            from raylib.plan import check_job_fits

            check_job_fits(config)
        if hasattr(config, "model"):  # a model that cannot be found stops here, before Ray starts
            from raylib.model import check_model_available

            check_model_available(config.model)
        ensure_ray(getattr(config, "ray_address", None))
        run(config)
    except RaylibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
