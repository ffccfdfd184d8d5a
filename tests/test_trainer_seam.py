"""The trainer is shared: a plain prompt -> response SFT task (no TALLRec code) trains and publishes through the
same Ray Train + DeepSpeed loop; epochs end on an optimizer step, so the LR schedule is exact; a different run in
the same output_dir is refused."""

import json

import pytest
import torch

from raylib import RaylibError
from raylib.config import TrainConfig, from_dict
from raylib.train.sft import SftJobConfig, SftTask
from raylib.train import train
from raylib.train.batching import EpochSampler, batch_plan

RECORDS = [{"prompt": f"Q: what comes after {i}?\nA:", "response": f" {i + 1}"} for i in range(10)]


def sft_job(model_dir, out, **train_settings):
    settings = {"epochs": 1, "batch_size": 4, "micro_batch_size": 2, "learning_rate": 5e-3, "eval_batch_size": 4,
                "patience": 0, "cpus_per_worker": 1, **train_settings}
    return from_dict(SftJobConfig, {"model": {"name": str(model_dir), "dtype": "fp32"}, "output_dir": str(out),
                                    "max_length": 64, "train": settings})


@pytest.mark.slow
def test_sft_task_trains_publishes_and_refuses_another_run(ray_session, tiny_model_dir, tmp_path):
    from peft import PeftModel

    from raylib.model import load_model

    # (Resuming from a checkpoint is tested with TALLRec's task: tests/test_train.py.)
    result = train(SftTask, sft_job(tiny_model_dir, tmp_path / "run", epochs=2), RECORDS, RECORDS[:4])
    assert result.state.epoch == 2 and "val_loss" in result.state.history[0]
    assert result.state.best_metric == min(h["val_loss"] for h in result.state.history)  # lower is better
    # 10 records, global batch 4 (micro 2 x 2): 3 whole optimizer steps per epoch, and the linear schedule's
    # last step is the run's last step (before, DeepSpeed carried a half step into the next epoch).
    assert [h["step"] for h in result.state.history] == [3, 6] and result.state.history[-1]["lr"] == 0.0
    assert json.loads((result.published_dir / "training_summary.json").read_text())["metric"] == "loss"

    base = load_model(sft_job(tiny_model_dir, tmp_path).model)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        after = PeftModel.from_pretrained(base, str(result.published_dir))(input_ids=ids).logits
    assert not torch.allclose(before, after)

    # A different run in the same output_dir is refused, naming what differs, before any work; fresh_start wins.
    out = tmp_path / "run"
    with pytest.raises(RaylibError, match=r"train.learning_rate: 0.005 -> 0.001.*train.fresh_start=true"):
        train(SftTask, sft_job(tiny_model_dir, out, epochs=2, learning_rate=1e-3), RECORDS, RECORDS[:4])
    with pytest.raises(RaylibError, match="the training/validation records differ"):
        train(SftTask, sft_job(tiny_model_dir, out, epochs=2), RECORDS[:6], RECORDS[:4])
    fresh = train(SftTask, sft_job(tiny_model_dir, out, learning_rate=1e-3, fresh_start=True), RECORDS[:6], [])
    assert fresh.state.epoch == 1 and fresh.state.history[0]["step"] == 2  # trained anew on 6 records


def test_epochs_end_on_an_optimizer_step():
    """The issue's case: batch 128, micro 32, 200 records. DeepSpeed carried leftover micro-batches into the next
    epoch (200 steps scheduled, 350 run); now each epoch is whole optimizer steps and says what it repeats."""
    train_cfg = TrainConfig(batch_size=128, micro_batch_size=32)
    plan = batch_plan(train_cfg, 200, world=1)
    assert (plan.micro_batch, plan.accumulation, plan.steps_per_epoch) == (32, 4, 2)
    indices = list(EpochSampler(plan, 200, seed=0))
    assert len(indices) == plan.steps_per_epoch * plan.accumulation * plan.micro_batch == 256
    assert set(indices) == set(range(200))  # every record once, 56 of them twice
    assert plan.notes(128) == ["each epoch repeats 56 sample(s) so that it ends on an optimizer step"]
    two = batch_plan(train_cfg, 200, world=2)
    for shard in (EpochSampler(two, 100, seed=0), EpochSampler(two, 100, seed=0)):  # each worker: its 100 rows
        assert len(list(shard)) == two.samples_per_rank == 128 and set(shard) == set(range(100))
    assert batch_plan(train_cfg, 16, world=1).notes(128) == [
        "global batch 128 -> 16 (capped at the number of training samples)"]
