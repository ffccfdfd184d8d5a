"""CoReLLa benchmark on MovieLens-100K: CRM alone, LLM alone, routed, and routed without the alignment loss, on
the same fixed seeded test subset; the LLM share, the chosen threshold and the inference cost.

Two runs of the pipeline (`raylib.methods.corella.pipeline.run_corella`) share stage 1 (the CRM warm-up): the main one (a, b, c
from the config) and the ablation with c = 0, which trains its own joint and LLM stages and tunes its own
threshold. Both resume from their checkpoints and cached scores; the report is written after each run.
Writes `reports/corella_ml100k.json`, `corella_ml100k_routing.png` (routed AUC vs LLM share as the threshold
sweeps, the chosen point marked) and `corella_ml100k_groups.png` (the paper's pilot study: AUC of CRM and LLM
per CRM-confidence group).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.dataclasses import dataclass

from raylib.config import STRICT, from_dict, to_dict
from raylib.methods.corella.config import CorellaJobConfig
from raylib.bench.common import report_path, write_report

VARIANTS = {"aligned": "routed", "no_align": "routed_no_align"}


@dataclass(config=STRICT)
class BenchCorellaConfig(CorellaJobConfig):
    output_dir: str = Field("runs/bench_corella", min_length=1)
    report: str = "reports/corella_ml100k.json"
    ablation: bool = True  # also run the variant without the alignment loss


def _variant(config: BenchCorellaConfig, name: str, **align) -> CorellaJobConfig:
    values = {k: v for k, v in to_dict(config).items() if k not in ("report", "ablation")}
    values["output_dir"] = str(Path(config.output_dir) / name)
    values["align"] = {**values["align"], **align}
    return from_dict(CorellaJobConfig, values)


def summarize(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's report keys from the runs' reports (`no_align` may be missing while it runs)."""
    main = runs["aligned"]
    out: dict[str, Any] = {"test_samples": main["test_samples"]}
    for metric in ("auc", "logloss", "accuracy"):
        key = "acc" if metric == "accuracy" else metric
        out[key] = {"crm": main["metrics"]["crm"][metric], "llm": main["metrics"]["llm"][metric],
                    "routed": main["metrics"]["routed"][metric]}
        if "no_align" in runs:
            out[key]["routed_no_align"] = runs["no_align"]["metrics"]["routed"][metric]
            out[key]["llm_no_align"] = runs["no_align"]["metrics"]["llm"][metric]
    out.update(llm_share=main["llm_share"], threshold=main["threshold"], cost_ratio=main["cost_ratio"],
               seconds_per_1000=main["seconds_per_1000"])
    if "no_align" in runs:
        out["no_align"] = {k: runs["no_align"][k] for k in ("llm_share", "threshold", "cost_ratio")}
    out["valid_samples"] = main["valid_samples"]
    out["crm_full_test"] = main["crm_full_test"]
    out["confidence_groups"] = main["confidence_groups"]
    out["threshold_search"] = {k: main["threshold_search"][k] for k in
                               ("best_value", "bounds", "valid", "trials", "study_trials", "storage")}
    return out


def _plot(summary: dict[str, Any], curve: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["llm_share"] for p in curve], [p["auc"] for p in curve], marker=".", label="routed (test)")
    ax.axhline(summary["auc"]["crm"], color="grey", linestyle="--", label="CRM alone")
    ax.axhline(summary["auc"]["llm"], color="tab:orange", linestyle=":", label="LLM alone")
    ax.plot([summary["llm_share"]], [summary["auc"]["routed"]], "r*", markersize=14,
            label=f"chosen on validation (threshold {summary['threshold']:.3f})")
    ax.set_xlabel("share of test samples sent to the LLM")
    ax.set_ylabel("AUC")
    ax.set_title("CoReLLa routing by CRM entropy, MovieLens-100K")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path.with_name(path.stem + "_routing.png"), dpi=110)
    plt.close(fig)

    groups = [g for g in summary["confidence_groups"] if "crm_auc" in g]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = range(len(groups))
    ax.bar([x - 0.2 for x in xs], [g["crm_auc"] for g in groups], width=0.4, label="CRM (DCNv2)")
    ax.bar([x + 0.2 for x in xs], [g["llm_auc"] for g in groups], width=0.4, label="LLM")
    ax.set_xticks(list(xs), [f"{g['group']}\n<= {g['max_entropy']:.2f}" for g in groups])
    ax.set_xlabel("CRM confidence group (by prediction entropy, most confident first)")
    ax.set_ylabel("AUC within the group")
    ax.set_ylim(0.4, max(0.8, max(max(g["crm_auc"], g["llm_auc"]) for g in groups) + 0.05))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path.with_name(path.stem + "_groups.png"), dpi=110)
    plt.close(fig)


def _with_crm(crm_dir: Path):
    """CoReLLa's recipe with stage 1 taken from `crm_dir` (the ablation shares the main run's CRM)."""
    from raylib.methods.corella.pipeline import CorellaRecipe

    class SharedStageOne(CorellaRecipe):
        def train_crm(self, views, item_text=None) -> Path:
            return crm_dir

    return SharedStageOne


def run_bench(config: BenchCorellaConfig) -> dict[str, Any]:
    from raylib.methods.corella.pipeline import run_corella

    start = time.time()
    runs: dict[str, dict[str, Any]] = {}
    path = report_path(config.report)

    def save() -> dict[str, Any]:
        summary = summarize(runs)
        summary["wall_time_s"] = time.time() - start
        summary["command"] = "raylib bench corella"
        summary["config"] = to_dict(config)
        write_report(summary, path, lambda report, _: _plot(report, runs["aligned"]["entropy_curve"], path))
        summary["report_path"] = str(path)
        return summary

    runs["aligned"] = run_corella(_variant(config, "aligned"))
    summary = save()
    if config.ablation:
        print("[bench] ablation: the same stage-1 CRM, joint training without the alignment loss (c = 0)", flush=True)
        shared = _with_crm(Path(runs["aligned"]["stages"]["crm"]))
        runs["no_align"] = shared(_variant(config, "no_align", align_weight=0.0)).run()
        summary = save()
    return summary
