"""RecCocktail's weight-space mix of two LoRA adapters (Hou et al., "RecCocktail", 2025, Sec. 3.3).

Every LoRA-wrapped linear module m gets a pair of logits; softmax gives convex weights (w1_m, w2_m) and the
module computes `W0 x + w1_m (alpha/r) B1 A1 x + w2_m (alpha/r) B2 A2 x` ("base spirit" = adapter 1,
"ingredient" = adapter 2). `MixedLora` does this with both adapters active in ONE PeftModel: the weights are
written into PEFT's per-adapter `scaling` before each module's forward, so gradients reach the logits and
nothing else trains. The logits are learnt by entropy minimisation (`answer_entropy`, `raylib.methods.cocktail.task`)
or searched with Ray Tune (`raylib.methods.cocktail.pipeline`).

Folding (`fold`): a convex mix of two rank-r LoRAs is in general rank 2r, so it is folded EXACTLY into one
rank-2r adapter by concatenating the factors: PEFT's `add_weighted_adapter(combination_type="cat")` builds
A = [s1 A1; s2 A2], B = [B1, B2] with scaling 1; each module's two row blocks of A are then multiplied by its
own (w1_m, w2_m). The result is one standard PEFT adapter: one LoRA forward per module at inference (the same
cost as a single adapter; merged into the base weights it costs nothing at all).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from raylib import RaylibError
from raylib.train.checkpoint import publish_folder

ADAPTERS = ("base", "ingredient")
COEFFICIENTS_FILE = "mix.json"  # beside a folded adapter: the per-module weights it was folded from


# ------------------------------------------------------------------ compatibility
def check_compatible(first: str | Path, second: str | Path) -> dict[str, Any]:
    """The two adapters' common config; a RaylibError naming what differs (rank, alpha, target modules, base)."""
    configs = []
    for folder in (first, second):
        path = Path(folder) / "adapter_config.json"
        if not path.is_file():
            raise RaylibError(f"{folder} is not a PEFT adapter folder (no adapter_config.json).")
        configs.append(json.loads(path.read_text()))
    a, b = configs
    checks = {"rank (r)": "r", "lora_alpha": "lora_alpha", "target modules": "target_modules",
              "base model": "base_model_name_or_path", "peft type": "peft_type"}
    for what, key in checks.items():
        va, vb = a.get(key), b.get(key)
        if key == "target_modules":
            va, vb = sorted(va or []), sorted(vb or [])
        if key == "base_model_name_or_path" and (not va or not vb):
            continue
        if va != vb:
            raise RaylibError(f"The adapters cannot be mixed module by module: their {what} differ "
                              f"({first}: {va!r}, {second}: {vb!r}).")
    return a


def load_two(model, first: str | Path, second: str | Path):
    """A PeftModel over `model` holding both adapters (named "base" and "ingredient"), after the check."""
    from peft import PeftModel

    check_compatible(first, second)
    peft_model = PeftModel.from_pretrained(model, str(first), adapter_name=ADAPTERS[0])
    peft_model.load_adapter(str(second), adapter_name=ADAPTERS[1])
    return peft_model


def lora_modules(peft_model) -> dict[str, Any]:
    """name -> LoRA layer holding both adapters, in model order (the merge's per-module units)."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in peft_model.named_modules()
            if isinstance(m, LoraLayer) and all(a in m.lora_A for a in ADAPTERS)}


# ------------------------------------------------------------------ the mix
class MixedLora(torch.nn.Module):
    """Both adapters active, one learnable logit pair per LoRA module; everything else frozen.

    `logits` is [modules, 2]; `weights()` its row softmax. Initialised from `init` (w1 of every module, 0.5 by
    default: the plain average)."""

    def __init__(self, peft_model, init: float = 0.5):
        super().__init__()
        self.model = peft_model
        self.names = list(lora_modules(peft_model))
        if not self.names:
            raise RaylibError("The model has no LoRA module holding both adapters.")
        p = min(max(init, 1e-6), 1 - 1e-6)
        start = torch.log(torch.tensor([p, 1 - p], dtype=torch.float32))
        self.logits = torch.nn.Parameter(start.repeat(len(self.names), 1))
        peft_model.base_model.set_adapter(list(ADAPTERS))  # both active: their outputs add up
        for param in peft_model.parameters():
            param.requires_grad_(False)
        self._base_scaling = {}
        modules = dict(peft_model.named_modules())
        self._hooks = []
        for i, name in enumerate(self.names):
            module = modules[name]
            self._base_scaling[name] = {a: float(module.scaling[a]) for a in ADAPTERS}
            self._hooks.append(module.register_forward_pre_hook(self._scaler(i, name)))

    def _scaler(self, index: int, name: str):
        def hook(module, args):
            w = torch.softmax(self.logits[index], dim=0)
            for k, adapter in enumerate(ADAPTERS):
                module.scaling[adapter] = w[k] * self._base_scaling[name][adapter]
        return hook

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits.detach().float(), dim=-1)

    def set_weights(self, weights) -> None:
        """Fix the mix: `weights` [modules, 2] (rows sum to 1) or [2] for every module."""
        w = torch.as_tensor(weights, dtype=torch.float32).clamp_min(1e-12)
        w = w.expand(len(self.names), 2) if w.ndim == 1 else w
        if w.shape != (len(self.names), 2):
            raise RaylibError(f"Mixing weights of shape {tuple(w.shape)} for {len(self.names)} LoRA modules.")
        with torch.no_grad():
            self.logits.copy_(torch.log(w))

    def forward(self, **batch):
        return self.model(**batch)

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        modules = dict(self.model.named_modules())
        for name in self.names:
            for adapter in ADAPTERS:
                modules[name].scaling[adapter] = self._base_scaling[name][adapter]


def answer_entropy(logits: torch.Tensor, answer_ids: tuple[int, int]) -> torch.Tensor:
    """Mean Shannon entropy of the Yes/No answer distribution at each row's last position (the first answer
    token; RecCocktail Sec. 3.3 minimises the prediction entropy on unlabelled target-domain prompts)."""
    two = logits[:, -1, list(answer_ids)].float()
    log_p = torch.log_softmax(two, dim=-1)
    return -(log_p.exp() * log_p).sum(-1).mean()


# ------------------------------------------------------------------ coefficients on disk
def coefficients_doc(names: list[str], weights: torch.Tensor, **extra) -> dict[str, Any]:
    """The per-module weights as JSON: {"adapters": [...], "modules": {name: [w_base, w_ingredient]}, ...}."""
    rows = {n: [float(w[0]), float(w[1])] for n, w in zip(names, weights)}
    return {"adapters": list(ADAPTERS), "modules": rows, **extra}


def save_coefficients(names: list[str], weights: torch.Tensor, path: Path, **extra) -> None:
    Path(path).write_text(json.dumps(coefficients_doc(names, weights, **extra), indent=1))


def same_mix(folder: Path, doc: dict[str, Any]) -> bool:
    """True when `folder` holds a folded adapter made from exactly these weights and adapters."""
    path = Path(folder) / COEFFICIENTS_FILE
    if not path.is_file() or not (Path(folder) / "adapter_model.safetensors").is_file():
        return False
    return json.loads(path.read_text()) == json.loads(json.dumps(doc))


def load_coefficients(path: Path, names: list[str]) -> torch.Tensor:
    """[modules, 2] weights in `names` order; a clear error when the file's modules are not the adapters'."""
    data = json.loads(Path(path).read_text())
    rows = data.get("modules", {})
    missing, extra = sorted(set(names) - set(rows)), sorted(set(rows) - set(names))
    if missing or extra:
        raise RaylibError(f"{path} does not match the adapters' LoRA modules: missing {missing[:3]}, "
                          f"unknown {extra[:3]} ({len(missing)} / {len(extra)}).")
    return torch.tensor([rows[n] for n in names], dtype=torch.float32)


def layer_weights(names: list[str], global_w: float, per_layer: dict[int, float] | None = None) -> torch.Tensor:
    """[modules, 2] from a global w1 and optional per-decoder-layer w1 (layer index parsed from the name)."""
    import re

    out = []
    for name in names:
        found = re.search(r"\.layers\.(\d+)\.", name)
        w = (per_layer or {}).get(int(found.group(1)), global_w) if found else global_w
        out.append([w, 1.0 - w])
    return torch.tensor(out, dtype=torch.float32)


# ------------------------------------------------------------------ the fold
def fold(mixed: MixedLora, name: str = "cocktail") -> Any:
    """Add the mix to the PeftModel as ONE rank-2r adapter `name` (exact; see the module doc) and make it the
    only active one. Returns the PeftModel."""
    model = mixed.model
    weights = mixed.weights()
    mixed.remove_hooks()
    model.add_weighted_adapter(list(ADAPTERS), [1.0, 1.0], adapter_name=name, combination_type="cat")
    modules = dict(model.named_modules())
    with torch.no_grad():
        for (module_name, w) in zip(mixed.names, weights):
            module = modules[module_name]
            A = module.lora_A[name].weight
            r1 = module.lora_A[ADAPTERS[0]].weight.shape[0]
            A[:r1] *= w[0]
            A[r1:] *= w[1]
    model.set_adapter(name)
    return model


def save_folded(model, name: str, target: Path, coefficients: dict[str, Any] | None = None) -> Path:
    """Save adapter `name` as a standard PEFT folder at `target`, written beside it and then published
    (`publish_folder`): a failure leaves an existing adapter untouched."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp), selected_adapters=[name])
        folder = tmp / name if (tmp / name / "adapter_config.json").is_file() else tmp
        config = json.loads((folder / "adapter_config.json").read_text())
        if not config.get("target_modules"):
            raise RaylibError("The folded adapter has no target modules.")
        if coefficients is not None:
            (folder / COEFFICIENTS_FILE).write_text(json.dumps(coefficients, indent=1))
        publish_folder(folder, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
