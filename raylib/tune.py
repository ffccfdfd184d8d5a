"""The one Ray Tune + Optuna helper: a search space from config, a plain objective, a persisted Optuna study.

Every hyper-parameter search of the project goes through `search` (re-weighting exponents, merge coefficients,
routing thresholds). The space is plain config, e.g. `{"gamma": {"type": "uniform", "low": 0, "high": 10}}`; the
objective is a plain function `objective(params, **constants) -> {metric: value, ...}` that Ray Tune runs in
trials, with large constants (numpy arrays) shipped once through Ray's object store (`tune.with_parameters`).
Optuna's TPE proposes the trials and keeps the study in an RDB storage (SQLite under `<output_dir>/tune/` by
default): a rerun with the same storage and study name continues the same study.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable

from raylib import RaylibError, tracking
from raylib.assets import PROJECT_DIR
from raylib.config import TuneSettings
from raylib.runtime import verbose

SPACE_TYPES = ("uniform", "loguniform", "int", "choice")


def space_from_config(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Ray Tune search-space objects from `{name: {"type": uniform|loguniform|int, "low", "high"}}` or
    `{name: {"type": "choice", "values": [...]}}`; an int range includes both ends."""
    from ray import tune

    if not space:
        raise RaylibError("The search space is empty: give at least one parameter.")
    out = {}
    for name, spec in space.items():
        if not isinstance(spec, dict):
            raise RaylibError(f"Search parameter {name!r}: give a mapping with 'type' (got {spec!r}).")
        kind = spec.get("type")
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
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise RaylibError(f"Search parameter {name!r}: needs numbers low < high (got {low!r}, {high!r}).")
        if kind == "uniform":
            out[name] = tune.uniform(low, high)
        elif kind == "loguniform":
            if low <= 0:
                raise RaylibError(f"Search parameter {name!r}: a loguniform range needs low > 0 (got {low}).")
            out[name] = tune.loguniform(low, high)
        else:
            if int(low) != low or int(high) != high:
                raise RaylibError(f"Search parameter {name!r}: an int range needs whole numbers "
                                  f"(got {low!r}, {high!r}).")
            out[name] = tune.randint(int(low), int(high) + 1)  # randint excludes its upper end
    return out


def _trial(params: dict[str, Any], objective: Callable | None = None, constants: dict | None = None,
           metric: str = "") -> None:
    """One Ray Tune trial: evaluate the objective once and report its metrics."""
    import logging

    from ray import tune

    if not verbose():  # a reused trial actor warns on every flush of its closed log files ("ValueError when calling
        logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)  # 'flush' on stream"): Ray's logs only

    metrics = {key: float(value) for key, value in objective(params, **(constants or {})).items()}
    if metric not in metrics:  # else Ray stops the whole search with a long traceback
        raise RaylibError(f"The objective returned {sorted(metrics)}, without the metric {metric!r}.")
    tune.report(metrics)


@contextlib.contextmanager
def _quiet_tune():
    """Ray 2.60's new console output prints a table and paths per experiment even at verbose=0; the legacy
    reporter at verbose=0 prints nothing. RAYLIB_VERBOSE keeps Ray's own output."""
    if verbose():
        yield
        return
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def search(objective: Callable[..., dict[str, float]], space: dict[str, dict[str, Any]], *, metric: str,
           mode: str, settings: TuneSettings, output_dir: Path, study_name: str,
           constants: dict[str, Any] | None = None, resources: dict[str, float] | None = None) -> dict[str, Any]:
    """Search `space` for the params that maximise (mode="max") or minimise `metric` of `objective`.

    The study persists (`settings.storage`, default `output_dir/tune/optuna.db`) and `settings.num_samples` is its
    size: a run starts only the trials the study still lacks, at most `settings.max_concurrent` at a time, each
    with `resources` (default half a CPU: the objective is meant to be light). So a killed search resumes, a
    finished one answers at once with the same params, and a larger `num_samples` extends it. The study is the
    same only for the same search: its name carries a digest of everything the trials' values depend on (the
    objective, the space, the metric and mode, every constant: data, budgets, settings), so a changed budget,
    range or data starts a new study instead of answering with values that no longer hold. Returns a
    JSON-serialisable summary: the study's best params and value, which of them lie at an edge of their range
    (`at_edge`), the trials run now and in the whole study, where the study is stored.
    """
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    if mode not in ("max", "min"):
        raise RaylibError(f"mode must be 'max' or 'min' (got {mode!r}).")
    output_dir = Path(output_dir).expanduser().resolve()
    (output_dir / "tune").mkdir(parents=True, exist_ok=True)
    study_name = f"{study_name}-{search_digest(objective, space, metric, mode, constants or {})}"
    url = settings.storage or f"sqlite:///{output_dir / 'tune' / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    start = time.time()
    missing = settings.num_samples - len(_completed(study_name, storage))
    if missing > 0:
        searcher = OptunaSearch(OptunaSearch.convert_search_space(space_from_config(space)), metric=metric,
                                mode=mode, seed=settings.seed, study_name=study_name, storage=storage)
        trainable = tune.with_parameters(_trial, objective=objective, constants=constants or {}, metric=metric)
        with _quiet_tune():
            tuner = tune.Tuner(
                tune.with_resources(trainable, resources or {"cpu": 0.5}),
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent),
                    num_samples=missing, reuse_actors=True),
                run_config=tune.RunConfig(storage_path=str(output_dir / "tune"), name=study_name, verbose=0,
                                          log_to_file=True, callbacks=tracking.tune_callbacks(study_name)),
            )
            results = tuner.fit()
        if not any(r.metrics and metric in r.metrics for r in results):
            errors = [_what_failed(r.error) for r in results if r.error is not None][:1]
            raise RaylibError(f"The search {study_name!r} finished no trial that reported {metric!r}"
                              f"{' (first error: ' + errors[0] + ')' if errors else ''}.")
    best = optuna.load_study(study_name=study_name, storage=storage).best_trial  # the study's own direction
    best_params = {name: _plain(best.params[name]) for name in space}
    return {"best_params": best_params, "at_edge": edges(space, best_params),
            "best_value": float(best.value), "metric": metric, "mode": mode,
            "trials": max(missing, 0), "study_trials": len(_completed(study_name, storage)), "storage": _shown(url),
            "study_name": study_name, "seconds": round(time.time() - start, 3)}


def search_digest(objective: Callable, space: dict[str, Any], metric: str, mode: str,
                  constants: dict[str, Any]) -> str:
    """sha1 (16 hex digits) of what a search's trial values depend on: the objective's name, the space, the
    metric and mode, and every constant (arrays by dtype, shape and bytes; configs by `key_form`)."""
    import dataclasses
    import hashlib

    from raylib.config import key_form

    import numpy as np

    digest = hashlib.sha1()

    def feed(value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a config, as cache keys hold it
            value = key_form(value)
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            digest.update(f"array{value.dtype}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(f"key:{key}".encode())
                feed(value[key])
        elif isinstance(value, (list, tuple, set)):
            items = sorted(value, key=repr) if isinstance(value, set) else value
            digest.update(f"seq{len(items)}".encode())
            for item in items:
                feed(item)
        else:
            digest.update(repr(value).encode())

    feed({"objective": f"{objective.__module__}.{objective.__qualname__}", "space": space, "metric": metric,
          "mode": mode, "constants": constants})
    return digest.hexdigest()[:16]


def _completed(study_name: str, storage) -> list:
    """The finished trials of a persisted Optuna study (none when there is no such study yet)."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return []
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]


def edges(space: dict[str, dict[str, Any]], params: dict[str, Any], margin: float = 0.02) -> dict[str, str]:
    """The numeric parameters whose value lies within `margin` of its range's low or high end (on a log scale for
    a loguniform range): {name: "low" | "high"}. An optimum at an edge says the range was too narrow."""
    import math

    out = {}
    for name, spec in space.items():
        if spec.get("type") not in ("uniform", "loguniform", "int") or name not in params:
            continue
        scale = math.log if spec["type"] == "loguniform" else float
        low, high, value = scale(spec["low"]), scale(spec["high"]), scale(params[name])
        position = (value - low) / (high - low)
        if position <= margin:
            out[name] = "low"
        elif position >= 1 - margin:
            out[name] = "high"
    return out


def _what_failed(error: BaseException) -> str:
    """The innermost line that says what went wrong (Ray wraps a trial's exception in its own)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _plain(value: Any) -> Any:
    """numpy scalars to Python numbers, so the summary is JSON."""
    import numpy as np

    return value.item() if isinstance(value, np.generic) else value


def _shown(url: str) -> str:
    """The storage URL as it goes into reports: no password; a SQLite file under the working folder relative
    to it (reports then name no machine's path)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    if url.startswith("sqlite:////"):
        path = Path(url[len("sqlite:///"):])
        for base in (Path.cwd(), PROJECT_DIR):  # the working folder or this project
            if path.is_relative_to(base):
                return f"sqlite:///{path.relative_to(base)}"
    return url
