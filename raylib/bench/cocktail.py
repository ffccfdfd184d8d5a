"""RecCocktail benchmark: the job (`raylib.methods.cocktail.pipeline.run_cocktail`) on the benchmark config, then the inference
cost of the folded adapter against one adapter and against both adapters unfolded.

Writes `report` (JSON: the issue's keys first, then the details) and a PNG beside it (AUC of every variant on
warm and cold-start test records). The job's stages resume from `output_dir`; the timing is cached too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic.dataclasses import dataclass

from raylib.config import STRICT, to_dict
from raylib.data.records import TallrecRecord
from raylib.methods.cocktail.config import CocktailJobConfig
from raylib.assets import PROJECT_DIR
from raylib.bench.common import report_path, write_report



@dataclass(config=STRICT)
class BenchCocktailConfig(CocktailJobConfig):
    output_dir: str = Field("runs/bench_cocktail", min_length=1)
    report: str = "reports/cocktail.json"
    timing_records: int = Field(48, ge=1)


def run_bench(config: BenchCocktailConfig) -> dict[str, Any]:
    from raylib.methods.cocktail.pipeline import VARIANTS, run_cocktail
    from raylib.config import from_dict
    from raylib.stages import cached_stage
    from raylib.train.checkpoint import adapter_sha1

    start = time.time()
    values = {k: v for k, v in to_dict(config).items() if k not in ("report", "timing_records")}
    job = from_dict(CocktailJobConfig, values)
    path = report_path(config.report)
    report = run_cocktail(job)
    output = Path(job.output_dir).expanduser().resolve()
    folder = output / job.target
    base_dir, ingredient_dir = output / "base_spirit" / "adapter", folder / "ingredient" / "adapter"
    folded = output / report["adapters"]["entropy"]
    from raylib.methods.cocktail.pipeline import load_domains
    from raylib.data.records import sample_records

    records = list(sample_records(load_domains(job)[job.target].test, config.timing_records, job.data.seed + 11))
    key = {"folded": adapter_sha1(folded), "single": adapter_sha1(ingredient_dir), "n": len(records)}
    print(f"[bench_cocktail] inference time on {len(records)} records ...", flush=True)
    from raylib import placement

    times = cached_stage(folder / "stages" / "timing.json", key,  # in a task placed as the job's scoring is
                         lambda: placement.run(inference_times, job, base_dir, ingredient_dir, folded, records,
                                               placement=placement.for_job(job)))
    out = {"target_domain": report["target_domain"],
           "warm": {v: report["warm"][v] for v in VARIANTS}, "cold": {v: report["cold"][v] for v in VARIANTS},
           "merged_time_ratio": times["folded"] / times["single_adapter"],
           "valid": report["valid"], "comparisons": report["comparisons"], "seconds": times,
           "unfolded_time_ratio": times["two_adapters"] / times["single_adapter"],
           "records": report["records"], "domains": report["domains"], "entropy_merge": report["entropy_merge"],
           "tune": report["tune"], "train": report["train"], "adapters": report["adapters"],
           # this invocation's time: a resumed run reuses every finished stage
           "wall_time_s": time.time() - start, "config": to_dict(config)}
    write_report(out, path, plot)
    out["report_path"] = str(path.relative_to(PROJECT_DIR) if path.is_relative_to(PROJECT_DIR) else path)
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    variants = list(report["warm"])
    x = np.arange(len(variants))
    fig, ax = plt.subplots(figsize=(8, 4))
    for offset, split, color in ((-0.2, "warm", "tab:blue"), (0.2, "cold", "tab:orange")):
        values = [report[split][v] for v in variants]
        ax.bar(x + offset, values, 0.4, label=f"{split} ({report['records'][split]} records)", color=color)
    ax.axhline(0.5, color="grey", linewidth=0.8)
    ax.set_xticks(x, variants)
    low = min(min(report["warm"].values()), min(report["cold"].values()))
    ax.set(ylabel="AUC", ylim=(max(0.0, low - 0.05), None),
           title=f"RecCocktail, target {report['target_domain']}: folded / single-adapter time "
                 f"{report['merged_time_ratio']:.3f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------ inference cost of each form of the mix
def inference_times(job: CocktailJobConfig, base_dir, ingredient_dir, folded_dir, records: list[TallrecRecord],
                    rounds: int = 3) -> dict[str, float]:
    """Seconds to score `records` (median of `rounds`, interleaved) with: one adapter (the ingredient, LoRA
    unmerged), the folded mix (one rank-2r adapter, unmerged), both adapters active (the mix before folding),
    and the folded mix merged into the weights. No prefix cache, so every token runs through every layer."""
    import numpy as np

    from raylib.evaluate import yes_probabilities
    from raylib.methods.cocktail.merging import MixedLora, load_two
    from raylib.model import load_model, load_tokenizer, load_with_adapter
    from raylib.placement import choose_dtype, device as local_device

    device = local_device()
    dtype = choose_dtype(job.eval.dtype, device)
    tokenizer = load_tokenizer(job.model)
    two = MixedLora(load_two(load_model(job.model, device, dtype), base_dir, ingredient_dir))
    two.set_weights([0.5, 0.5])
    models = {"single_adapter": load_with_adapter(job.model, ingredient_dir, device, dtype, merge=False).eval(),
              "folded": load_with_adapter(job.model, folded_dir, device, dtype, merge=False).eval(),
              "two_adapters": two.eval(),
              "folded_merged": load_with_adapter(job.model, folded_dir, device, dtype).eval()}
    times: dict[str, list[float]] = {k: [] for k in models}
    run = lambda m: yes_probabilities(m, tokenizer, records, job.data.max_length, job.eval.batch_size,  # noqa
                                      progress=False, prefix_cache=False)
    for name, model in models.items():  # warm-up
        run(model)
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            run(model)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}
