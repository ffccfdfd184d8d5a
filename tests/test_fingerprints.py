"""A run made by an earlier version resumes after a refactor: the run fingerprints of the shipped CPU recipes
(model, LoRA, training settings, the task's own fields; the records' digest held fixed) are the ones the
version before the Method registry wrote. A change that moves one (a new training field with a default, a
renamed task) must say so here, because every user's half-finished run of that recipe would start over."""

import hashlib
import json

import pytest

from raylib.assets import PROJECT_DIR
from raylib.config import from_dict, load_config
from raylib.train.checkpoint import run_fingerprint

# sha1 of each fingerprint's JSON, computed at commit 39e9a6a (before the Method objects and item features)
BEFORE = {
    "tallrec_cpu": "23e9b69350c00108782938cd8860e4df4b32e775",
    "bigrec_cpu": "3414465cb33e8ba61d25dd9417912eafd6e365b4",
    "genrec_cpu": "9989eff9eea21f0d0d7ec9adeed66b3d971e648b",
    "sasrec": "4f717839fdad0d1b59e4e042a6563af2f87322be",
    "crm": "1c67aeecdc8e0148cbe3bfa9558485bc99ab69a6",
}


def jobs():
    from raylib.methods.corella.crm import CrmTask
    from raylib.methods.nextitem.sasrec import SasrecTask
    from raylib.methods.nextitem.task import BigrecTask, GenrecTask
    from raylib.methods.tallrec.task import TallrecTask

    configs = PROJECT_DIR / "jobs" / "configs"
    yield "tallrec_cpu", TallrecTask, load_config(TallrecTask.config_cls, configs / "tallrec_cpu.yaml", [])
    yield "bigrec_cpu", BigrecTask, load_config(BigrecTask.config_cls, configs / "bigrec_cpu.yaml", [])
    yield "genrec_cpu", GenrecTask, load_config(GenrecTask.config_cls, configs / "genrec_cpu.yaml", [])
    yield "sasrec", SasrecTask, from_dict(SasrecTask.config_cls, {})  # the SASRec stage's defaults
    yield "crm", CrmTask, from_dict(CrmTask.config_cls, {})  # CoReLLa's DCNv2 stage's defaults


@pytest.mark.parametrize("name,task,job", list(jobs()), ids=lambda v: v if isinstance(v, str) else "")
def test_each_recipes_run_fingerprint_is_the_one_its_earlier_runs_saved(name, task, job):
    fingerprint = run_fingerprint(task, job, "RECORDS")  # the data's digest, held fixed
    assert hashlib.sha1(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest() == BEFORE[name]
