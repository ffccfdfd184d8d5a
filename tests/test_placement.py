"""Where each step that loads weights runs, and in which dtype (`raylib.placement`).

The session's Ray offers 2 logical GPUs (conftest): a step that asks for a GPU gets a GPU id and runs on the CPU.
A TALLRec job with `train.use_gpu=true` then shows that training and both scorings ran in Ray processes holding
a GPU id and that the driver loaded no weights; the other methods' end-to-end tests check the same.
"""

from __future__ import annotations

import os

import pytest
import torch

from raylib import RaylibError, placement
from raylib.config import from_dict
from raylib.methods.tallrec.config import TallrecJobConfig

# Ray workers cannot import this test module: its functions and classes travel by value.
import sys  # noqa: E402

import ray.cloudpickle  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_the_dtype_rule(monkeypatch):
    assert placement.choose_dtype("auto", "cpu") == torch.float32  # CPUs: fp32 (bf16 moved AUC there)
    assert placement.choose_dtype("bf16", "cpu") == torch.bfloat16  # an explicit value is honoured
    assert placement.choose_dtype("fp16", "cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert placement.choose_dtype("auto", "cuda") == torch.bfloat16  # GPUs with bf16 (Ampere and later)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert placement.choose_dtype("auto", "cuda") == torch.float16  # older GPUs
    with pytest.raises(RaylibError, match="int3"):
        placement.choose_dtype("int3", "cpu")


def test_a_job_places_its_inference_from_its_config():
    gpu_job = from_dict(TallrecJobConfig, {"train": {"use_gpu": True, "cpus_per_worker": 3},
                                           "inference": {"gpus": 0.5}})
    assert placement.for_job(gpu_job) == placement.Placement(gpus=0.5, cpus=3)
    assert placement.for_job(gpu_job).tune_resources() == {"cpu": 3, "gpu": 0.5}
    cpu_job = from_dict(TallrecJobConfig, {"inference": {"cpus": 2}})
    assert placement.for_job(cpu_job) == placement.Placement(gpus=0.0, cpus=2)
    assert placement.for_job(from_dict(TallrecJobConfig, {})).resolved_cpus() == os.cpu_count()  # every core
    with pytest.raises(RaylibError, match="inference.gpus"):
        from_dict(TallrecJobConfig, {"inference": {"gpus": 0}})


def _where(tag: str) -> dict:
    import ray

    from raylib.config import ModelConfig
    from raylib.model import load_model

    load_model(ModelConfig(name=tag, dtype="auto"))
    return {"gpu_ids": ray.get_gpu_ids(), "threads": torch.get_num_threads(), "pid": os.getpid()}


def test_a_placed_step_holds_a_gpu_id_and_falls_back_to_the_cpu(ray_session, tiny_model_dir, loads):
    seen = placement.run(_where, str(tiny_model_dir), placement=placement.Placement(gpus=0.5, cpus=1))
    assert seen["gpu_ids"] and seen["pid"] != os.getpid() and seen["threads"] == 1
    (record,) = loads.assert_all_on_gpu_workers({"llm"})
    assert record["device"] == "cpu"  # no CUDA in the task: the CPU, in fp32 by the dtype rule
    # NCCL only where GPU workers really have CUDA; here gloo, so a use_gpu job trains on logical GPUs
    assert placement.process_group_backend(True) == "gloo" and placement.process_group_backend(False) == "gloo"


def test_an_actor_keeps_its_model_between_calls(ray_session, tiny_model_dir, loads):
    class Counter:
        def __init__(self, name):
            from raylib.config import ModelConfig
            from raylib.model import load_model

            self.model, self.calls = load_model(ModelConfig(name=name)), 0

        def call(self):
            self.calls += 1
            return self.calls

    import ray

    with placement.start(Counter, str(tiny_model_dir), placement=placement.Placement(gpus=1, cpus=1)) as actor:
        assert [actor.call("call"), actor.call("call")] == [1, 2]
        handle = actor.actor
    assert len(loads.assert_all_on_gpu_workers({"llm"})) == 1  # loaded once, in the actor
    with pytest.raises(ray.exceptions.RayActorError):  # leaving the block ended it (and freed its GPU)
        ray.get(handle.call.remote("call", (), {}), timeout=30)


# A TALLRec GPU job on logical GPUs (training and both scorings hold a GPU id, the driver loads nothing) runs in
# tests/test_cluster.py (through `ray job submit`, on a second node) and in tests/test_leaderboard.py.


def _refuse() -> None:
    raise RaylibError("data.train_file x.json: line 3 is not JSON.")


def test_a_user_error_inside_a_step_comes_back_as_one_line(ray_session):
    with pytest.raises(RaylibError) as caught:
        placement.run(_refuse, placement=placement.Placement(cpus=1))
    assert str(caught.value) == "data.train_file x.json: line 3 is not JSON."
