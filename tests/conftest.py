"""Shared fixtures: a tiny random LLaMA (built here, no download) for mechanics, one Ray for the session.

The session's local Ray offers 2 logical GPUs (RAYLIB_LOCAL_GPUS): a step that asks for a GPU is scheduled with a
GPU id and runs on the CPU, so a job with `train.use_gpu=true` shows where each step would run on a GPU machine.
Every weight load is logged (RAYLIB_LOAD_LOG, `raylib.placement.note_weights_loaded`); the `loads` fixture reads
the loads a test made.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYLIB_LOCAL_GPUS", "2")
# MLflow tracking off unless a test turns it on (`tracking.enabled`): a store costs seconds to create.
os.environ.setdefault("RAYLIB_TRACKING", "off")
# Ray Train's controller polls its workers every 2 s by default: each tiny run ended up to 2 s after its last
# step (about 28 runs in the suite). Its Prometheus metrics have no reader here.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_TRAIN_METRICS_ENABLED", "0")
LOAD_LOG = Path(tempfile.gettempdir()) / f"raylib-test-loads-{os.getpid()}.jsonl"
os.environ["RAYLIB_LOAD_LOG"] = str(LOAD_LOG)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ML100K_RAW = SHARED / "ml-100k"
TALLREC_MOVIE = SHARED / "tallrec" / "movie"


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} (../shared) is not present")


@pytest.fixture(scope="session")
def tokenizer():
    from raylib.config import ModelConfig
    from raylib.model import load_tokenizer

    return load_tokenizer(ModelConfig())


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer, 64-wide LLaMA with random weights and the SmolLM2 tokenizer, saved as a HF folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class Loads:
    """The weight loads made since this object was created (`raylib.placement.note_weights_loaded`)."""

    def __init__(self):
        self.start = LOAD_LOG.stat().st_size if LOAD_LOG.exists() else 0

    def records(self) -> list[dict]:
        from raylib.placement import read_load_log

        return read_load_log(LOAD_LOG, self.start) if LOAD_LOG.exists() else []

    def assert_all_on_gpu_workers(self, expect: set[str]) -> list[dict]:
        """Every load ran in a Ray process holding a GPU id, none in this (the driver's) process, and among them
        loads of each kind in `expect` (e.g. {"llm", "crm"}: the part of `what` before ":")."""
        records = self.records()
        assert records, "no weights were loaded"
        assert not [r for r in records if r["pid"] == os.getpid()], "the driver process loaded weights"
        assert all(r["gpu_ids"] for r in records), [r for r in records if not r["gpu_ids"]]
        assert expect <= {r["what"].split(":")[0] for r in records}, records
        return records


@pytest.fixture
def loads() -> Loads:
    return Loads()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (starting Ray costs 5-10 s)."""
    import ray

    from raylib.runtime import ensure_ray

    _without_placement_group_cleaner()
    ensure_ray()
    yield ray
    ray.shutdown()


def _without_placement_group_cleaner() -> None:
    """Ray Train starts a detached placement-group cleaner per run: a cold process the run waits for, which polls
    Ray's state API every second and removes the run's placement group should its controller die. The suite's
    in-process runs end cleanly, and each starts seconds sooner without it. Jobs the suite runs in subprocesses
    (`ray job submit`, the CLI tests) keep it. (A Ray without this private hook keeps it too.)"""
    try:
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    except ImportError:
        return
    default_callbacks = DataParallelTrainer._create_default_callbacks

    def callbacks(self):
        return [c for c in default_callbacks(self) if not isinstance(c, PlacementGroupCleanerCallback)]

    DataParallelTrainer._create_default_callbacks = callbacks


def interleave_labels(records):
    """Yes, No, Yes, No, ... while both last (then the rest), so every slice [:2k] holds both labels."""
    yes, no = [r for r in records if r.label == 1], [r for r in records if r.label == 0]
    return [r for pair in zip(yes, no) for r in pair] + yes[len(no):] + no[len(yes):]


@pytest.fixture(scope="session")
def movie_records():
    """TALLRec records built from the embedded MovieLens-100K (no ../shared needed; the Parquet records cache
    makes it ~1 s after the first build): 64 train, 32 valid (stratified), 200 test records, users split apart.
    Each split is interleaved by label: tests slice [:8] / [:16] and need both labels there (validation AUC)."""
    from raylib.methods.tallrec.config import DataConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data

    data = load_tallrec_data(DataConfig(train_samples=64, valid_samples=32, test_samples=200))
    return {split: interleave_labels(getattr(data, split)) for split in ("train", "valid", "test")}


@pytest.fixture(scope="session")
def official_movie_records():
    """The official TALLRec movie files (../shared), for tests that check reproducing them."""
    from raylib.data import read_records

    if not TALLREC_MOVIE.exists():
        pytest.skip("../shared/data/tallrec/movie is not present")
    return {split: read_records(TALLREC_MOVIE / f"{split}.json") for split in ("train", "valid", "test")}
