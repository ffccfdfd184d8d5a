"""Nothing lost, nothing stale: a killed job's leftovers never hang or corrupt the next one, a shared storage
path is never wiped by one run's `fresh_start`, one job per output_dir, a search answers only for itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from raylib import RaylibError


def test_a_stale_jit_lock_left_by_a_killed_job_does_not_hang_the_next_one():
    """torch's JIT loader waits forever on the lock file a killed loader leaves; DeepSpeed's CPU op loads
    through raylib, which removes it (no live loader of ours can hold it), and returns within seconds."""
    from raylib.assets import cache_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR", cache_root() / "torch_extensions"))
    lock = root / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.touch()
    done = subprocess.run([sys.executable, "-c", "from raylib.assets import load_deepspeed_cpu_ops as f; f()"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert not lock.exists()


def test_fresh_start_on_a_shared_storage_path_deletes_only_the_runs_own_folder(tmp_path):
    from raylib.config import from_dict
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.train.checkpoint import claim_output_dir
    from raylib.train.storage import RUN_NAME, run_name, storage_path

    shared = tmp_path / "shared"
    other = shared / "someone-else" / "checkpoint_1"
    other.mkdir(parents=True)
    (other / "weights.bin").write_text("not ours")
    jobs = [from_dict(TallrecJobConfig, {"output_dir": str(tmp_path / name), "train": {"storage_path": str(shared)}})
            for name in ("stage-a", "stage-b")]
    names = [run_name(job) for job in jobs]
    assert len(set(names)) == 2 and RUN_NAME not in names  # every run its own folder under the shared root
    for job in jobs:
        claim_output_dir(Path(job.output_dir), {"run": job.output_dir}, False, storage_path(job), run_name(job))
    (shared / names[1] / "checkpoint_1").mkdir()
    claim_output_dir(Path(jobs[0].output_dir), {"run": "again"}, True, storage_path(jobs[0]), names[0])
    assert (other / "weights.bin").read_text() == "not ours"  # a sibling under the shared root survives
    assert (shared / names[1] / "checkpoint_1").is_dir()  # and so does the other stage's run
    # a run folder raylib did not mark is refused, not deleted
    (shared / names[1] / ".raylib-run.json").unlink()
    with pytest.raises(RaylibError, match="raylib did not make it"):
        claim_output_dir(Path(jobs[1].output_dir), {"run": "again"}, True, storage_path(jobs[1]), names[1])
    assert (shared / names[1] / "checkpoint_1").is_dir()


HOLD = """
import sys, time
from raylib.stages import folder_in_use
with folder_in_use(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_job_into_a_folder_in_use_stops_with_one_line_and_a_killed_holder_frees_it(tmp_path):
    from raylib.stages import folder_in_use

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RaylibError, match=rf"in use by another job \(pid {holder.pid}\)"):
            with folder_in_use(tmp_path / "run"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with folder_in_use(tmp_path / "run"):  # the kernel released the dead holder's lock: nothing stale
        with folder_in_use(tmp_path / "run"):  # and its holder may enter it again (a job's stages)
            pass


def test_state_files_cut_short_are_a_miss_not_a_traceback(tmp_path):
    from raylib.config import from_dict
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.stages import cached_stage, keep, write_json
    from raylib.train.driver import FINISHED_FILE, _finished

    path = tmp_path / "stage.json"
    keep(path, {"k": 1}, {"value": 1})
    path.write_text(path.read_text()[:7])  # a kill mid-write, before writes were atomic
    assert cached_stage(path, {"k": 1}, lambda: "computed") == "computed"
    job = from_dict(TallrecJobConfig, {"output_dir": str(tmp_path / "job")})
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / FINISHED_FILE).write_text('{"fingerprint": {"task": "tal')
    assert _finished(job, {"task": "tallrec"}) is None  # trains (or resumes) again
    write_json(tmp_path / "report.json", {"auc": 0.7})
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_a_search_answers_only_for_the_same_objective_space_and_data(ray_session, tmp_path):
    """A persisted study is found by a digest of everything its trials depend on: a changed constant (a budget,
    the data) or range searches again, and the answer respects the new one."""
    from raylib.config import TuneSettings
    from raylib.tune import search

    def distance(params, target):
        return {"score": -abs(params["x"] - target)}

    settings = TuneSettings(num_samples=6, max_concurrent=1, seed=0)
    space = {"x": {"type": "uniform", "low": 0.0, "high": 10.0}}
    first = search(distance, space, metric="score", mode="max", settings=settings, output_dir=tmp_path,
                   study_name="x", constants={"target": 2.0})
    again = search(distance, space, metric="score", mode="max", settings=settings, output_dir=tmp_path,
                   study_name="x", constants={"target": 2.0})
    assert again["trials"] == 0 and again["best_params"] == first["best_params"]  # the same search: answered
    moved = search(distance, space, metric="score", mode="max", settings=settings, output_dir=tmp_path,
                   study_name="x", constants={"target": 8.0})
    assert moved["trials"] == 6 and moved["best_params"]["x"] > 5  # another objective: searched anew
    narrow = search(distance, {"x": {"type": "uniform", "low": 0.0, "high": 1.0}}, metric="score", mode="max",
                    settings=settings, output_dir=tmp_path, study_name="x", constants={"target": 2.0})
    assert narrow["trials"] == 6 and narrow["best_params"]["x"] <= 1.0  # another range: searched anew
    assert len({first["study_name"], moved["study_name"], narrow["study_name"]}) == 3


def test_url_credentials_never_reach_reports_or_mlflow_params():
    import json

    from raylib.config import from_dict, shown_config
    from raylib.methods.nextitem.config import BigrecJobConfig

    job = from_dict(BigrecJobConfig, {"tune": {"storage": "postgresql://user:s3cret@db:5432/optuna"},
                                      "tracking": {"tracking_uri": "http://bob:hunter2@mlflow:5000"}})
    shown = json.dumps(shown_config(job))  # what report.json and the MLflow params hold
    assert "s3cret" not in shown and "hunter2" not in shown
    assert "postgresql://***@db:5432/optuna" in shown and "http://***@mlflow:5000" in shown
    assert job.tune.storage.endswith("s3cret@db:5432/optuna")  # the job itself still connects with them


@pytest.mark.parametrize("line, said", [
    ("u1\ti1\t4\tnan", "timestamp of interaction 2 is nan; it must be a whole number"),
    ("u1\ti1\t4\t1e30", r"timestamp of interaction 2 is 1e\+30"),
    ("u1\ti1\tnan\t7", "rating of interaction 2 is nan; it must be a finite number"),
])
def test_values_that_would_be_silently_changed_are_named(tmp_path, line, said):
    from raylib.data.dataset import load_dataset

    (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                      f"u1\ti1\t5\t1\n{line}\n")
    (tmp_path / "d.item").write_text("item_id:token\ttitle:token_seq\ni1\tOne\n")
    with pytest.raises(RaylibError, match=said):
        load_dataset(tmp_path)


def test_labels_other_than_0_1_duplicate_items_and_other_encodings_are_one_line(tmp_path):
    from raylib.data.dataset import load_dataset

    (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\tlabel:float\ttimestamp:float\nu\ti1\t2\t1\n")
    (tmp_path / "d.item").write_text("item_id:token\ttitle:token_seq\ni1\tOne\n")
    with pytest.raises(RaylibError, match="label of interaction 1 is 2.0; it must be 0 or 1"):
        load_dataset(tmp_path)
    (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\tlabel:float\ttimestamp:float\nu\ti1\t1\t1\n")
    (tmp_path / "d.item").write_text("item_id:token\ttitle:token_seq\ni1\tOne\ni1\tAgain\n")
    with pytest.raises(RaylibError, match="item 'i1' is listed more than once"):
        load_dataset(tmp_path)
    (tmp_path / "d.item").write_bytes("item_id:token\ttitle:token_seq\ni1\tCit\xe9\n".encode("latin-1"))
    with pytest.raises(RaylibError, match=r"d.item is not UTF-8"):
        load_dataset(tmp_path)
    (tmp_path / "d.item").write_text("id:token\ttitle:token_seq\ni1\tOne\n")
    with pytest.raises(RaylibError, match="the items need an item_id column"):
        load_dataset(tmp_path)


def test_an_incomplete_latest_checkpoint_falls_back_to_the_previous_complete_one(tmp_path):
    """Ray keeps two checkpoints; when the newest was cut short (its manifest missing), the resume takes the one
    before it instead of asking for fresh_start."""
    import json

    from raylib.train.checkpoint import MANIFEST, checkpoint_problem, complete_checkpoint_before

    run = tmp_path / "storage" / "train"
    for name, complete in (("checkpoint_2026-12-06_10-00-00.000001", True),
                           ("checkpoint_2026-12-06_11-00-00.000001", False)):
        folder = run / name
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text("{}")
        if complete:
            (folder / MANIFEST.format(rank=0)).write_text(json.dumps(
                {"rank": 0, "world_size": 1, "files": {"trainer_state.json": 2}}))
    latest = run / "checkpoint_2026-12-06_11-00-00.000001"
    assert checkpoint_problem(latest) is not None
    earlier = complete_checkpoint_before(str(tmp_path / "storage"), "train", str(latest))
    assert earlier is not None and earlier.name.startswith("checkpoint_2026-12-06_10") and not checkpoint_problem(earlier)
    (run / "checkpoint_2026-12-06_10-00-00.000001" / MANIFEST.format(rank=0)).unlink()
    assert complete_checkpoint_before(str(tmp_path / "storage"), "train", str(latest)) is None


def test_caches_and_runs_key_on_content_and_the_resolved_dtype(tmp_path, tiny_model_dir):
    """A data file replaced in place under its name is new data; weights saved again in a model folder are another
    model; a run's fingerprint says the dtype "auto" resolved to (a CPU's fp32 run is not a GPU's bf16 one)."""
    import shutil

    from raylib.config import from_dict
    from raylib.config import data_key
    from raylib.methods.corella.config import CtrDataConfig
    from raylib.methods.tallrec.config import TallrecJobConfig
    from raylib.methods.tallrec.task import TallrecTask
    from raylib.model import weights_digest
    from raylib.train.checkpoint import current_fingerprint, run_fingerprint

    files = {name: tmp_path / f"{name}.csv" for name in ("train", "valid", "test")}
    for path in files.values():
        path.write_text("a")
    section = from_dict(CtrDataConfig, {"source": "files", **{f"{k}_file": str(p) for k, p in files.items()}})
    before = data_key(section)
    files["test"].write_text("b")  # same name, same path: other content
    assert data_key(section) != before

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    digest = weights_digest(str(model))
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # saved again
    assert digest and weights_digest(str(model)) != digest and weights_digest("smollm2-135m") is None

    job = from_dict(TallrecJobConfig, {"model": {"name": str(model)}, "output_dir": str(tmp_path / "run")})
    made = run_fingerprint(TallrecTask, job, "records")
    assert made["resolved_dtype"] == "torch.float32" and made["model"]["weights"] == weights_digest(str(model))
    older = {k: v for k, v in made.items() if k != "resolved_dtype"}  # written before the dtype was kept
    assert current_fingerprint(older)["resolved_dtype"] == "torch.float32"
