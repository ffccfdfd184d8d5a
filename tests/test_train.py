"""Ray Train + DeepSpeed ZeRO LoRA on CPU with a tiny LLaMA: the saved adapter is a standard PEFT folder that
reloads with `PeftModel.from_pretrained` and changes the model's logits; a rerun resumes from a checkpoint."""

import json

import pytest
import torch

from raylib.config import from_dict
from raylib.methods.tallrec.config import TallrecJobConfig
from raylib.model import load_model
from raylib.methods.tallrec.pipeline import train_tallrec


def tiny_job(model_dir, out, tracking=False, **train):
    settings = {"epochs": 2, "batch_size": 8, "micro_batch_size": 4, "learning_rate": 5e-3, "eval_batch_size": 8,
                "patience": 0, "cpus_per_worker": 1, **train}
    return from_dict(TallrecJobConfig, {"model": {"name": str(model_dir), "dtype": "fp32"}, "output_dir": str(out),
                                        "train": settings, "tracking": {"enabled": tracking}})


def logits_with(model_dir, adapter_dir, input_ids):
    from peft import PeftModel

    base = load_model(from_dict(TallrecJobConfig, {"model": {"name": str(model_dir), "dtype": "fp32"}}).model)
    with torch.no_grad():
        before = base(input_ids=input_ids).logits
        tuned = PeftModel.from_pretrained(base, str(adapter_dir))
        after = tuned(input_ids=input_ids).logits
    return before, after


@pytest.mark.slow
def test_zero3_on_two_workers_resumes_and_its_gathered_adapter_changes_logits(ray_session, tiny_model_dir,
                                                                             movie_records, tmp_path):
    """ZeRO-3 on 2 workers (each with its Ray Data shard) is the hard case: the LoRA tensors are partitioned and
    must be gathered whole, in checkpoints and in the published adapter. (ZeRO-2 on one worker is what every other
    training test runs.) Checkpoints kept at a pyarrow filesystem URI (as s3://... or gs://... would be) resume as
    a folder does; and a run made before the tasks moved (its fingerprint naming the task by its old module path)
    resumes too. The MLflow run (`raylib.tracking`) has the settings as params, a point per epoch from rank 0,
    the adapter as an artifact, and the resumed run continues it."""
    from raylib.train.driver import finished_result
    from raylib.train.storage import run_name
    from raylib.methods.tallrec.task import TallrecTask

    train, valid = movie_records["train"][:16], movie_records["valid"][:8]
    storage = f"file://{tmp_path / 'storage'}"
    zero3 = {"zero_stage": 3, "num_workers": 2,
             "zero_extra": {"stage3_param_persistence_threshold": 0}}  # partition even tiny LoRA tensors
    job = tiny_job(tiny_model_dir, tmp_path / "run", True, epochs=1, storage_path=storage, **zero3)
    first = train_tallrec(job, train, valid)
    assert first.state.epoch == 1
    # under a storage path other runs may share, the run has its own folder, named after its output_dir
    assert list((tmp_path / "storage" / run_name(job)).glob("checkpoint_*/manifest_rank0.json"))
    assert not (tmp_path / "run" / "ray").exists()
    for name, where in (("run.json", []), ("finished.json", ["fingerprint"])):  # as the code before the move wrote it
        saved = json.loads((tmp_path / "run" / name).read_text())
        node = saved
        for key in where:
            node = node[key]
        assert node["task"] == "tallrec"
        node["task"] = "raylib.tasks.tallrec.TallrecTask"
        (tmp_path / "run" / name).write_text(json.dumps(saved))
    same = tiny_job(tiny_model_dir, tmp_path / "run", epochs=1, storage_path=storage, **zero3)
    assert finished_result(TallrecTask, same, train, valid) is not None  # finished: not trained again

    second = train_tallrec(tiny_job(tiny_model_dir, tmp_path / "run", True, epochs=2, storage_path=storage, **zero3),
                           train, valid)
    assert second.state.epoch == 2
    assert second.state.history[0] == first.state.history[0]  # epoch 1 came from the checkpoint, not a rerun
    assert second.state.global_step == 2 * first.state.global_step
    summary = json.loads((second.published_dir / "training_summary.json").read_text())
    assert summary["epochs_run"] == 2 and all("val_auc" in h for h in second.state.history)
    files = sorted(p.name for p in second.published_dir.iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "training_summary.json"]
    from safetensors.torch import load_file

    tensors = load_file(str(second.published_dir / "adapter_model.safetensors"))
    assert tensors and all(t.numel() > 0 for t in tensors.values())  # gathered, not ZeRO-3's empty shards
    before, after = logits_with(tiny_model_dir, second.published_dir, torch.tensor([[1, 2, 3, 4, 5]]))
    assert not torch.allclose(before, after)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("raylib").experiment_id])  # one run, continued
    assert run.data.params["train.learning_rate"] == "0.005" and run.data.params["task"] == "tallrec"
    auc = client.get_metric_history(run.info.run_id, "val_auc")
    assert [m.step for m in auc] == [1, 2] and [m.value for m in auc] == [h["val_auc"] for h in second.state.history]
    assert run.data.metrics["best_epoch"] in (1, 2) and run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "adapter")} >= {"adapter/adapter_model.safetensors"}


@pytest.mark.slow
def test_killed_worker_is_restarted_from_its_checkpoint(ray_session, tiny_model_dir, movie_records, tmp_path):
    """SIGKILL the training worker after its first checkpoint, in the middle of an epoch (a checkpoint every
    optimizer step): Ray Train restarts it (max_failures=1) and it carries on from that step, not from scratch."""
    import os
    import signal
    import threading
    import time

    from ray.util.state import list_actors

    out, records = tmp_path / "run", movie_records["train"][:16]
    job = tiny_job(tiny_model_dir, out, epochs=2, batch_size=4, max_failures=1, checkpoint_every_steps=1)
    result = {}
    runner = threading.Thread(target=lambda: result.update(r=train_tallrec(job, records, movie_records["valid"][:8])))
    runner.start()
    snapshot = out / "ray" / "train" / "checkpoint_manager_snapshot.json"  # written once Ray registers one
    deadline = time.time() + 300
    while time.time() < deadline and not (snapshot.is_file() and '"checkpoint_dir_name"' in snapshot.read_text()):
        time.sleep(0.2)
    dashboard = ray_session._private.worker.global_worker.node.address_info["webui_url"]
    workers = list_actors(address=f"http://{dashboard}", filters=[("class_name", "=", "RayTrainWorker"),
                                                                  ("state", "=", "ALIVE")])
    assert len(workers) == 1
    os.kill(workers[0].pid, signal.SIGKILL)
    runner.join(timeout=600)

    state = result["r"].state
    assert state.epoch == 2 and state.global_step == 8 and [h["epoch"] for h in state.history] == [1, 2]
    [resume] = state.resumes
    assert 1 <= resume["step"] < 4 and resume["epoch"] == 0  # inside the first epoch: at most a step was lost

    # The resumed run IS the interrupted run: AdamW moments, LR schedule, RNG (dropout) and the position in the
    # epoch came back with the checkpoint, so it ends where an unbroken run (no mid-epoch saves) ends.
    unbroken = train_tallrec(tiny_job(tiny_model_dir, tmp_path / "unbroken", epochs=2, batch_size=4),
                          records, movie_records["valid"][:8])
    assert [h["train_loss"] for h in state.history] == pytest.approx(
        [h["train_loss"] for h in unbroken.state.history], abs=1e-6)
    from safetensors.torch import load_file

    resumed_adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    unbroken_adapter = load_file(str(unbroken.published_dir / "adapter_model.safetensors"))
    assert all(torch.allclose(resumed_adapter[k], unbroken_adapter[k], atol=1e-6) for k in unbroken_adapter)


def test_a_node_local_storage_path_is_found_before_training(ray_session, tmp_path):
    """On several nodes every worker must see the storage folder: one task pinned to each node looks for a
    marker written by the driver (here the one real node; a node-local folder elsewhere is a missing marker)."""
    from raylib.train.storage import nodes_missing, shared_storage_error

    nodes = [n for n in ray_session.nodes() if n["Alive"]]
    marker = tmp_path / "marker"
    marker.write_text("raylib")
    assert nodes_missing(str(marker), nodes) == []
    blind = nodes_missing(str(tmp_path / "only-on-another-machine"), nodes)
    assert blind == [nodes[0]["NodeManagerAddress"]]
    assert "NFS mount at the same path on every node, or an object store URI" in shared_storage_error("/x", blind)
