"""The one Ray Tune + Optuna helper: a search space from config, a persisted study, clear errors.

A search is `search(objective, space, metric=..., mode=..., settings=TuneSettings(...), output_dir=...,
study_name=...)`; the objective is a plain function of the params and of constants shipped once to the trials.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from raylib import RaylibError
from raylib.config import TrackingSettings, TuneSettings
from raylib.tune import edges, search, space_from_config

SPACE = {"x": {"type": "uniform", "low": -4.0, "high": 4.0}}


def closeness(params, target=None):
    """A stand-in objective: minus the squared distance of x to a point given as a (numpy) constant (and a metric
    named as ranking metrics are, which MLflow only takes renamed)."""
    return {"score": -float((params["x"] - target[0]) ** 2), "x": params["x"], "hit@1": float(abs(params["x"]) < 1)}


def test_search_finds_the_optimum_and_resumes_the_persisted_study(ray_session, tmp_path):
    import optuna
    import ray.cloudpickle

    # Ray's workers cannot import a test module: ship this module's functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    constants = {"target": np.array([1.5])}
    first = search(closeness, SPACE, metric="score", mode="max", settings=TuneSettings(num_samples=12, seed=0),
                   output_dir=tmp_path, study_name="quadratic", constants=constants)
    assert first["trials"] == 12 and first["study_trials"] == 12
    assert abs(first["best_params"]["x"] - 1.5) < 0.5
    assert first["best_value"] == pytest.approx(-(first["best_params"]["x"] - 1.5) ** 2)
    assert first["storage"].startswith("sqlite:///") and first["study_name"].startswith("quadratic-")  # + digest
    assert first["at_edge"] == {}  # the optimum lies inside the range
    json.dumps(first)  # the summary goes into reports as it is

    # num_samples is the study's size: the same search again runs nothing and answers the same
    rerun = search(closeness, SPACE, metric="score", mode="max", settings=TuneSettings(num_samples=12, seed=0),
                   output_dir=tmp_path, study_name="quadratic", constants=constants)
    assert rerun["trials"] == 0 and rerun["best_params"] == first["best_params"]
    # a larger one extends the study; its trials are all in the SQLite file, the answer is the best of them.
    # Inside a tracked job, each new trial is an MLflow child run of the job's run (Ray Tune's MLflow callback).
    from raylib import tracking

    with tracking.job_run(TrackingSettings(enabled=True), tmp_path / "job", "a job", {"x": 1}) as job:
        again = search(closeness, SPACE, metric="score", mode="max", settings=TuneSettings(num_samples=16, seed=1),
                       output_dir=tmp_path, study_name="quadratic", constants=constants)
    assert again["trials"] == 4 and again["study_trials"] == 16
    from mlflow.tracking import MlflowClient

    trials = MlflowClient(job.uri).search_runs([job.experiment_id], f"tags.mlflow.parentRunId = '{job.run_id}'")
    assert len(trials) == 4 and all("score" in t.data.metrics and "x" in t.data.params for t in trials)
    assert all("hit_at_1" in t.data.metrics for t in trials)  # "hit@1", as MLflow names it (`tracking._metric_name`)
    study = optuna.load_study(study_name=again["study_name"], storage=f"sqlite:///{tmp_path / 'tune' / 'optuna.db'}")
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 16
    assert again["best_value"] == pytest.approx(study.best_value) and again["best_value"] >= first["best_value"]


def test_space_types():
    from ray import tune

    space = space_from_config({"gamma": {"type": "uniform", "low": 0, "high": 10},
                               "lr": {"type": "loguniform", "low": 1e-5, "high": 1e-2},
                               "k": {"type": "int", "low": 1, "high": 3},
                               "how": {"type": "choice", "values": ["mean", "max"]}})
    assert isinstance(space["gamma"], tune.search.sample.Float)
    assert {space["k"].sample() for _ in range(200)} == {1, 2, 3}  # both ends included
    assert space["how"].categories == ["mean", "max"]


def test_an_optimum_at_the_edge_of_its_range_is_named():
    """BIGRec's CF gamma once landed at 19.9 of a 0-20 range: a search says so instead of reporting it as found."""
    space = {"gamma": {"type": "uniform", "low": 0, "high": 20}, "lr": {"type": "loguniform", "low": 1e-5, "high": 1},
             "how": {"type": "choice", "values": ["a", "b"]}}
    assert edges(space, {"gamma": 19.9, "lr": 1e-3, "how": "a"}) == {"gamma": "high"}
    assert edges(space, {"gamma": 10.0, "lr": 1.1e-5, "how": "a"}) == {"lr": "low"}  # log scale: 1e-4 is inside
    assert edges(space, {"gamma": 10.0, "lr": 1e-4, "how": "b"}) == {}


@pytest.mark.parametrize("spec, message", [
    ({"x": {"type": "normal"}}, "'x': type must be one of"),
    ({"x": {"type": "uniform", "low": 2, "high": 1}}, "'x': needs numbers low < high"),
    ({"x": {"type": "uniform", "low": 0}}, "'x': needs numbers low < high"),
    ({"x": {"type": "loguniform", "low": 0, "high": 1}}, "'x': a loguniform range needs low > 0"),
    ({"x": {"type": "int", "low": 0.5, "high": 3}}, "'x': an int range needs whole numbers"),
    ({"x": {"type": "choice", "values": []}}, "'x': a choice needs a non-empty list"),
    ({"x": 3}, "'x': give a mapping"),
    ({}, "empty"),
])
def test_a_bad_space_is_one_clear_error(spec, message):
    with pytest.raises(RaylibError, match=message):
        space_from_config(spec)


def test_a_tracking_store_that_cannot_be_opened_is_one_line_before_any_work(tmp_path):
    from raylib import tracking

    ran = []
    with pytest.raises(RaylibError, match=r"tracking: cannot open an MLflow run in bogus://x .*tracking.enabled=false"):
        with tracking.job_run(TrackingSettings(enabled=True, tracking_uri="bogus://x"), tmp_path, "a job", {}):
            ran.append(True)
    assert not ran
