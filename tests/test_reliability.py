"""Nothing lost, nothing stale: a killed job's leftovers never hang or corrupt the next one, a shared storage
path is never wiped by one run's `fresh_start`, one job per output_dir, a search answers only for itself."""

from __future__ import annotations

import json
import os
import re
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


def test_checkpoints_that_began_from_retrained_weights_are_discarded_and_any_other_change_refused(tmp_path):
    """A later stage (CoReLLa's joint and LLM stages) starts from an earlier stage's weights: when only those
    changed, its checkpoints began elsewhere and the trainer starts it afresh; a changed setting is refused."""
    from raylib.train.checkpoint import STATE_FILE, claim_output_dir

    output, storage = tmp_path / "stage2", str(tmp_path / "stage2" / "ray")
    first = {"task": "corella", "resolved_dtype": "torch.float32", "train": {"learning_rate": 1e-3},
             "init_crm": "sha-of-crm-1", "init_adapter": None}
    assert not claim_output_dir(output, first, False, storage, "run", start_weights=("init_crm", "init_adapter"))
    (tmp_path / "stage2" / "ray" / "run" / "checkpoint_1").mkdir(parents=True)
    (tmp_path / "stage2" / "ray" / "run" / "checkpoint_1" / STATE_FILE).write_text("{}")
    assert claim_output_dir(output, first, False, storage, "run", ("init_crm", "init_adapter"))  # resumes
    with pytest.raises(RaylibError, match="learning_rate"):
        claim_output_dir(output, {**first, "train": {"learning_rate": 1e-2}}, False, storage, "run",
                         start_weights=("init_crm", "init_adapter"))
    retrained = {**first, "init_crm": "sha-of-crm-2"}
    assert not claim_output_dir(output, retrained, False, storage, "run", start_weights=("init_crm", "init_adapter"))
    assert not (tmp_path / "stage2" / "ray" / "run" / "checkpoint_1").exists()


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


def test_a_republish_never_leaves_nothing_to_serve_and_a_reader_keeps_its_version(tmp_path):
    """Publishing switches a symlink to a new version folder in one rename: the old version stays whole for the
    app that resolved it, a folder published before versions is kept as one, and a killed publish's copy goes."""
    from raylib.train.checkpoint import VERSIONS_KEPT, publish_folder, published_version

    target = tmp_path / "artifacts"
    target.mkdir()  # published the old way: a plain folder
    (target / "routing.json").write_text("old")
    source = tmp_path / "new"
    source.mkdir()
    (source / "routing.json").write_text("v1")
    publish_folder(source, target)
    assert target.is_symlink() and (target / "routing.json").read_text() == "v1"
    running_app = published_version(target)  # what a Serve app resolved at build time
    versions = target.with_name(".artifacts.versions")
    (versions / ".staging-killed").mkdir()  # a publish killed mid-copy
    (source / "routing.json").write_text("v2")
    publish_folder(source, target, extra={"metric": 1})
    assert (target / "routing.json").read_text() == "v2" and (target / "training_summary.json").is_file()
    assert (running_app / "routing.json").read_text() == "v1"  # the app's version is untouched
    assert not (versions / ".staging-killed").exists()
    assert len([p for p in versions.iterdir()]) == VERSIONS_KEPT  # the plain folder's version was the oldest
    assert not os.path.isabs(os.readlink(target))  # relative: the output folder can be moved or copied


def test_a_serve_replica_refuses_weights_other_than_the_ones_routing_was_tuned_with(tmp_path):
    """Each replica checks what it loads against routing.json's hashes: a republish under a running app can
    never give it a new CRM with an old threshold."""
    from raylib.serving.deployments import verified
    from raylib.stages import file_sha1

    (tmp_path / "model.safetensors").write_bytes(b"tuned")
    tuned = file_sha1(tmp_path / "model.safetensors")
    assert verified(str(tmp_path), "model.safetensors", tuned) == str(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"replaced")
    with pytest.raises(RaylibError, match="model.safetensors is not the file routing.json was tuned with"):
        verified(str(tmp_path), "model.safetensors", tuned)


@pytest.mark.parametrize("env, said", [
    ({"RAYLIB_SERVE_TOKEN": "  "}, "RAYLIB_SERVE_TOKEN is set but empty"),
    ({"RAYLIB_SERVE_TOKEN_FILE": "{tmp}/empty"}, "the token file is empty"),
    ({"RAYLIB_SERVE_TOKEN_FILE": "{tmp}/missing"}, "the token file cannot be read"),
])
def test_a_token_source_set_but_unreadable_or_empty_fails_closed(tmp_path, env, said):
    """The router resolves its token when it starts: a source that is set but yields no token stops it,
    instead of serving every endpoint open (an empty file) or answering 500 to every request (a missing one)."""
    from raylib.serving import token_from_env

    (tmp_path / "empty").write_text(" \n\n")
    env = {k: v.format(tmp=tmp_path) for k, v in env.items()}
    with pytest.raises(RaylibError, match=said):
        token_from_env(env)
    (tmp_path / "token").write_text("s3cret\n")
    assert token_from_env({"RAYLIB_SERVE_TOKEN_FILE": str(tmp_path / "token")}) == "s3cret"
    assert token_from_env({}) is None  # nothing set: auth off, which /healthz says


def test_the_gate_refuses_before_the_body_and_no_token_beyond_loopback_needs_insecure():
    from raylib.serving.guards import MAX_BODY_BYTES, check_exposure, gate

    bearer = {"authorization": "Bearer s3cret"}
    assert gate("/predict", "POST", {"content-length": "10"}, "s3cret") == (401, "missing or wrong bearer token")
    assert gate("/healthz", "GET", {}, "s3cret") is None
    assert gate("/predict", "POST", {**bearer, "content-length": str(MAX_BODY_BYTES + 1)}, "s3cret")[0] == 413
    assert gate("/predict", "POST", bearer, "s3cret")[0] == 411  # chunked: its size is unknown until read
    assert gate("/predict", "POST", {**bearer, "content-length": "12"}, "s3cret") is None
    check_exposure("127.0.0.1", has_token=False, insecure=False)  # this machine only: fine
    check_exposure("0.0.0.0", has_token=True, insecure=False)
    check_exposure("0.0.0.0", has_token=False, insecure=True)
    with pytest.raises(RaylibError, match="serving on 0.0.0.0 without a token"):
        check_exposure("0.0.0.0", has_token=False, insecure=False)


@pytest.mark.parametrize("bad, field", [({"llm_timeout_s": 0}, "llm_timeout_s"),
                                        ({"llm_timeout_s": float("nan")}, "llm_timeout_s"),
                                        ({"crm_timeout_s": -1}, "crm_timeout_s"),
                                        ({"threshold": 0.9}, "threshold"),
                                        ({"llm_timout_s": 5}, "llm_timout_s")])
def test_live_router_settings_are_checked_whole(bad, field):
    """`user_config` is validated before any of it applies: a misspelt key or a timeout that would silently
    bypass the LLM is refused, naming the field."""
    from pydantic import ValidationError

    from raylib.serving.schemas import RouterSettings

    with pytest.raises(ValidationError, match=field):
        RouterSettings(**{"threshold": 0.3, **bad})


def test_the_breaker_skips_a_failing_llm_and_tries_again_after_its_cooldown():
    from raylib.serving.guards import Breaker

    now = [0.0]
    breaker = Breaker(failures=2, cooldown_s=30.0, clock=lambda: now[0])
    breaker.record(False)
    assert not breaker.open
    breaker.record(False)
    assert breaker.open  # two in a row: uncertain samples get the CRM's answer at once
    now[0] = 31.0
    assert not breaker.open  # cooled down: the LLM is tried again
    breaker.record(True)
    breaker.record(False)
    assert not breaker.open  # a success resets the count


def test_raylib_serve_refuses_an_open_public_host_and_names_a_bad_option(tmp_path, capsys, monkeypatch):
    from jobs.cli import serve_main

    for name in ("RAYLIB_SERVE_TOKEN", "RAYLIB_SERVE_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    for argv, said in ((["--host", "0.0.0.0"], "error: serving on 0.0.0.0 without a token"),
                       (["--llm-timeout-s", "nan"], "error: --llm-timeout-s nan: Input should be a finite number")):
        assert serve_main(["--artifacts", str(tmp_path), *argv]) == 2  # before Ray starts or an artifact is read
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(said), lines


@pytest.mark.parametrize("changes, said", [
    ({"data": {"time_split": "nan,0.1,0.1"}}, "data.time_split: [nan, 0.1, 0.1] must be three positive"),
    ({"data": {"seed": -1}}, "data.seed: Input should be greater than or equal to 0"),
    ({"train": {"seed": 2**40}}, "train.seed: Input should be less than 4294967296"),
])
def test_a_split_or_seed_that_would_fail_after_work_started_is_one_line_before(changes, said):
    from raylib.config import from_dict
    from raylib.methods.corella.config import CorellaJobConfig

    with pytest.raises(RaylibError, match=re.escape(said)):
        from_dict(CorellaJobConfig, changes)


# Cells a user's file may hold: numbers, and what breaks readers (NaN, infinities, overflow, text, nothing).
NASTY_CELLS = ["0", "1", "5", "4.5", "-3", "1e30", "-1e400", "nan", "inf", "-inf", "", " ", "abc", "½", "0x10",
               "9223372036854775808", "1_000"]


def test_any_interaction_file_is_read_or_refused_in_one_line(tmp_path):
    """Hypothesis: random atomic files of nasty cells; the reader returns a dataset whose times and ratings are
    finite, or a RaylibError of one line, never another exception."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from raylib.data.dataset import load_dataset

    row = st.tuples(st.sampled_from(["u1", "u2", "ü", ""]), st.sampled_from(["i1", "i2", "i3"]),
                    st.sampled_from(NASTY_CELLS), st.sampled_from(NASTY_CELLS))

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(row, min_size=1, max_size=6))
    def read(rows):
        (tmp_path / "d.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" +
                                          "".join("\t".join(r) + "\n" for r in rows))
        (tmp_path / "d.item").write_text("item_id:token\ttitle:token_seq\ni1\tOne\ni2\tTwo\ni3\tThree\n")
        try:
            data = load_dataset(tmp_path)
        except RaylibError as err:
            assert len(str(err).splitlines()) == 1, str(err)
            return
        inter = data.interactions.to_pydict()
        assert all(abs(t) < 2**63 for t in inter["timestamp"])
        assert all(r == r and abs(r) != float("inf") for r in inter.get("rating", []))

    read()


def test_any_request_body_is_a_sample_or_a_validation_error_that_json_can_carry():
    """Hypothesis over /predict bodies: any JSON value per field is a valid Sample (whose features the router's
    rules then take) or a pydantic error, and the 422 built from it is valid JSON."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from pydantic import ValidationError

    from raylib.serving import RequestRules
    from raylib.serving.guards import safe_json
    from raylib.serving.schemas import Sample

    values = st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=8),
                       st.lists(st.one_of(st.floats(), st.text(max_size=4)), max_size=3))
    fields = ["user_id", "item_id", "age", "gender", "zip", "title", "genres", "history_items", "history_titles",
              "history_ratings"]
    base = {"user_id": "u", "item_id": "i", "title": "T (1999)"}
    rules = RequestRules({"age_buckets": True, "zip_prefix": 2}, (1.0, 5.0))

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(st.sampled_from(fields), values, max_size=4))
    def check(changes):
        try:
            sample = Sample.model_validate({**base, **changes})
        except ValidationError as err:
            json.loads(safe_json({"detail": [{"loc": list(e["loc"]), "msg": e["msg"]} for e in err.errors()]}))
            return
        try:
            rules.apply([sample.model_dump()])
        except ValueError as err:  # a 422 naming the sample
            assert str(err).startswith("samples[0].")

    check()
