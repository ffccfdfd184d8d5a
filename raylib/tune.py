"""The one Ray Tune + Optuna helper: a search space from config, an objective, a persisted Optuna study.

Every search in the project goes through `search` (BIGRec's gamma, RecCocktail's merge weights, CoReLLa's
routing threshold). The space is plain config (`{"gamma": {"type": "uniform", "low": 0, "high": 10}}`), the
objective a plain function `objective(params, **constants) -> {metric: value}` run in Ray Tune trials, large
constants shipped once through Ray's object store (`tune.with_parameters`). The Optuna study lives in an RDB
storage (SQLite under `<output_dir>/tune/` by default): a rerun with the same study name continues it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from raylib import RaylibError
from raylib.config import TuneSettings

SPACE_TYPES = ("uniform", "loguniform", "int", "choice")


def space_from_config(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ray Tune search-space objects from `{name: {"type": ..., "low"/"high" or "values"}}`."""
    from ray import tune

    if not space:
        raise RaylibError("The search space is empty: give at least one parameter.")
    out = {}
    for name, spec in space.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in SPACE_TYPES:
            raise RaylibError(f"Search parameter {name!r}: type must be one of {', '.join(SPACE_TYPES)} "
                              f"(got {kind!r}).")
        if kind == "choice":
            values = spec.get("values")
            if not isinstance(values, list) or not values:
                raise RaylibError(f"Search parameter {name!r}: a choice needs a non-empty list 'values'.")
            out[name] = tune.choice(values)
            continue
        low, high = spec.get("low"), spec.get("high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not low < high:
            raise RaylibError(f"Search parameter {name!r}: needs numbers low < high (got {low!r}, {high!r}).")
        if kind == "loguniform" and low <= 0:
            raise RaylibError(f"Search parameter {name!r}: a loguniform range needs low > 0 (got {low}).")
        out[name] = {"uniform": tune.uniform, "loguniform": tune.loguniform,
                     "int": lambda a, b: tune.randint(int(a), int(b) + 1)}[kind](low, high)
    return out


def _trial(config: dict[str, Any], objective: Callable = None, constants: dict[str, Any] | None = None) -> None:
    from ray import tune

    tune.report(dict(objective(config, **(constants or {}))))


def search(objective: Callable[..., dict[str, float]], space: dict[str, dict[str, Any]], *, metric: str,
           mode: str, settings: TuneSettings, output_dir: Path, study_name: str,
           constants: dict[str, Any] | None = None) -> dict[str, Any]:
    """Search `space` for the params maximising (mode="max") or minimising `metric` of `objective`; returns
    the best params and value, the number of trials run now, and where the study is stored."""
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    if mode not in ("max", "min"):
        raise RaylibError(f"mode must be 'max' or 'min' (got {mode!r}).")
    output_dir = Path(output_dir).expanduser().resolve()
    (output_dir / "tune").mkdir(parents=True, exist_ok=True)
    url = settings.storage or f"sqlite:///{output_dir / 'tune' / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = OptunaSearch(space_from_config(space), metric=metric, mode=mode, seed=settings.seed,
                            study_name=study_name, storage=optuna.storages.RDBStorage(url))
    trainable = tune.with_parameters(_trial, objective=objective, constants=constants or {})
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 0.5}),
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent),
                                    num_samples=settings.num_samples, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(output_dir / "tune"), name=study_name, verbose=0,
                                  log_to_file=True),
    )
    start = time.time()
    results = tuner.fit()
    try:
        best = results.get_best_result(metric=metric, mode=mode)
    except RuntimeError:  # no trial reported the metric
        errors = [str(r.error).strip().splitlines()[-1] for r in results if r.error is not None][:1]
        raise RaylibError(f"No trial of the {study_name!r} search reported {metric!r}"
                          f"{': ' + errors[0] if errors else ''}.") from None
    return {"best_params": {k: best.config[k] for k in space}, "best_value": float(best.metrics[metric]),
            "metric": metric, "mode": mode, "trials": len(results), "storage": _shown(url),
            "study_name": study_name, "seconds": time.time() - start}


def _shown(url: str) -> str:
    """The storage URL with any password removed (it goes into reports)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url if not url.startswith("sqlite:///") else "sqlite:///" + os.path.relpath(url[10:])
