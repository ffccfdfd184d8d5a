"""The TALLRec benchmark end to end on a tiny LLaMA and a handful of the official records: the report has the
keys the issue names (checked mechanically), and a resumed benchmark keeps what an earlier one measured."""

import json

import pytest

from raylib.bench.tallrec import BenchTallrecConfig, run_bench
from raylib.config import from_dict, to_dict


@pytest.fixture
def data_dir(tmp_path, movie_records):
    """The benchmark's layout (train/valid/test.json), from records built out of the embedded MovieLens-100K."""
    from raylib.data import write_records

    for split in ("train", "valid", "test"):
        write_records(movie_records[split], tmp_path / "data" / f"{split}.json")
    return tmp_path / "data"


def tiny_bench(model_dir, tmp_path, data_dir, **extra):
    return from_dict(BenchTallrecConfig, {
        "model": {"name": str(model_dir), "dtype": "fp32"},
        "train": {"learning_rate": 5e-3, "batch_size": 4, "micro_batch_size": 4, "epochs": 1, "patience": 0,
                  "eval_batch_size": 8, "cpus_per_worker": 1},
        "data_dir": str(data_dir), "shots": [8], "seeds": [0], "valid_samples": 8, "test_samples": 16,
        "max_length": 256, "speed_records": 16,
        "speed_max_new_tokens": 4, "work_dir": str(tmp_path / "work"),
        "report": str(tmp_path / "reports" / "tallrec.json"), **extra})


@pytest.mark.slow
def test_bench_report_has_the_issue_keys_and_resume_keeps_runs(ray_session, tiny_model_dir, tmp_path, data_dir):
    config = tiny_bench(tiny_model_dir, tmp_path, data_dir)
    report = run_bench(config)

    saved = json.loads((tmp_path / "reports" / "tallrec.json").read_text())
    assert (tmp_path / "reports" / "tallrec.png").stat().st_size > 0
    assert saved["model"] == str(tiny_model_dir) and saved["test_records"] == 16
    assert 0.0 <= saved["zero_shot_auc"] <= 1.0
    assert set(saved["auc"]["8"]) == {"mean", "std", "seeds"} and len(saved["auc"]["8"]["seeds"]) == 1
    assert saved["wall_time_s"]["8"] > 0 and saved["train_overhead"] > 0
    # Batched single-forward scoring and per-prompt generate() give the same probabilities (fp32).
    assert saved["scoring_auc_diff"] < 1e-3 and saved["scoring_detail"]["max_prob_diff"] < 1e-4
    assert saved["scoring_detail"]["generate_batched_max_prob_diff"] < 1e-4  # the authors' 32-prompt batches
    # the speed-up is over the authors' way: 32 prompts per generate() call
    assert saved["scoring_speedup"] == saved["scoring_detail"]["speedup_vs_batched_generate"]
    assert saved["runs"][0]["machine"]["dtype"] == "float32"

    again = run_bench(tiny_bench(tiny_model_dir, tmp_path, data_dir, resume=True))
    assert again["runs"] == report["runs"]  # kept, not retrained
    assert again["train_overhead"] == report["train_overhead"]
    assert again["scoring_speedup"] == report["scoring_detail"]["speedup_vs_batched_generate"]

    # Another recipe is another run: a resumed benchmark trains it (in its own folder) instead of keeping the old one.
    changed = tiny_bench(tiny_model_dir, tmp_path, data_dir, resume=True, engineering=False,
                         train={**to_dict(config.train), "learning_rate": 1e-2})
    third = run_bench(changed)
    assert third["runs"][0]["recipe"]["train"]["learning_rate"] == 1e-2
    assert third["runs"][0]["history"] != report["runs"][0]["history"]


def test_every_benchmark_writes_its_report_one_way_and_reads_back_what_a_partial_run_left(tmp_path):
    """raylib.bench.common: numpy figures become JSON numbers and lists, the PNG and Markdown sit beside the
    JSON, and a missing or cut-short report reads as nothing to resume (not a traceback)."""
    from pathlib import Path

    import numpy as np

    from raylib.bench.common import read_report, report_path, write_report

    drawn = []
    path = write_report({"auc": np.float32(0.5), "ranks": np.arange(3), "folder": Path("runs/x")},
                        tmp_path / "reports" / "bench.json", plot=lambda report, png: drawn.append(png),
                        markdown=lambda report: f"auc {report['auc']}\n")
    assert read_report(path) == {"auc": 0.5, "ranks": [0, 1, 2], "folder": "runs/x"}
    assert drawn == [path.with_suffix(".png")] and path.with_suffix(".md").read_text() == "auc 0.5\n"
    path.write_text('{"auc": 0.')  # a run killed mid-write
    assert read_report(path) == {} and read_report(tmp_path / "none.json") == {}
    from raylib.assets import PROJECT_DIR

    # a relative report is the project's (the committed file), wherever the command runs
    assert report_path("reports/x.json") == PROJECT_DIR / "reports" / "x.json"
    assert report_path(tmp_path / "x.json") == tmp_path / "x.json"
