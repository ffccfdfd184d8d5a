"""The GPU memory planner: exact parameter counts from a meta-device model, the estimate against a hand
computation, the shipped recipes checked, and a GPU job that cannot fit refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylib import RaylibError
from raylib.plan import GIB, Setup, count_parameters, estimate, model_config, report

REPO = Path(__file__).resolve().parents[1]


def tiny_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False)


def test_counts_and_estimate_match_a_hand_computation():
    counts = count_parameters(tiny_config())  # LoRA r=8 on q_proj and v_proj
    per_layer = 4 * 64 * 64 + 3 * 64 * 128 + 2 * 64  # attention, SwiGLU, two RMSNorms
    assert counts.frozen == 1000 * 64 + 2 * per_layer + 64 + 64 * 1000  # embeddings, layers, norm, lm_head
    assert counts.trainable == 2 * 2 * (8 * 64 + 64 * 8)  # 2 layers x (q, v) x (A + B)
    parts = estimate(counts, Setup(micro_batch=2, seq_len=16, zero=2))
    tokens = 2 * 16
    assert parts["weights"] == counts.frozen * 2
    assert parts["optimizer"] == counts.trainable * 12  # fp32 master + Adam m, v
    assert parts["activations"] == tokens * 2 * (10 * 64 + 4 * 128) * 2
    assert parts["logits"] == tokens * 1000 * (2 + 4 + 4)
    subtotal = sum(v for k, v in parts.items() if k not in ("context_and_slack", "total"))
    assert parts["total"] == pytest.approx(subtotal * 1.1 + 0.8 * GIB)
    checkpointed = estimate(counts, Setup(micro_batch=2, seq_len=16, grad_ckpt=True))
    assert checkpointed["activations"] == tokens * (2 * 64 * 2 + (10 * 64 + 4 * 128) * 2)


def test_zero3_partitions_and_offload_move_memory_off_the_gpu():
    counts = count_parameters(model_config("llama-2-13b"))
    one = estimate(counts, Setup(zero=3, gpus=1, grad_ckpt=True))
    four = estimate(counts, Setup(zero=3, gpus=4, grad_ckpt=True))
    assert four["weights"] == pytest.approx(one["weights"] / 4)
    offloaded = estimate(counts, Setup(zero=3, offload_params=True, offload_optimizer=True))
    assert offloaded["weights"] < one["weights"] / 20 and offloaded["optimizer"] == 0


def test_7b_lora_fits_one_rtx3090_with_the_recipe_and_a_full_fine_tune_does_not():
    from raylib.config import load_config
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.plan import check_job_fits

    for recipe in ("tallrec-llama7b-rtx3090.yaml", "tallrec-llama13b-4xrtx3090.yaml"):
        plan = check_job_fits(load_config(TallrecJobConfig, REPO / "jobs" / "configs" / recipe, []))
        assert plan["fits"] and plan["gib"]["total"] < 24
        (scoring,) = plan["inference"]  # scoring fits too: bf16, and 13B's weights over two cards
        assert scoring["phase"] == "scoring" and scoring["fits"] and scoring["gib"]["total"] < 24
    # cluster.yaml's own card, a g5's A10G (22.5 GiB as the driver reports it), takes the same recipe
    a10g = load_config(TallrecJobConfig, REPO / "jobs" / "configs" / "tallrec-llama7b-rtx3090.yaml", ["train.gpu=a10g"])
    assert check_job_fits(a10g)["fits"]
    config = model_config("meta-llama/Llama-2-7b-hf")
    assert count_parameters(config).trainable == 4_194_304  # 32 layers x (q, v) x 8 x (4096 + 4096)
    full = report(count_parameters(config, trainable="full"), Setup(), "llama-2-7b")
    assert not full["fits"] and full["gib"]["optimizer"] > 70


def test_a_gpu_job_that_cannot_fit_is_refused_with_the_cheapest_change():
    from raylib.config import from_dict
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.train.driver import train
    from raylib.methods.tallrec.task import TallrecTask

    job = from_dict(TallrecJobConfig, {"model": {"name": "meta-llama/Llama-2-7b-hf", "dtype": "bf16"},
                                       "train": {"use_gpu": True, "gpu": "rtx3090", "micro_batch_size": 32}})
    with pytest.raises(RaylibError, match=r"(?s)does not fit.*cheapest change that fits: "
                                          r"train.gradient_checkpointing=true train.micro_batch_size=16"):
        train(TallrecTask, job, [{"instruction": "i", "input": "x", "output": "Yes."}], [])


def test_the_planner_command(capsys):
    from jobs.plan import main

    assert main(["--model", "llama-7b", "--gpu", "rtx3090"]) == 1
    assert "cheapest change that fits: train.gradient_checkpointing=true" in capsys.readouterr().out
    assert main(["--model", "llama-7b", "--gpu", "rtx3090", "--grad-ckpt"]) == 0
    assert main(["--model", "llama-7b", "--offload", "params"]) == 2  # needs ZeRO-3


def test_inference_estimate_matches_a_hand_computation():
    from raylib.plan import Phase, inference_estimate

    config = tiny_config()  # 2 layers, 64 wide, 4 heads (kv 4, head_dim 16), intermediate 128, vocab 1000
    params = 1000 * 64 + 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 64 + 64 * 1000
    parts = inference_estimate(config, Phase("beams", batch=2, prompt=10, beams=3, new_tokens=5))
    rows, tokens = 2 * 3, 10 + 5
    assert parts["weights"] == params * 2
    assert parts["kv_cache"] == rows * tokens * 2 * 2 * 4 * 16 * 2
    assert parts["activations"] == rows * tokens * (4 * 64 + 3 * 128) * 2
    assert parts["logits"] == rows * 1000 * (2 + 4 + 4)
    sharded = inference_estimate(config, Phase("scoring", gpus=2, batch=2, prompt=10))
    assert sharded["weights"] == params  # bf16 over two GPUs


def test_a_fp32_scoring_7b_job_is_refused_before_training_naming_the_fix(tmp_path):
    """The 7B recipe with eval.dtype=fp32: its weights alone (25 GiB) exceed the 3090, so the job stops before
    anything loads (no model download, no Ray), naming eval.dtype=bf16."""
    import subprocess
    import sys
    import time

    start = time.time()
    done = subprocess.run([sys.executable, "-m", "jobs.tallrec", "--config",
                           "jobs/configs/tallrec-llama7b-rtx3090.yaml", "eval.dtype=fp32",
                           f"output_dir={tmp_path / 'out'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "scoring" in done.stderr and "cheapest change that fits: eval.dtype=bf16" in done.stderr
    assert time.time() - start < 60 and not (tmp_path / "out").exists()


def test_the_planner_command_plans_a_jobs_training_and_inference(capsys):
    from jobs.plan import main

    assert main(["--config", str(REPO / "jobs/configs/tallrec-llama7b-rtx3090.yaml")]) == 0
    out = capsys.readouterr().out
    assert "FITS" in out and "inference:" in out and "scoring: rtx3090 x1" in out
    assert main(["--config", str(REPO / "jobs/configs/bigrec.yaml"), "train.use_gpu=true",
                 "model.name=llama-2-7b", "generation.num_beams=10"]) in (0, 1)
    out = capsys.readouterr().out
    assert "beams: rtx3090 x1" in out and "embeddings:" in out


def test_an_unknown_model_is_one_line_at_once(capsys):
    import time

    from jobs.plan import main

    start = time.time()
    assert main(["--model", "no-such/model"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such/model" in err and time.time() - start < 10


@pytest.mark.slow
def test_the_gpu_check_dry_run_writes_every_phase_beside_the_planner(tmp_path):
    """`raylib gpu-check --dry-run`: a tiny model on this machine, the plain loop (what a GPU box
    without Ray or DeepSpeed runs); every phase timed, with the planner's estimate beside it."""
    import json
    import subprocess
    import sys

    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "-m", "jobs.gpu_check", "--dry-run", "--trainer", "plain", "--steps", "2",
                           "--work-dir", str(tmp_path / "work"), "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and set(report["phases"]) == {"train", "scoring", "beams", "serve_scorer"}
    assert report["phases"]["train"]["trainer"] == "plain" and report["phases"]["train"]["tokens_per_s"] > 0
    for phase in report["phases"].values():
        assert phase["seconds"] > 0 and phase["planner_gib"] > 0
