"""cluster.yaml passes Ray's own cluster-launcher validation; `ray job submit` runs a GPU TALLRec job on a real
local cluster shaped like cluster.yaml: a CPU-only head (where the job's driver runs) and a worker node with a
logical GPU (free ports, auth disabled). Every weight load happens on the worker node, holding a GPU id."""

import copy
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_valid():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(config)
    validate_config(prepare_config(copy.deepcopy(config)))
    assert "pip install -e ." in " ".join(config["setup_commands"])
    broken = copy.deepcopy(config)
    broken["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        validate_config(broken)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:  # a graceful stop takes ~30 s here; the group dies with the test anyway
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture
def local_cluster():
    """`ray start --head --block` with no GPU, then `ray start --address ... --num-gpus=1 --block` (a second node
    on this machine), each in its own process group on free ports; stopped by killing the groups. The head's own
    temp dir matters: `ray start` records "the latest cluster" in its temp dir, and Ray Train's placement-group
    cleaner of another local Ray (the test session's) would otherwise look its controller up in this cluster,
    find nothing and tear that run down."""
    bin_dir = Path(sys.executable).parent
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    dashboard, gcs = free_port(), free_port()
    ports = lambda: [f"--{name}-port={free_port()}" for name in (  # noqa: E731 - every port a node opens, free
        "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export", "runtime-env-agent", "node-manager",
        "object-manager")]
    head = _start([str(bin_dir / "ray"), "start", "--head", "--block", "--num-cpus=4", "--num-gpus=0",
                   f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                   f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}", *ports(),
                   f"--temp-dir={temp_dir}", "--disable-usage-stats"], env)
    address = f"http://127.0.0.1:{dashboard}"
    nodes = []
    deadline = time.time() + 300  # a busy 2-core machine can take minutes to start a head
    while time.time() < deadline:  # the dashboard answers (a `ray job list` per probe cost seconds of start-up)
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=5) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        time.sleep(1)
    else:
        _stop(head)
        pytest.fail("the local Ray head did not come up within 300 s")
    gpu_node = _start([str(bin_dir / "ray"), "start", "--block", f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
                       "--num-gpus=1", *ports(), "--disable-usage-stats"], env)
    from ray.util.state import list_nodes

    while time.time() < deadline and len(nodes) < 2:
        nodes = [n for n in list_nodes(address=address) if n.state == "ALIVE"]
        time.sleep(2)
    if len(nodes) < 2:
        _stop(gpu_node)
        _stop(head)
        pytest.fail("the GPU node did not join within 300 s")
    head_id = next(n.node_id for n in nodes if n.is_head_node)
    yield address, env, head_id
    _stop(gpu_node)
    _stop(head)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_runs_a_gpu_job_whose_weights_load_only_on_the_gpu_node(local_cluster, tiny_model_dir,
                                                                              movie_records, tmp_path):
    """`train.use_gpu=true` from the CPU head: the process-group backend follows what the workers have (gloo, no
    CUDA here), training and both scorings run on the GPU node holding a GPU id; the driver loads nothing."""
    from raylib.data import write_records
    from raylib.placement import read_load_log

    address, env, head_id = local_cluster
    load_log = tmp_path / "loads.jsonl"
    write_records(movie_records["train"][:8], tmp_path / "train.jsonl.json")
    write_records(movie_records["valid"][:8], tmp_path / "valid.json")
    write_records(movie_records["test"][:16], tmp_path / "test.parquet")
    out = tmp_path / "out"
    # No --working-dir here: two nodes on ONE machine share the head's session folder, and both unpack the
    # uploaded package into the same place as their processes start, so the driver on the head sometimes found a
    # module missing mid-unpack (twice in three runs). A real cluster has one such folder per machine. Both nodes
    # use this checkout through the venv's editable install instead.
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
           "--runtime-env-json", json.dumps({"env_vars": {"RAYLIB_LOAD_LOG": str(load_log)}}),
           "--", "python", "-m", "jobs.tallrec", "train.use_gpu=true", "inference.gpus=0.5",
           f"model.name={tiny_model_dir}", "model.dtype=fp32", "data.source=files",
           f"data.train_file={tmp_path / 'train.jsonl.json'}", f"data.valid_file={tmp_path / 'valid.json'}",
           f"data.test_file={tmp_path / 'test.parquet'}", "train.epochs=1", "train.batch_size=4",
           "train.micro_batch_size=4", "train.cpus_per_worker=1", f"output_dir={out}"]
    for _ in range(6):  # the head answers `ray job list` before its job agent can take a submission
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent to submit job" not in done.stderr + done.stdout:
            break
        time.sleep(3)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr).lower()
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == {"source": str(tmp_path / "train.jsonl.json"), "train": 8, "train_pool": 8,
                              "valid": 8, "test": 16}
    assert {"auc", "logloss", "accuracy"} <= set(report["tuned"]) and "zero_shot" in report
    # a logical GPU runs on the CPU, so the dtype rule scored in fp32
    assert report["tuned"]["device"] == "cpu" and report["tuned"]["eval_dtype"] == "float32"
    from jobs.cli import report_table  # `raylib report <output_dir>`: the finished run's table again

    table = report_table(str(out))
    assert "zero-shot" in table and "tuned" in table and f"{report['tuned']['auc']:.4f}" in table
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    loads = read_load_log(load_log)
    assert len(loads) >= 3  # training, zero-shot and tuned scoring
    assert all(r["node_id"] != head_id and r["gpu_ids"] for r in loads), loads


SPREAD_SCRIPT = """
import json, sys
import ray
from ray.cluster_utils import Cluster
import raylib.batch
from raylib.config import from_dict
from raylib.data import read_records
from raylib.methods.tallrec.config import TallrecJobConfig
from raylib.methods.tallrec.pipeline import score_on_ray

model, records, out = sys.argv[1], read_records(sys.argv[2]), sys.argv[3]
raylib.batch.PART_ROWS = 16  # three parts of the 48 records: enough work for an actor on each GPU node


def free_ports():  # the session's own Ray runs beside this cluster: no node may take a default port
    import socket
    ports = {}
    for name in ("dashboard_agent_listen_port", "metrics_agent_port", "metrics_export_port", "runtime_env_agent_port"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports[name] = s.getsockname()[1]
    return {**ports, "include_dashboard": False}


cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0, **free_ports()})
for _ in range(2):
    cluster.add_node(num_cpus=2, num_gpus=1, **free_ports())
ray.init(address=cluster.address)
scores = {}
for actors in (0, 1):  # 0: one actor per GPU of the cluster
    job = from_dict(TallrecJobConfig, {"model": {"name": model, "dtype": "fp32"}, "output_dir": f"{out}/{actors}",
                                       "train": {"use_gpu": True, "cpus_per_worker": 1},
                                       "inference": {"gpus": 1, "actors": actors}})
    scores[actors] = score_on_ray(job, records, None)["probabilities"]
print(json.dumps({"head": ray.get_runtime_context().get_node_id(), "scores": scores}))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_batch_scoring_runs_an_actor_on_every_gpu_node_and_none_on_the_head(tiny_model_dir, movie_records,
                                                                           tmp_path):
    """A `ray.cluster_utils.Cluster` (a CPU head, two worker nodes with a logical GPU each): TALLRec's scoring
    pool has an actor on each GPU node (each loads the model once), none on the head, and scores as one actor
    does."""
    from raylib.data import write_records
    from raylib.placement import read_load_log

    records = write_records(movie_records["test"][:48], tmp_path / "test.json")
    load_log = tmp_path / "loads.jsonl"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAYLIB_LOAD_LOG": str(load_log)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", SPREAD_SCRIPT, str(tiny_model_dir), str(records), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    loads = read_load_log(load_log)
    pool, single = loads[:2], loads[2:]
    assert len(pool) == 2 and len(single) == 1, loads  # two actors, then one: each loaded the model once
    assert {r["node_id"] for r in pool} == {r["node_id"] for r in loads} and len({r["node_id"] for r in pool}) == 2
    assert all(r["gpu_ids"] and r["node_id"] != result["head"] for r in loads)
    assert result["scores"]["0"] == pytest.approx(result["scores"]["1"], abs=1e-6)
