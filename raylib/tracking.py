"""Experiment tracking with MLflow: every job is a run, every training stage inside it a child run.

Local by default: a SQLite store `<output_dir>/mlflow.db` with artifacts beside it in `<output_dir>/mlartifacts`
(no server; MLflow 3 refuses its old file store, and SQLite is its default); `tracking.tracking_uri` names another
store, e.g. a real `mlflow server` (`http://host:5000`). See the runs with
    mlflow ui --backend-store-uri sqlite:///<output_dir>/mlflow.db     (`pip install mlflow`: the UI's server)

What is logged:
  job run     the job's config (flattened `section.field` params), its report's numbers, `report.json`
  stage run   a child of the job's run, per `raylib.train.driver.train` call: the fingerprinted settings as params,
              per-epoch metrics from rank 0 (loss, validation metric, tokens/s, lr), the final metrics, and the
              published adapter or model folder as artifacts
  Tune trial  a child run per trial (Ray Tune's `MLflowLoggerCallback`)
A run's id is kept in its folder (`mlflow_run.json`): a job or stage resumed after a crash continues its run.
`tracking.enabled: false` turns it all off (`RAYLIB_TRACKING=off` in the environment: the default of that switch).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

from pydantic.dataclasses import dataclass

from raylib import RaylibError
from raylib.config import TrackingSettings, redacted
from raylib.stages import read_json, write_json

RUN_FILE = "mlflow_run.json"  # a job's run id, in its output_dir
STAGE_RUN_FILE = "mlflow_train_run.json"  # a training stage's, in the stage's output_dir (may be the job's)


@dataclass
class Run:
    """An open MLflow run: where it is stored and its id (what a Ray worker needs to log into it)."""
    uri: str
    run_id: str
    experiment_id: str


_ACTIVE: list[Run | None] = []  # the job runs open in this process (None: a job with tracking off)


def store_uri(settings: TrackingSettings, output_dir: str | Path) -> str:
    if settings.tracking_uri:
        return settings.tracking_uri
    return f"sqlite:///{Path(output_dir).expanduser().resolve() / 'mlflow.db'}"


def _client(uri: str):
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):  # its INFO lines on creating tables stay out of the job's terminal
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _experiment(client, name: str, artifacts: Path | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = artifacts.as_uri() if artifacts is not None else None
    return client.create_experiment(name, artifact_location=location)


def open_run(settings: TrackingSettings, folder: str | Path, name: str, params: dict[str, Any],
             parent: Run | None = None, run_file: str = RUN_FILE) -> Run:
    """The run kept in `folder/<run_file>` when it is in this store (a resumed job continues it), else a new
    one (a child of `parent` where given) with `params`."""
    folder = Path(folder).expanduser().resolve()
    uri = parent.uri if parent else store_uri(settings, folder)
    client = _client(uri)
    saved = folder / run_file
    kept = read_json(saved)  # None when there is none or it was cut short: a new run then
    if isinstance(kept, dict):
        if kept.get("uri") == uri and _exists(client, kept.get("run_id")):
            client.update_run(kept["run_id"], status="RUNNING")
            return Run(uri, kept["run_id"], kept["experiment_id"])
    local = None if settings.tracking_uri and not uri.startswith("sqlite") else folder / "mlartifacts"
    experiment = parent.experiment_id if parent else _experiment(client, settings.experiment, local)
    tags = {"mlflow.parentRunId": parent.run_id} if parent else {}
    run = client.create_run(experiment, run_name=name, tags=tags)
    run_id = run.info.run_id
    log_params(Run(uri, run_id, experiment), params)
    write_json(saved, {"uri": uri, "run_id": run_id, "experiment_id": experiment})
    return Run(uri, run_id, experiment)


def _exists(client, run_id: str | None) -> bool:
    if not run_id:
        return False
    try:
        client.get_run(run_id)
        return True
    except Exception:  # noqa: BLE001 - MLflow raises its own exception for an unknown run
        return False


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}; lists and other leaves as they are."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def log_params(run: Run, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    shown = [Param(k, json.dumps(v, default=str)[:6000] if not isinstance(v, str) else v[:6000])
             for k, v in flatten(redacted(params)).items()]  # no URL's credentials in MLflow
    client = _client(run.uri)
    for start in range(0, len(shown), 100):  # MLflow's batch limit
        client.log_batch(run.run_id, params=shown[start:start + 100])


def numbers(values: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a (nested) report, flattened: what can be a metric."""
    return {k: float(v) for k, v in flatten(values).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def log_metrics(run: Run, metrics: dict[str, Any], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [Metric(_metric_name(k), v, now, step) for k, v in numbers(metrics).items()]
    client = _client(run.uri)
    for start in range(0, len(rows), 1000):
        client.log_batch(run.run_id, metrics=rows[start:start + 1000])


def _metric_name(key: str) -> str:
    """MLflow allows letters, digits, _ - . space / in names: "ndcg@10" -> "ndcg_at_10"."""
    return key.replace("@", "_at_")


def log_artifacts(run: Run, *paths: str | Path) -> None:
    client = _client(run.uri)
    for path in map(Path, paths):
        if path.is_dir():
            client.log_artifacts(run.run_id, str(path), artifact_path=path.name)
        elif path.is_file():
            client.log_artifact(run.run_id, str(path))


def log_report(run: Run, report: dict[str, Any], output_dir: Path) -> None:
    """A finished job's numbers as metrics and its report file(s) as artifacts."""
    log_metrics(run, report)
    path = Path(report.get("report_path") or output_dir / "report.json")
    log_artifacts(run, path, path.with_suffix(".png"), path.with_suffix(".md"))


def close(run: Run, status: str = "FINISHED") -> None:
    _client(run.uri).set_terminated(run.run_id, status=status)


@contextlib.contextmanager
def job_run(settings: TrackingSettings | None, folder: str | Path, name: str,
            params: dict[str, Any]) -> Iterator[Run | None]:
    """A job's run, open while the job runs (its training stages become its children); FAILED if it raises.
    Inside another job's run (the leaderboard's methods) it is that run's child."""
    parent = _ACTIVE[-1] if _ACTIVE else None
    if settings is None or not settings.enabled or (_ACTIVE and parent is None):
        _ACTIVE.append(None)
        try:
            yield None
        finally:
            _ACTIVE.pop()
        return
    try:
        run = open_run(settings, folder, name, params, parent)
    except Exception as err:  # noqa: BLE001 - an unreachable or malformed store: one line, before any work
        raise RaylibError(f"tracking: cannot open an MLflow run in {store_uri(settings, folder)} "
                          f"({str(err).splitlines()[0][:160]}); fix tracking.tracking_uri or set "
                          "tracking.enabled=false.") from None
    _ACTIVE.append(run)
    try:
        yield run
    except BaseException:
        close(run, "FAILED")
        raise
    finally:
        _ACTIVE.pop()
    close(run)


def stage_run(settings: TrackingSettings, folder: str | Path, name: str, params: dict[str, Any]) -> Run | None:
    """A training stage's run: the child of the open job run, or on its own when `train` is called outside a
    job; None when tracking is off (for the job, or for this call)."""
    if _ACTIVE:
        parent = _ACTIVE[-1]
        return None if parent is None else open_run(settings, folder, name, params, parent, STAGE_RUN_FILE)
    return open_run(settings, folder, name, params, run_file=STAGE_RUN_FILE) if settings.enabled else None


def tune_callbacks(search_name: str) -> list:
    """Ray Tune's MLflow integration for a search inside a tracked job: each trial a child run of the job's."""
    if not _ACTIVE or _ACTIVE[-1] is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TrialLogger(MLflowLoggerCallback):
        """Ray Tune's MLflow logger, with metric names MLflow accepts (a trial's "ndcg@10" -> "ndcg_at_10")."""

        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(iteration, trial, {_metric_name(k): v for k, v in result.items()})

    run = _ACTIVE[-1]
    experiment = _client(run.uri).get_experiment(run.experiment_id).name
    return [TrialLogger(tracking_uri=run.uri, experiment_name=experiment,
                        tags={"mlflow.parentRunId": run.run_id, "search": search_name})]


def worker_logger(run: dict[str, str] | None):
    """Rank 0's per-epoch logger inside a Ray Train worker: `log(record, epoch)`; a store the worker cannot
    reach (a node-local SQLite file seen from another node) is one warning, and training goes on."""
    if not run:
        return lambda record, epoch: None
    opened = Run(**run)
    failed: list[str] = []

    def log(record: dict[str, Any], epoch: int) -> None:
        if failed:
            return
        try:
            log_metrics(opened, {k: v for k, v in record.items() if k != "finished_at"}, step=epoch)
        except Exception as err:  # noqa: BLE001 - tracking never stops training
            failed.append(str(err))
            print(f"[tracking] rank 0 cannot log to {opened.uri} ({str(err).splitlines()[0][:120]}); "
                  "training goes on without per-epoch metrics", flush=True)

    return log
