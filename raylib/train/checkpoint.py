"""Checkpoints: what a reported checkpoint folder holds, the run fingerprint, and LoRA adapters in PEFT format.

A reported checkpoint folder holds:
  trainer_state.json  epoch, optimizer step, best metric, patience counter, per-epoch history
  <task files>        the task's trainable state (LoRA tasks: adapter/ = latest, best_adapter/ = best so far)
  engine/             DeepSpeed's optimizer + LR-schedule state (AdamW moments), one shard per rank, frozen
                      weights excluded: a resumed run continues the interrupted one, not a cold restart
  rng_rank<r>.safetensors  each rank's torch RNG state (dropout)
  manifest_rank<r>.json    written last by each rank: its files and their sizes. A checkpoint is complete when
                      every rank's manifest is there and every file it lists has that size (`checkpoint_problem`).

Each rank builds its part in a temporary folder and renames it into place once written (`write_checkpoint`),
so a crash mid-save leaves a `.partial` folder, never one that looks complete; Ray Train then copies the folder
to storage and registers it only once copied. A copy cut short is caught by the manifests.

The engine state is DeepSpeed's own format (torch pickles); it is only ever loaded from the run's own
`output_dir`. Everything meant to be shared (adapters, CRM weights) is safetensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from raylib import RaylibError
from raylib.stages import read_json, write_json

STATE_FILE = "trainer_state.json"
ENGINE_DIR = "engine"
ENGINE_TAG = "state"
ADAPTER_DIR = "adapter"
BEST_ADAPTER_DIR = "best_adapter"
FINGERPRINT_FILE = "run.json"
# Fields that may change between a run and its resumption: how long to train, how to log, where to run.
RUN_LENGTH_FIELDS = {"epochs", "patience", "max_steps", "max_failures", "log_every_steps", "eval_batch_size",
                     "cpus_per_worker", "fresh_start", "num_workers", "use_gpu", "offload_optimizer",
                     "offload_params", "gradient_checkpointing", "gpu", "storage_path",
                     "checkpoint_every_steps"}


@dataclasses.dataclass
class TrainerState:
    epoch: int = 0  # completed epochs
    global_step: int = 0  # optimizer steps taken
    best_metric: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    finished: bool = False
    world_size: int = 1
    step_in_epoch: int = 0  # optimizer steps of the unfinished epoch (a mid-epoch checkpoint), its losses/tokens
    epoch_losses: list[float] = dataclasses.field(default_factory=list)
    epoch_tokens: int = 0
    resumes: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # optimizer step, epoch, time of each
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    step_times: list[float] = dataclasses.field(default_factory=list)  # seconds per micro-batch, for benchmarks

    def save(self, folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> "TrainerState":
        return cls(**json.loads((folder / STATE_FILE).read_text()))


# ---------------------------------------------------------------- fingerprint: resume only the same run
def data_digest(train: list | str | Path, valid: list | str | Path) -> str:
    """sha1 of the training and validation data: records (dicts or dataclasses), or Parquet files/folders."""
    from raylib.train.data import as_dict

    def plain(split):
        if isinstance(split, (str, Path)):
            files = [Path(split)] if Path(split).is_file() else sorted(Path(split).rglob("*.parquet"))
            digest = hashlib.sha1()
            for f in files:
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
            return {"parquet": digest.hexdigest()}
        return [as_dict(r) for r in split]

    return hashlib.sha1(json.dumps([plain(train), plain(valid)], sort_keys=True, default=str).encode()).hexdigest()


# What fingerprints called each task before tasks had stable names (their module paths, which a move changes):
# runs made then still resume.
LEGACY_TASK_IDS = {"raylib.tasks.sft.SftTask": "sft", "raylib.tasks.tallrec.TallrecTask": "tallrec",
                   "raylib.tasks.nextitem.BigrecTask": "bigrec", "raylib.tasks.nextitem.GenrecTask": "genrec",
                   "raylib.tasks.sasrec.SasrecTask": "sasrec", "raylib.tasks.crm.CrmTask": "crm",
                   "raylib.tasks.corella.CorellaTask": "corella",
                   "raylib.tasks.cocktail.EntropyMergeTask": "entropy_merge"}


def run_fingerprint(task_cls, job, data: str) -> dict[str, Any]:
    """What makes a run this run: task (its stable `task_id`, not its module path: moving the class changes no
    run), model, LoRA, training settings (less run length) and the data's digest."""
    from raylib.config import to_dict
    from raylib.model import weights_digest
    from raylib.placement import Placement, dtype_there

    train = {k: v for k, v in to_dict(job.train).items() if k not in RUN_LENGTH_FIELDS}
    model = to_dict(job.model)
    if weights_digest(job.model.name):  # a local folder: its weights as they are now, not its name
        model["weights"] = weights_digest(job.model.name)
    # the dtype "auto" resolves to where the workers run: a CPU's fp32 run is not a GPU's bf16 one
    resolved = dtype_there(job.model.dtype, Placement(gpus=0.01 if job.train.use_gpu else 0.0,
                                                       address=job.ray_address))
    return {"task": task_cls.task_id, "model": model, "resolved_dtype": resolved,
            "lora": to_dict(job.lora), "train": train, "records": data, **task_cls.fingerprint(job)}


def current_fingerprint(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved fingerprint as this version writes it: an older one named its task by module path, and said no
    resolved dtype (every run then was a CPU's, fp32)."""
    if not saved:
        return saved
    task = saved.get("task")
    if "resolved_dtype" not in saved:
        from raylib.placement import choose_dtype

        saved = {**saved, "resolved_dtype": str(choose_dtype(saved.get("model", {}).get("dtype", "auto"), "cpu"))}
    return {**saved, "task": LEGACY_TASK_IDS.get(task, task)}


def _changed_fields(old: dict, new: dict) -> set[str]:
    """The top-level fields of two fingerprints that differ (none when there is no old one)."""
    new = json.loads(json.dumps(new, default=str))
    return {k for k in set(old) | set(new) if old.get(k) != new.get(k)} if old else set()


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append("the training/validation records differ" if key == "records" else f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def claim_output_dir(output: Path, fingerprint: dict[str, Any], fresh_start: bool, storage: str, run: str,
                     start_weights: tuple[str, ...] = ()) -> bool:
    """Make `output` this run's folder. True when the run's folder under its storage (`run`) holds checkpoints of
    this same run (they will be resumed); a different run's checkpoints are an error, or are discarded with
    `fresh_start` (the run's own folder only: a storage path other runs share keeps theirs). Checkpoints that
    differ only in `start_weights` (the fingerprint fields naming the weights the run starts from) began from
    weights since retrained: they are discarded, said in one line."""
    from raylib.train.storage import discard, has_file_named, mark

    marker = output / FINGERPRINT_FILE
    old = current_fingerprint(read_json(marker) or {})
    moved = _changed_fields(old, fingerprint)
    if not fresh_start and moved and moved <= set(start_weights) and has_file_named(storage, run, STATE_FILE):
        print(f"[train] {output}: the weights it starts from changed ({', '.join(sorted(moved))}): its "
              "checkpoints began elsewhere and are discarded", flush=True)
        fresh_start = True
    if fresh_start:
        default_layout = storage == str(output / "ray")  # inside an output_dir our run.json claims
        discard(storage, run, ours=default_layout and marker.is_file())
        marker.unlink(missing_ok=True)
    has_checkpoints = has_file_named(storage, run, STATE_FILE)
    if has_checkpoints:  # never after a fresh start: `old` is what these checkpoints were made under
        changes = _differences(old, fingerprint) if old else ["it was made by an older version (no run.json)"]
        if changes:
            raise RaylibError(f"output_dir {output} holds checkpoints of a different run ({'; '.join(changes)}): "
                              "use another output_dir, or add train.fresh_start=true to discard them.")
    output.mkdir(parents=True, exist_ok=True)
    write_json(marker, fingerprint)
    mark(storage, run, {"output_dir": str(output)})
    return has_checkpoints


# ---------------------------------------------------------------- optimizer, schedule and RNG state
def save_engine_state(engine, folder: Path, rank: int) -> None:
    """Every rank: its optimizer shard (and, on rank 0, the LR schedule) plus its RNG state."""
    from safetensors.torch import save_file

    engine.save_checkpoint(str(folder / ENGINE_DIR), tag=ENGINE_TAG, exclude_frozen_parameters=True)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(folder / f"rng_rank{rank}.safetensors"))


MANIFEST = "manifest_rank{rank}.json"


def write_checkpoint(folder: Path, engine, rank: int, world: int, rank_zero_files) -> Path:
    """Every rank: build its part of a checkpoint in `<folder>.partial`, list it in its manifest (last), then
    rename the folder to `folder`. `rank_zero_files(partial)` writes the task's files and the trainer state."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    before = set(partial.rglob("*"))
    save_engine_state(engine, partial, rank)  # every rank writes its own optimizer shard
    if rank == 0:
        rank_zero_files(partial)
    mine = sorted(p for p in partial.rglob("*") if p.is_file() and p not in before)
    (partial / MANIFEST.format(rank=rank)).write_text(json.dumps(
        {"rank": rank, "world_size": world,
         "files": {str(p.relative_to(partial)): p.stat().st_size for p in mine}}, indent=1))
    os.replace(partial, folder)
    return folder


def checkpoint_problem(folder: Path) -> str | None:
    """None when `folder` holds a complete checkpoint; else what is missing or cut short."""
    first = folder / MANIFEST.format(rank=0)
    if not first.is_file():
        return f"no {first.name}"
    world = json.loads(first.read_text())["world_size"]
    for rank in range(world):
        manifest = folder / MANIFEST.format(rank=rank)
        if not manifest.is_file():
            return f"no {manifest.name} (written by {world} workers)"
        for name, size in json.loads(manifest.read_text())["files"].items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} of its {size} bytes"
    return None


def complete_checkpoint_before(storage: str, run: str, latest: str) -> Path | None:
    """A local copy of the newest complete checkpoint of the run other than `latest` (its path in storage), or
    None. Ray names checkpoint folders by time (`checkpoint_<timestamp>`), so they sort oldest first."""
    import tempfile

    import pyarrow.fs as pafs

    from raylib.train.storage import filesystem

    fs, root = filesystem(storage)
    base = f"{root.rstrip('/')}/{run}"
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return None
    found = [i.path for i in fs.get_file_info(pafs.FileSelector(base)) if i.type == pafs.FileType.Directory
             and i.base_name.startswith("checkpoint_") and i.path.rstrip("/") != str(latest).rstrip("/")]
    for path in sorted(found, reverse=True):
        local = Path(tempfile.mkdtemp(prefix="raylib-ckpt-")) / Path(path).name
        local.mkdir()
        pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        if checkpoint_problem(local) is None:
            return local
        shutil.rmtree(local.parent, ignore_errors=True)
    return None


def load_engine_state(engine, folder: Path, rank: int) -> None:
    from safetensors.torch import load_file

    path, _ = engine.load_checkpoint(str(folder / ENGINE_DIR), tag=ENGINE_TAG, load_module_strict=False,
                                     load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load the engine state in {folder / ENGINE_DIR}.")
    rng = load_file(str(folder / f"rng_rank{rank}.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def gathered_trainable(module, zero_stage: int, read):
    """`read(module)` with every trainable parameter whole. Under ZeRO-3 they are partitioned (empty `[0]`
    shapes locally, peft#453 / DeepSpeed#4295), so every rank must enter the gather."""
    if zero_stage != 3:
        return read(module)
    import deepspeed

    params = [p for p in module.parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        return read(module)


# ---------------------------------------------------------------- LoRA adapters (standard PEFT folders)
def adapter_state(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def write_adapter(model, state_dict: dict[str, torch.Tensor], folder: Path) -> None:
    """Write `adapter_config.json` + `adapter_model.safetensors` as `PeftModel.save_pretrained` does."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].save_pretrained(str(folder))
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})


def load_adapter_into(model, folder: Path) -> None:
    """Load adapter weights (safetensors) into an existing PEFT model before DeepSpeed wraps it."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))


def adapter_sha1(folder: str | Path) -> str:
    """sha1 of a PEFT adapter folder's weights: keys what was computed with that adapter (beams, scores, mixes)."""
    from raylib.stages import file_sha1

    return file_sha1(Path(folder) / "adapter_model.safetensors")


VERSIONS_KEPT = 2  # the published version and the one before it, which an app started earlier may still load


def publish_folder(source: Path, target: Path, extra: dict[str, Any] | None = None) -> Path:
    """Publish a finished folder at `target` so that a reader never finds it half-written or missing: the copy goes
    into a new version folder beside it (`.<name>.versions/<version>`), and `target`, a relative symlink, is
    switched to it by one rename. A reader that resolves `target` once (`published_version`: the Serve app) keeps
    one consistent version while a newer one is published; the last VERSIONS_KEPT versions are kept."""
    target = Path(target)
    versions = target.with_name(f".{target.name}.versions")
    versions.mkdir(parents=True, exist_ok=True)
    version = versions / f"{time.time_ns():020d}-{os.getpid()}"
    staging = versions / f".staging-{version.name}"
    shutil.copytree(source, staging)
    if extra:
        (staging / "training_summary.json").write_text(json.dumps(extra, indent=1, default=str))
    os.replace(staging, version)
    if target.is_dir() and not target.is_symlink():  # published before versions existed: kept as the oldest one
        os.replace(target, versions / f"{0:020d}-unversioned")
    link = target.with_name(f".{target.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(version, target.parent), link)
    os.replace(link, target)
    _prune_versions(versions, current=version)
    return target


def published_version(target: str | Path) -> Path:
    """The version folder `target` points at now (a folder published otherwise: itself)."""
    return Path(target).expanduser().resolve()


def _prune_versions(versions: Path, current: Path) -> None:
    """Versions older than the last VERSIONS_KEPT, and copies a killed publish left (the output folder's lock
    makes this process its only publisher): this project's own folders, nothing else."""
    for leftover in versions.glob(".staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    finished = sorted(p for p in versions.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in finished[:-VERSIONS_KEPT]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
