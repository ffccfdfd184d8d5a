"""The one Ray Tune + Optuna helper: a search space from config, a persisted study, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from raylib import RaylibError
from raylib.config import TuneSettings
from raylib.tune import search, space_from_config


def distance_to(params, target=None):
    """A stand-in objective: how close x is to a point shipped as a (numpy) constant."""
    return {"score": -float((params["x"] - target[0]) ** 2)}


def test_search_finds_the_optimum_and_persists_the_study(ray_session, tmp_path):
    import sys

    import optuna
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module
    space = {"x": {"type": "uniform", "low": -4.0, "high": 4.0}}
    settings = TuneSettings(num_samples=12, max_concurrent=2, seed=0)
    first = search(distance_to, space, metric="score", mode="max", settings=settings, output_dir=tmp_path,
                   study_name="quadratic", constants={"target": np.array([1.5])})
    assert abs(first["best_params"]["x"] - 1.5) < 1.0 and first["trials"] == 12
    assert first["storage"].startswith("sqlite:///")

    # the same study name continues the same Optuna study in the SQLite storage
    search(distance_to, space, metric="score", mode="max", settings=TuneSettings(num_samples=4, seed=1),
           output_dir=tmp_path, study_name="quadratic", constants={"target": np.array([1.5])})
    study = optuna.load_study(study_name="quadratic", storage=f"sqlite:///{tmp_path / 'tune' / 'optuna.db'}")
    assert len([t for t in study.trials if t.state.is_finished()]) == 16


@pytest.mark.parametrize("spec, message", [
    ({"x": {"type": "normal"}}, "type must be one of"),
    ({"x": {"type": "uniform", "low": 2, "high": 1}}, "low < high"),
    ({"x": {"type": "loguniform", "low": 0, "high": 1}}, "low > 0"),
    ({"x": {"type": "choice", "values": []}}, "non-empty list"),
    ({}, "empty"),
])
def test_a_bad_space_is_one_clear_error(spec, message):
    with pytest.raises(RaylibError, match=message):
        space_from_config(spec)
