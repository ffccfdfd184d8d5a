"""CoReLLa's inference routing (Sec. 3.4): the CRM answers the samples it is confident about, the LLM the rest.

Confidence is the entropy of the CRM's prediction, s = -p log p - (1-p) log(1-p) (in nats, 0..ln 2): at or below
the threshold the CRM's probability is the answer, above it the LLM's. The threshold is chosen on VALIDATION data
with the Ray Tune + Optuna helper (`raylib.tune`), maximising routed AUC while at most `llm_budget` of the
samples go to the LLM. `RoutingConfig` is the artifact the serving layer loads; it names the vocabulary, CRM
weights and adapter it was tuned with, and refuses others.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from raylib import RaylibError
from raylib.metrics import binary_report

MAX_ENTROPY = math.log(2.0)
ROUTING_FILE = "routing.json"


def entropy(p) -> np.ndarray:
    """Binary entropy in nats of each probability (0 for p in {0, 1}, ln 2 at p = 0.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def to_llm(crm_probs, threshold: float) -> np.ndarray:
    """Boolean mask: True where the CRM's entropy is above the threshold (the LLM answers)."""
    return entropy(crm_probs) > threshold


def combine(crm_probs, llm_probs, mask) -> np.ndarray:
    """The routed prediction: the LLM's probability where `mask`, else the CRM's."""
    return np.where(np.asarray(mask, bool), np.asarray(llm_probs, np.float64), np.asarray(crm_probs, np.float64))


def lowest_threshold(crm_probs, budget: float) -> float:
    """The smallest threshold that sends at most `budget` of these samples to the LLM."""
    s = np.sort(entropy(crm_probs))
    allowed = int(math.floor(budget * len(s) + 1e-9))
    if allowed >= len(s):
        return 0.0
    return float(s[len(s) - allowed - 1])  # every sample above this one may go: `allowed` of them


def routed_report(params: dict[str, Any], crm=None, llm=None, labels=None, budget: float = 1.0) -> dict[str, float]:
    """Tune objective: routed AUC / LogLoss / accuracy and LLM share at `params["threshold"]`. Over the budget
    the trial reports auc = 0 (infeasible), so the search never prefers it."""
    mask = to_llm(crm, float(params["threshold"]))
    report = binary_report(labels, combine(crm, llm, mask))
    share = float(mask.mean())
    feasible = share <= budget + 1e-9
    return {"auc": report["auc"] if feasible else 0.0, "logloss": report["logloss"],
            "accuracy": report["accuracy"], "llm_share": share, "feasible": float(feasible)}


def tune_threshold(crm_valid, llm_valid, labels_valid, budget: float, settings, output_dir: Path,
                   study_name: str) -> dict[str, Any]:
    """Search the threshold in [lowest_threshold(budget), ln 2] for the best routed VALIDATION AUC."""
    from raylib.tune import search

    low = lowest_threshold(crm_valid, budget)
    space = settings.space or {"threshold": {"type": "uniform", "low": low, "high": MAX_ENTROPY}}
    if low >= MAX_ENTROPY:
        raise RaylibError(f"No threshold keeps the LLM share within {budget}: the CRM is maximally unsure.")
    constants = {"crm": np.asarray(crm_valid, np.float64), "llm": np.asarray(llm_valid, np.float64),
                 "labels": np.asarray(labels_valid), "budget": budget}
    found = search(routed_report, space, metric="auc", mode="max", settings=settings, output_dir=output_dir,
                   study_name=study_name, constants=constants)
    found["bounds"] = [low, MAX_ENTROPY]
    found["valid"] = routed_report(found["best_params"], **constants)
    return found


def split_for_decision(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices the threshold search sees, indices held out to decide whether routing helps), seeded."""
    order = np.random.default_rng(seed).permutation(n)
    held = int(round(n * fraction))
    return np.sort(order[held:]), np.sort(order[:held])


def routing_decision(crm, llm, labels, threshold: float, rounds: int, seed: int = 0) -> dict[str, Any]:
    """Whether routing at `threshold` beats the CRM alone on these (held-out) samples: kept only when the paired
    bootstrap interval of routed AUC minus CRM AUC lies above 0. Says why in `reason`."""
    from raylib.metrics import auc, paired_bootstrap

    crm, llm, labels = np.asarray(crm, np.float64), np.asarray(llm, np.float64), np.asarray(labels)
    routed = combine(crm, llm, to_llm(crm, threshold))
    if len(np.unique(labels)) < 2:
        return {"route": False, "reason": "the held-out samples hold one label: no AUC to compare", "gain": None}
    gain = paired_bootstrap(routed, crm, statistic=auc, labels=labels, rounds=rounds, seed=seed)
    low, high = gain["ci"]
    route = low > 0
    reason = (f"routed AUC - CRM AUC on {len(labels)} held-out validation samples: {gain['diff']:+.4f} "
              f"[{low:+.4f}, {high:+.4f}] (95% paired bootstrap); "
              + ("routing kept" if route else "the interval reaches 0: the CRM answers everything"))
    return {"route": bool(route), "reason": reason, "gain": gain}


@dataclasses.dataclass
class RoutingConfig:
    """What the router needs besides the two models, and which models it was tuned for."""
    threshold: float
    llm_budget: float
    vocab_hash: str
    crm_hash: str  # sha1 of the CRM's model.safetensors
    adapter_hash: str  # sha1 of the adapter's adapter_model.safetensors
    model: str  # the base LLM (name or path)
    valid: dict[str, float] = dataclasses.field(default_factory=dict)  # routed metrics on validation
    reason: str = ""  # why routing is on, or off (threshold ln 2: the CRM answers everything), `routing_decision`

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "RoutingConfig":
        path = Path(path)
        if not path.is_file():
            raise RaylibError(f"Routing config {path} does not exist.")
        try:
            values = json.loads(path.read_text())
            config = cls(**values)
        except (json.JSONDecodeError, TypeError) as err:
            raise RaylibError(f"Routing config {path} is not a routing config: {err}") from None
        if not 0.0 <= config.threshold <= MAX_ENTROPY:
            raise RaylibError(f"Routing config {path}: threshold {config.threshold} is outside [0, ln 2].")
        return config

    def check(self, vocab_hash: str, crm_hash: str, adapter_hash: str | None = None) -> None:
        """Refuse artifacts other than those the threshold was tuned with, saying which one differs."""
        for what, mine, theirs in (("vocabulary", self.vocab_hash, vocab_hash), ("CRM weights", self.crm_hash,
                                   crm_hash), ("LLM adapter", self.adapter_hash, adapter_hash)):
            if theirs is not None and mine != theirs:
                raise RaylibError(f"The routing config was tuned with {what} {mine[:12]}, but the loaded one is "
                                  f"{theirs[:12]}: use the artifacts of the same CoReLLa run.")
