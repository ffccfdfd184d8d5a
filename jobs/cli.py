"""The `raylib` command and its registry; `python -m jobs.<name>` are thin aliases of its subcommands.

    raylib list                                     methods, benchmarks and shipped recipes, with their commands
    raylib train <method> [--config F] [k=v ...]    a method's job (tallrec, bigrec, genrec, corella, cocktail)
    raylib bench <name> [--config F] [k=v ...]      a benchmark (writes reports/<name>.json + .png)
    raylib plan --config F | --model NAME ...       will a GPU job fit (training and every inference phase)?
    raylib serve [--artifacts DIR] [--llm-gpus 1] ... the HTTP service (what `serve run serve.app:build` does)
    raylib report <output_dir>                      a finished run's table again
    raylib report <leaderboard dir> --compare A B   the paired bootstrap between two leaderboard rows
    raylib gpu-check [--dry-run]                    the GPU check (reports/gpu.json)

Every job: one line naming the problem (exit code 2) for a bad config, file or model, before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

from raylib import RaylibError

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "jobs" / "configs"


def _load(target: str) -> Any:
    """"module:attribute" -> the attribute, imported when first needed (the command starts fast)."""
    module, attribute = target.split(":")
    return getattr(importlib.import_module(module), attribute)


def methods() -> dict[str, Any]:
    """The methods (`raylib.methods.REGISTRY`: each package declares its `Method`)."""
    from raylib.methods import methods as registered

    return registered()


@dataclasses.dataclass(frozen=True)
class Entry:
    """A benchmark: its config class, default recipe, what runs it and how its result is shown (a method is a
    `raylib.methods.base.Method`, with the same fields)."""
    about: str
    config: str      # "module:ConfigClass"
    recipe: str      # default config file under jobs/configs
    run: str         # "module:function(config) -> report"
    show: str | tuple[str, ...]  # "module:function(report) -> str", or the report keys printed as JSON


BENCHES = {
    "tallrec": Entry("TALLRec on the official movie test set (16/64/256 samples), speed, overhead",
                     "raylib.bench.tallrec:BenchTallrecConfig", "bench_tallrec.yaml", "raylib.bench.tallrec:run_bench",
                     ("model", "test_records", "zero_shot_auc", "auc", "scoring_speedup", "scoring_auc_diff",
                      "train_overhead", "wall_time_s")),
    "bigrec": Entry("BIGRec / GenRec / SASRec / popularity on MovieLens-100K, grounding at scale, beam speed",
                    "raylib.bench.nextitem:BenchNextItemConfig", "bench_bigrec.yaml", "raylib.bench.nextitem:run_bench",
                    ("test_windows", "ndcg@10", "hr@10", "gamma", "grounding_ms_per_query", "catalogue_titles_per_s",
                     "beam_batch_speedup", "wall_time_s", "report_path")),
    "corella": Entry("CoReLLa on MovieLens-100K: CRM, LLM, routed, the pilot study, the ablation",
                     "raylib.bench.corella:BenchCorellaConfig", "bench_corella.yaml", "raylib.bench.corella:run_bench",
                     ("test_samples", "auc", "logloss", "acc", "llm_share", "threshold", "cost_ratio", "wall_time_s",
                      "report_path")),
    "cocktail": Entry("RecCocktail, movies + books: every mix on warm and cold-start records, inference time",
                      "raylib.bench.cocktail:BenchCocktailConfig", "bench_cocktail.yaml",
                      "raylib.bench.cocktail:run_bench",
                      ("target_domain", "warm", "cold", "merged_time_ratio", "wall_time_s", "report_path")),
    "serve": Entry("the Serve app under load: throughput, latency, a killed LLM replica, autoscaling",
                   "raylib.bench.serve:BenchServeConfig", "bench_serve.yaml", "raylib.bench.serve:run_bench",
                   "raylib.bench.serve:headline_json"),
    "scale": Entry("the GPU recipes planned, training overhead, 1 vs 2 workers, fault drills",
                   "raylib.bench.scale:BenchScaleConfig", "bench_scale.yaml", "raylib.bench.scale:run_bench",
                   "raylib.bench.scale:headline_json"),
    "leaderboard": Entry("every method on one dataset and one time split: preference AUC and next-item NDCG, "
                         "data budgets, cold-start and CRM-confidence slices",
                         "raylib.bench.leaderboard:BenchLeaderboardConfig", "bench_leaderboard.yaml",
                         "raylib.bench.leaderboard:run_bench", "raylib.bench.leaderboard_report:markdown"),
    "scale-data": Entry("each method's data steps to its first optimizer step, 0.1 M to 25 M interactions",
                        "raylib.bench.data_scale:BenchScaleDataConfig", "bench_scale_data.yaml",
                        "raylib.bench.data_scale:run_bench", "raylib.bench.data_scale:markdown"),
    "reliability": Entry("the service under Schemathesis, faults injected, bad inputs: what happened",
                         "raylib.bench.reliability:BenchReliabilityConfig", "bench_reliability.yaml",
                         "raylib.bench.reliability:run_bench", "raylib.bench.reliability:markdown"),
    "placement": Entry("where CPU scoring runs: the driver, an all-core task, a 1-CPU task",
                       "raylib.bench.placement:BenchPlacementConfig", "bench_placement.yaml",
                       "raylib.bench.placement:run_bench",
                       ("best", "task_all_cores_vs_driver", "task_one_cpu_vs_driver", "same_auc")),
}


# ------------------------------------------------------------------ running a job
def job_main(config_cls: type, default_config: str, argv: list[str] | None, run: Callable[[Any], None],
             description: str | None = None, prog: str | None = None) -> int:
    """Config file + overrides, the checks that need no model (GPU plan, model found), Ray, then `run(config)`;
    a RaylibError anywhere is one line and exit code 2. `--help` lists every config field with its default and
    description (`raylib.config_help`)."""
    asked = argv if argv is not None else sys.argv[1:]
    fields = None
    if "-h" in asked or "--help" in asked:  # read the config classes' docs only when they are shown
        from raylib.config_help import help_text

        fields = help_text(config_cls)
    parser = argparse.ArgumentParser(prog=prog, description=description or
                                     (sys.modules["__main__"].__doc__ or "").strip(),
                                     epilog=fields, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / default_config), help="YAML config (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="show Ray's, DeepSpeed's and library logs too")
    parser.add_argument("overrides", nargs="*", help="section.field=value overrides, e.g. train.epochs=3")
    args = parser.parse_args(argv)
    from raylib.runtime import set_verbose

    set_verbose(args.verbose)
    try:
        from raylib.config import load_config
        from raylib.runtime import ensure_ray

        config = load_config(config_cls, args.config, args.overrides)
        if hasattr(config, "train"):  # a GPU job that cannot fit (training or inference) stops before any work
            from raylib.plan import check_job_fits

            check_job_fits(config)
        if hasattr(config, "model"):  # a model that cannot be found stops here, before Ray starts
            from raylib.model import check_model_available

            check_model_available(config.model)
        ensure_ray(getattr(config, "ray_address", None))
        run(config)
    except RaylibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _shown(entry: Entry, report: dict[str, Any]) -> str:
    if isinstance(entry.show, str):
        return _load(entry.show)(report)
    return json.dumps({k: report.get(k) for k in entry.show}, indent=1, default=str)


def run_entry(kind: str, name: str, argv: list[str] | None) -> int:
    """`raylib train <name>` / `raylib bench <name>` (and their `python -m jobs.<...>` aliases)."""
    table = methods() if kind == "train" else BENCHES
    entry = table[name]

    def run(config) -> None:
        from raylib import tracking
        from raylib.config import to_dict
        from raylib.stages import folder_in_use

        # one job per output_dir at a time; the job's MLflow run: its config as params; its training stages and
        # Tune trials become its children
        tracked_run = tracking.job_run(getattr(config, "tracking", None), config.output_dir,
                                       name if kind == "train" else f"bench {name}", to_dict(config))
        with folder_in_use(config.output_dir), tracked_run as tracked:
            report = _load(entry.run)(config)
            if tracked:
                tracking.log_report(tracked, report, Path(config.output_dir))
        print("\n" + _shown(entry, report))

    return job_main(_load(entry.config), f"jobs/configs/{entry.recipe}", argv, run,
                    description=f"raylib {kind} {name}: {entry.about}", prog=f"raylib {kind} {name}")


# ------------------------------------------------------------------ list, report, serve
def recipes() -> list[tuple[str, str, str]]:
    """(file, what it is: its first comment line after the command, the command that runs it) for every shipped
    recipe. Each file opens with its command (`tests/test_cli.py` holds them to it)."""
    out, known = [], methods()
    for path in sorted(CONFIGS.glob("*.yaml")):
        comments = [line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")]
        first = next((c for c in comments if not c.startswith(("raylib train", "raylib bench"))), "")
        stem = path.stem
        if stem.startswith("bench_"):
            name = stem[len("bench_"):].replace("_", "-")
            command = f"raylib bench {name}" if name in BENCHES else ""
        else:
            name = stem.split("_")[0].split("-")[0]
            default = name in known and known[name].recipe == path.name
            command = f"raylib train {name}" + ("" if default else f" --config jobs/configs/{path.name}")
        out.append((path.name, first, command))
    return out


def list_everything() -> str:
    known = methods()
    names = max(len(name) for name in (*known, *BENCHES)) + 2
    lines = ["methods (raylib train <method>):"]
    lines += [f"  {name:<{names}}{entry.about}" for name, entry in known.items()]
    lines += ["benchmarks (raylib bench <name>):"]
    lines += [f"  {name:<{names}}{entry.about}" for name, entry in BENCHES.items()]
    lines += ["recipes (jobs/configs; each file opens with this command, then says what it is):"]
    width = max(len(f) for f, _, _ in recipes())
    lines += [f"  {f:<{width}}  {command}" for f, _, command in recipes()]
    return "\n".join(lines)


def report_table(output_dir: str) -> str:
    """A finished run's table from its report.json (RecCocktail writes one per target: `<output_dir>/<target>/`)."""
    folder = Path(output_dir).expanduser()
    found = [folder / "report.json"] if (folder / "report.json").is_file() else sorted(folder.glob("*/report.json"))
    if not found:
        raise RaylibError(f"No report.json in {folder} (or its target folders): is it a finished run's output_dir?")
    tables, known = [], methods()
    for path in found:
        report = json.loads(path.read_text())
        method = report.get("method") or _method_before_the_field(report)
        if method not in known:
            raise RaylibError(f"{path} is no report of a registered method (method {method!r}; the methods are "
                              f"{', '.join(known)}).")
        report.setdefault("report_path", str(path))
        tables.append(_load(known[method].show)(report))
    return "\n\n".join(tables)


def _method_before_the_field(report: dict[str, Any]) -> str | None:
    """The method of a report written before reports said it (`method`): read from its shape."""
    if "target_domain" in report:
        return "cocktail"
    if "threshold" in report and "metrics" in report:
        return "corella"
    return "tallrec" if "tuned" in report or "zero_shot" in report else None


def report_main(argv: list[str]) -> int:
    """`raylib report <output_dir>`, or `<leaderboard output_dir> --compare ROW ROW`."""
    compare = len(argv) == 4 and argv[1] == "--compare"
    if len(argv) != 1 and not compare:
        print("error: raylib report needs one output_dir (and, for a leaderboard's, --compare ROW ROW)",
              file=sys.stderr)
        return 2
    try:
        if compare:
            from raylib.bench.leaderboard_report import compare as compare_rows, compare_text

            print(compare_text(compare_rows(Path(argv[0]), argv[2], argv[3])))
        else:
            print(report_table(argv[0]))
    except RaylibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def serve_main(argv: list[str] | None) -> int:
    """`raylib serve`: the app from typed arguments (`raylib.serving.AppArgs`, one option per field), served on
    a local Ray (or RAY_ADDRESS) until Ctrl-C."""
    from raylib.serving import AppArgs

    parser = argparse.ArgumentParser(prog="raylib serve", description="The raylib HTTP service: CoReLLa /predict, "
                                     "BIGRec /recommend (what `serve run serve.app:build` does).")
    for name, field in AppArgs.model_fields.items():
        kind = {int: int, float: float}.get(field.annotation, str)
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                            help=f"{field.description or ''} (default: {field.default})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--insecure", action="store_true",
                        help="serve without a token on a host other machines reach (refused otherwise)")
    args = vars(parser.parse_args(argv))
    host, port, insecure = args.pop("host"), args.pop("port"), args.pop("insecure")
    try:
        from pydantic import ValidationError

        from raylib.runtime import ensure_ray, set_verbose
        from raylib.serving import build_app, check_exposure, token_from_env

        set_verbose(False)
        check_exposure(host, token_from_env() is not None, insecure)  # the router reads the same environment
        try:
            app_args = AppArgs(**{k: v for k, v in args.items() if v is not None})
        except ValidationError as err:
            first = err.errors()[0]
            raise RaylibError(f"--{str(first['loc'][0]).replace('_', '-')} {first.get('input')!r}: "
                              f"{first['msg']}") from None
        app = build_app(app_args)  # artifacts checked: no Ray yet
        ensure_ray()
        from ray import serve

        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name="raylib", route_prefix="/")
    except (RaylibError, ValueError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"raylib is serving on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    try:
        import time

        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


# ------------------------------------------------------------------ the command
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = (__doc__ or "").strip().split("\n\n")[1]
    if not argv or argv[0] in ("-h", "--help"):
        print("usage:\n" + usage)
        return 0
    command, rest = argv[0], argv[1:]
    if command in ("train", "bench"):
        table = methods() if command == "train" else BENCHES
        if not rest or rest[0] not in table:
            print(f"error: raylib {command} needs one of: {', '.join(table)}", file=sys.stderr)
            return 2
        return run_entry(command, rest[0], rest[1:])
    if command == "list":
        print(list_everything())
        return 0
    if command == "report":
        return report_main(rest)
    if command == "plan":
        from jobs.plan import main as plan_main

        return plan_main(rest)
    if command == "serve":
        return serve_main(rest)
    if command == "gpu-check":
        from jobs.gpu_check import main as gpu_main

        return gpu_main(rest)
    print(f"error: unknown command {command!r}\nusage:\n{usage}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
