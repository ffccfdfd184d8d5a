"""The leaderboard: a synthetic dataset written here as RecBole atomic files runs every method end to end on the
tiny model, and the leaderboard's three files come out; a rerun finds every stage kept."""

import contextlib
import json
import os

import numpy as np
import pytest

from raylib import RaylibError
from raylib.config import from_dict


def write_synthetic_recbole(folder, users=36, items=150, per_user=24, seed=0):
    """A shop in RecBole's atomic format: users with features, titled items with genres, ratings in time."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows, stamp = [], 1_000_000
    for u in range(users):
        for i in rng.choice(items, per_user, replace=False):
            rows.append((f"u{u}", f"i{i}", int(rng.integers(1, 6)), stamp + int(rng.integers(0, 10_000_000))))
    (folder / "shop.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    genres = ("Garden", "Kitchen", "Toys")
    (folder / "shop.item").write_text("item_id:token\ttitle:token_seq\tgenres:token_seq\n" + "".join(
        f"i{k}\tThing number {k} ({1990 + k % 20})\t{genres[k % 3]}\n" for k in range(items)))
    (folder / "shop.user").write_text("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n" +
                                      "".join(f"u{u}\t{20 + u % 40}\t{'MF'[u % 2]}\tclerk\t{10000 + u}\n"
                                              for u in range(users)))
    return folder


def tiny_changes():
    """Every method's recipe cut to seconds on the tiny model (the mechanics, not the quality), as GPU jobs on
    the session's logical GPUs (each step that loads weights must ask for one)."""
    train = {"epochs": 1, "batch_size": 8, "micro_batch_size": 4, "learning_rate": 5e-3, "patience": 0,
             "cpus_per_worker": 1, "eval_batch_size": 8, "use_gpu": True}
    small = {"model": {"dtype": "fp32"}, "train": train, "inference": {"gpus": 0.5}}
    return {
        "tallrec": {**small, "data": {"train_samples": 12, "valid_samples": 8, "max_length": 256}},
        "corella": {**small, "data": {"valid_samples": 16, "test_samples": 8, "max_length": 256},
                    "crm": {"epochs": 1, "batch_size": 512}, "tune": {"num_samples": 1},
                    "stages": {"joint_samples": 12, "llm_samples": 12, "valid_samples": 8}},
        "cocktail": {**small, "base_samples": 8, "warm_cold_samples": 6,
                     "data": {"train_samples": 8, "valid_samples": 8, "max_length": 256},
                     "merge": {"unlabelled_prompts": 6, "held_out_prompts": 2, "epochs": 1, "batch_size": 4},
                     "tune": {"num_samples": 1}, "eval": {"batch_size": 8}},
        "nextitem": {**small, "data": {"train_samples": 16, "valid_samples": 8, "test_samples": 10,
                                       "max_length": 256},
                     # decoding constrained to the catalogue: even the random model's beams are real titles
                     "generation": {"num_beams": 2, "max_new_tokens": 4, "batch_size": 8, "constrained": True},
                     "sasrec": {"epochs": 1, "batch_size": 512, "hidden_size": 16},
                     "tune": {"num_samples": 1}, "genrec_num_beams": 2},
    }


def test_the_pareto_front_keeps_the_rows_no_other_beats_on_both_cost_and_quality():
    from raylib.bench.leaderboard_report import pareto_front

    points = {"crm": (0.1, 0.75), "routed": (0.2, 0.74), "llm": (300.0, 0.62), "big": (500.0, 0.80),
              "slow_and_worse": (400.0, 0.70)}
    assert pareto_front(points) == ["crm", "big"]


def test_the_report_opens_with_each_rows_claims_and_their_intervals():
    from raylib.bench.leaderboard_report import conclusions

    report = {
        "preference": {
            "dcnv2": {"train_records": 80000, "infer_s_per_1000": 0.5},
            "tallrec": {"train_records": 64, "infer_s_per_1000": 50.0,
                        "vs_best_baseline": {"baseline": "dcnv2", "auc_diff": -0.1, "ci": [-0.15, -0.05]}}},
        "wins": {"tallrec": 16},
        "budget_comparisons": {"tallrec": {"vs": "dcnv2", "paired": {"16": {"diff": 0.08, "ci": [0.02, 0.14]},
                                                                     "64": {"diff": 0.01, "ci": [-0.04, 0.06]}}}},
        "slices": {"cold_items": {"tallrec": {"vs_best": {"baseline": "dcnv2", "diff": 0.05, "ci": [0.01, 0.09]}}},
                   "cold_users": {"tallrec": {"vs_best": {"baseline": "dcnv2", "diff": 0.02, "ci": [-0.03, 0.07]}}}},
    }
    assert conclusions(report) == [
        "- **tallrec** (64 training records)",
        "  - vs dcnv2 (80000 training records): auc -0.1000 [-0.1500, -0.0500], below 0",
        "  - vs dcnv2 on the same records: largest budget with its interval above 0: N = 16 (N = 16: +0.0800 "
        "[+0.0200, +0.1400], above 0; "
        "N = 64: +0.0100 [-0.0400, +0.0600], reaches 0: no difference shown)",
        "  - slices whose interval clears 0: cold_items +0.0500 [+0.0100, +0.0900], above 0 vs dcnv2",
        "  - inference 50 s per 1,000 records, 100x dcnv2's",
    ]


def test_a_benchmarks_cost_from_nothing_adds_up_its_stops_and_resumes(tmp_path):
    from raylib.bench.common import INVOCATIONS_FILE, code_version, invocation_started, time_spent

    this_code = [code_version()]  # this checkout's commit: every invocation records what it ran
    assert time_spent(tmp_path) == {"seconds": None, "invocations": 0, "code": []}
    invocation_started(tmp_path, started=100.0)
    assert time_spent(tmp_path, now=160.0) == {"seconds": 60.0, "invocations": 1, "code": this_code}  # killed, say
    invocation_started(tmp_path, started=1000.0)  # a resume
    time_spent(tmp_path, now=1030.0)
    assert time_spent(tmp_path, now=1045.0) == {"seconds": 60.0 + 45.0, "invocations": 2, "code": this_code}
    # a ledger that is not one starts again instead of failing the benchmark
    (tmp_path / INVOCATIONS_FILE).write_text('[{"started": "yesterday"}]')
    assert time_spent(tmp_path) == {"seconds": None, "invocations": 0, "code": []}
    invocation_started(tmp_path, started=2000.0)
    assert time_spent(tmp_path, now=2010.0) == {"seconds": 10.0, "invocations": 1, "code": this_code}


def test_a_registered_method_that_scores_the_sample_is_a_leaderboard_row(board):
    """The sixth method named in `recipes` runs from its recipe and its Method's `leaderboard_scores`: a row
    with its interval, its per-record scores and its MLflow child run, like the shipped methods'."""
    from raylib.bench.leaderboard_report import read_scores

    config, report, root, _ = board
    echo = report["preference"]["echo"]
    assert echo["features"] == "item ids" and echo["train_records"] > 0 and echo["recipe"].endswith("echo.yaml")
    assert echo["auc_ci"][0] <= echo["auc"] <= echo["auc_ci"][1] and "echo" in report["slices"]["cold_users"]
    _, scores = read_scores(root / "board", "preference")
    assert len(scores["echo"]) == report["split"]["preference_test_records"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'board' / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("raylib").experiment_id])}
    assert runs["leaderboard echo"].data.metrics["auc"] == echo["auc"]


def test_recCocktail_budget_points_need_the_tallrec_recipes_model_and_lora_shape():
    """Its budget points mix the base spirit with TALLRec's adapter module by module: a different rank is one
    line before anything trains."""
    from raylib.bench.leaderboard import same_adapter_shape
    from raylib.methods.cocktail.config import CocktailJobConfig
    from raylib.methods.tallrec.config import TallrecJobConfig

    tallrec = from_dict(TallrecJobConfig, {})
    same_adapter_shape(from_dict(CocktailJobConfig, {}), tallrec)
    with pytest.raises(RaylibError, match="same lora section"):
        same_adapter_shape(from_dict(CocktailJobConfig, {"lora": {"r": 4}}), tallrec)


def test_every_job_gets_the_leaderboards_dataset_and_split_and_a_change_cannot_move_them(tmp_path):
    from raylib.bench.leaderboard import BenchLeaderboardConfig, jobs_of

    values = {"output_dir": str(tmp_path), "ranking_dir": None, "second_domain": None, "time_split": "0.7,0.2,0.1"}
    jobs = jobs_of(from_dict(BenchLeaderboardConfig, values))
    assert {name: job.data.time_split for name, job in jobs.items()} == dict.fromkeys(jobs, [0.7, 0.2, 0.1])
    with pytest.raises(RaylibError, match="changes.corella.data sets time_split, which the leaderboard gives"):
        moved = {"corella": {"data": {"time_split": "0.6,0.2,0.2"}}}
        jobs_of(from_dict(BenchLeaderboardConfig, {**values, "changes": moved}))


@pytest.fixture(scope="module")
def board(ray_session, tiny_model_dir, tmp_path_factory, movie_records):
    """The leaderboard run once on the synthetic dataset: (config, report, its folder, the weight loads)."""
    from raylib import tracking
    from raylib.bench.leaderboard import BenchLeaderboardConfig, run_bench
    from raylib.data.records import write_records
    from conftest import Loads

    root = tmp_path_factory.mktemp("leaderboard")
    dataset = write_synthetic_recbole(root / "shop")
    # RecCocktail's second domain: TALLRec-format records (the mechanics, not the quality)
    books = write_records(movie_records["train"] + movie_records["test"], root / "books.json")
    changes = tiny_changes()
    echo_recipe = root / "echo.yaml"
    echo_recipe.write_text("words: popular\n")
    # CoReLLa with a bf16 LLM, its three stages checkpointing under one shared storage folder
    changes["corella"]["model"] = {"dtype": "bf16"}
    changes["corella"]["train"] = {**changes["corella"]["train"], "storage_path": str(root / "shared")}
    config = from_dict(BenchLeaderboardConfig, {
        "dataset": str(dataset), "model_name": str(tiny_model_dir), "test_samples": 24, "changes": changes,
        "second_domain": str(books), "bootstrap_rounds": 200, "output_dir": str(root / "board"),
        "cold_max_interactions": 19,  # the shop's users have about 19 training ratings each: about half are cold
        # the budget axis at the table's own TALLRec run (12 records, its seed): DCNv2 learns those 12 records
        # (RecCocktail and CoReLLa's LLM on them: the slow tier's test below)
        "budgets": [12], "budget_seeds": [42], "budget_rows": ["tallrec"],
        "ranking_budgets": [16],  # the table's own BIGRec and GenRec runs; SASRec and popularity on their windows
        "report": str(root / "reports" / "leaderboard.json"), "tracking": {"enabled": True},
        # the shipped methods' recipes, and a sixth method's (registered below): its row comes from its Method
        "recipes": {"tallrec": "tallrec_cpu.yaml", "corella": "corella_cpu.yaml", "cocktail": "cocktail_cpu.yaml",
                    "nextitem": "bench_bigrec.yaml", "echo": str(echo_recipe)}})
    loads = Loads()
    with registered_echo():  # for the module's tests: each reruns parts of the leaderboard
        with tracking.job_run(config.tracking, config.output_dir, "bench leaderboard", {}):
            report = run_bench(config)  # as `raylib bench` runs it
        yield config, report, root, loads.records()


@contextlib.contextmanager
def registered_echo():
    """A sixth method (tests/sixth_method) registered for the leaderboard's run only."""
    from unittest import mock

    from raylib import methods

    with mock.patch.dict(methods.REGISTRY):
        methods.register("sixth_method:METHOD")
        yield


def test_a_synthetic_recbole_dataset_runs_every_method_and_the_leaderboard_writes_its_files(board):
    from raylib.bench.leaderboard import PREFERENCE, RANKING, run_bench

    config, report, root, loads = board
    saved = json.loads((root / "reports" / "leaderboard.json").read_text())
    assert (root / "reports" / "leaderboard.png").stat().st_size > 0
    table = (root / "reports" / "leaderboard.md").read_text()
    assert saved["dataset"] == config.dataset and saved["split"]["kind"] == "time"
    # every preference row scored the same 24 test records; every ranking row the same windows
    preference = {*PREFERENCE, "echo"}  # the shipped methods' rows and the sixth method's
    assert set(saved["preference"]) == preference and saved["split"]["preference_test_records"] == 24
    for name, row in saved["preference"].items():
        assert 0.0 <= row["auc_ci"][0] <= row["auc"] <= row["auc_ci"][1] <= 1.0, name
        assert row["logloss"] > 0 and row["infer_s"] > 0 and f"| {name} |" in table
    assert set(saved["ranking"]) == set(RANKING) and saved["split"]["test_windows"] == 10
    for name, row in saved["ranking"].items():
        assert 0.0 <= row["ndcg@10"] <= row["hr@10"] <= 1.0 and row["ndcg@10_ci"][0] <= row["ndcg@10"], name
    # the paired difference to the best baseline: zero-shot or DCNv2; popularity or SASRec
    best = saved["preference"]["tallrec"]["vs_best_baseline"]
    assert best["baseline"] in ("zero_shot", "dcnv2") and best["ci"][0] <= best["auc_diff"] <= best["ci"][1]
    assert saved["ranking"]["bigrec"]["vs_best_baseline"]["baseline"] in ("popularity", "sasrec")
    assert saved["preference"]["tallrec"]["train_s"] > 0 and saved["preference"]["zero_shot"]["train_s"] == 0
    # as GPU jobs: every step that loaded weights (LLMs, DCNv2, SASRec) held a GPU id, none ran in the driver
    assert loads and all(r["gpu_ids"] for r in loads) and not [r for r in loads if r["pid"] == os.getpid()]
    assert {"llm", "crm", "sasrec"} <= {r["what"].split(":")[0] for r in loads}
    # MLflow: the leaderboard's run with each method as a child, its main row's figures logged on it
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'board' / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("raylib").experiment_id])}
    parent = runs["bench leaderboard"].info.run_id
    for method in ("tallrec", "corella", "cocktail", "bigrec", "genrec"):
        assert runs[f"leaderboard {method}"].data.tags["mlflow.parentRunId"] == parent, method
    assert runs["leaderboard tallrec"].data.metrics["auc"] == saved["preference"]["tallrec"]["auc"]
    assert runs["leaderboard bigrec"].data.metrics["ndcg_at_10"] == saved["ranking"]["bigrec"]["ndcg@10"]
    # what each row saw: its training records, input features and epochs
    rows = saved["preference"]
    assert rows["zero_shot"]["train_records"] == 0 and rows["tallrec"]["train_records"] == 12
    assert rows["dcnv2"]["train_records"] > rows["cocktail"]["train_records"] > rows["tallrec"]["train_records"]
    assert rows["tallrec"]["features"] == "titles, ratings" and rows["tallrec"]["epochs"] == "1"
    assert rows["corella_llm"]["epochs"] == "1+1+1" and rows["tallrec"]["infer_s_per_1000"] > 0
    assert saved["ranking"]["sasrec"]["train_records"] > saved["ranking"]["bigrec"]["train_records"] == 16
    # the selection rules, in the report (saved before the first method ran), with what each saw
    assert set(saved["selection"]) == {"tallrec", "cocktail", "corella", "bigrec", "genrec"}
    assert saved["selection"]["bigrec"]["saw"] == [f"bigrec-{config.bigrec_run}"]
    # the data-budget axis: TALLRec and DCNv2 on the same 12 records, DCNv2 also on all of them
    assert saved["budgets"] == {"preference": [12], "ranking": [16]}
    curves = saved["curves"]["preference"]
    assert set(curves["tallrec"]) == {"12"} and set(curves["dcnv2"]) == {"12", "all"}
    for point in (curves["tallrec"]["12"], curves["dcnv2"]["12"]):
        assert len(point["seeds"]) == 1 and point["ci"][0] <= point["mean"] <= point["ci"][1]
    assert curves["tallrec"]["12"]["mean"] == pytest.approx(rows["tallrec"]["auc"])  # the table's run
    assert saved["wins"]["tallrec"] in (None, 12) and "12" in saved["budget_comparisons"]["tallrec"]["paired"]
    ranking_curves = saved["curves"]["ranking"]
    assert set(ranking_curves) == {"bigrec", "genrec", "sasrec", "popularity"}
    assert set(ranking_curves["sasrec"]) == {"16", "all"} and set(ranking_curves["bigrec"]) == {"16"}
    assert ranking_curves["bigrec"]["16"]["mean"] == pytest.approx(saved["ranking"]["bigrec"]["ndcg@10"])
    assert saved["wins"]["bigrec"] in (None, 16) and saved["wins"]["genrec"] in (None, 16)
    import pyarrow.parquet as pq

    budget = root / "board" / "budgets" / "n12-seed42"
    assert pq.read_metadata(next((budget / "dcnv2" / "stage1-crm").rglob("train.parquet"))).num_rows == 12
    # the LLM as a feature encoder: DCNv2 and SASRec as their plain rows learn, plus BIGRec's catalogue title
    # embeddings (one Parquet) as an item feature, each published model carrying them
    embeddings = pq.read_table(root / "board" / "llm_item_embeddings.parquet")
    assert embeddings.num_rows == saved["split"]["catalogue_items"]
    assert rows["dcnv2_llm_emb"]["train_records"] == rows["dcnv2"]["train_records"]
    assert saved["ranking"]["sasrec_llm_emb"]["train_records"] == saved["ranking"]["sasrec"]["train_records"]
    for folder in ("dcnv2_llm_emb", "sasrec_llm_emb"):
        published = [json.loads(p.read_text()) for p in (root / "board" / folder).rglob("config.json")]
        assert any(c.get("text_dim") == embeddings.schema.field("embedding").type.list_size for c in published)
    # CoReLLa's routing on its own validation and test samples, beside the shared sample's rows
    routing = saved["corella_routing"]
    assert routing["test_samples"] == 8 and set(routing["test_auc"]) == {"crm", "llm", "routed"}
    # every row's score of every record, as Parquet; any two rows compared with a paired bootstrap
    from raylib.bench.leaderboard_report import SLICES, compare, read_scores

    records, scores = read_scores(root / "board", "preference")
    assert set(scores) == preference and len(records["label"]) == 24
    found = compare(root / "board", "tallrec", "zero_shot", rounds=200)
    assert found["diff"] == pytest.approx(rows["tallrec"]["auc"] - rows["zero_shot"]["auc"])
    windows, ranks = read_scores(root / "board", "ranking")
    assert set(ranks) == set(RANKING) and len(windows["window"]) == 10
    # slices: cold users and items on both tasks, the CRM's unsure and sure halves on preference
    assert set(saved["slices"]) == set(SLICES)
    assert set(saved["slices"]["cold_users"]) == preference | set(RANKING)
    assert set(saved["slices"]["crm_unsure"]) == preference
    halves = [saved["slices"][s]["tallrec"]["records"] for s in ("crm_unsure", "crm_sure")]
    assert sum(halves) == 24 and min(halves) >= 11
    for rows_of_slice in saved["slices"].values():
        for name, row in rows_of_slice.items():
            metric = row.get("auc", row.get("ndcg@10"))
            assert metric is None or row["ci"][0] <= metric <= row["ci"][1], name
    assert "## Slices" in table
    # a rerun finds every method's outcome and scores kept: nothing trains or scores again
    again = run_bench(config)
    assert again["preference"] == report["preference"] and again["ranking"] == report["ranking"]
    assert again["wall_time_s"] < 60
    # the cost from nothing sums every invocation into the folder: the rerun adds its own seconds, no more
    before, after = saved["time_spent"], again["time_spent"]
    assert after["invocations"] == before["invocations"] + 1
    assert before["seconds"] + again["wall_time_s"] - 1e-6 <= after["seconds"] <= before["seconds"] + 60
    assert "output folder was made in" in table and "(code: " in table


# slow tier: three more Ray Train runs (the entropy merge, CoReLLa's two LLM stages)
@pytest.mark.slow
def test_recCocktail_and_corellas_llm_learn_the_same_budget_records_as_tallrec(board):
    """At a budget point RecCocktail mixes the table's base spirit with TALLRec's adapter on the N records, and
    CoReLLa's LLM stages learn the CTR rows of those same records from the point's DCNv2; both get a curve and a
    paired comparison with DCNv2."""
    import dataclasses

    from raylib.bench.leaderboard import budget_axis, jobs_of, preference_scores

    config, report, root, _ = board
    config = dataclasses.replace(config, budget_rows=["tallrec", "cocktail", "corella_llm"])
    jobs = jobs_of(config)
    sample, _, ctr_sample = preference_scores(config, jobs)  # kept: nothing is scored again
    found = budget_axis(config, jobs, sample, ctr_sample, report["preference"])
    curves = found["curves"]["preference"]
    assert set(curves) == {"tallrec", "dcnv2", "cocktail", "corella_llm"}
    for row in ("cocktail", "corella_llm"):
        point = curves[row]["12"]
        assert point["ci"][0] <= point["mean"] <= point["ci"][1] and len(point["seeds"]) == 1
        assert found["budget_comparisons"][row]["vs"] == "dcnv2" and found["wins"][row] in (None, 12)
    point = root / "board" / "budgets" / "n12-seed42"
    from raylib.methods.cocktail.merging import COEFFICIENTS_FILE

    mix = json.loads((point / "cocktail" / "adapters" / "entropy" / COEFFICIENTS_FILE).read_text())
    assert mix["variant"] == "entropy"  # the folded mix is published with the coefficients it was folded from
    llm_stage = json.loads((point / "corella" / "stage3-llm" / "finished.json").read_text())
    assert llm_stage["state"]["epoch"] == 1


def test_the_recCocktail_job_inside_mixed_published_and_reuses_its_base_spirit(board, tiny_model_dir):
    """RecCocktail's job as the leaderboard ran it: base spirit on two domains, ingredient on the dataset, entropy
    merge through the trainer, Tune on validation, warm / cold AUC of every variant; the published mixes load
    with PEFT, and another target of the same domains finds the base spirit finished."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from raylib.config import to_dict
    from raylib.methods.cocktail.config import CocktailJobConfig
    from raylib.methods.cocktail.pipeline import VARIANTS, base_spirit_inputs, load_domains
    from raylib.methods.tallrec.task import TallrecTask
    from raylib.train.driver import finished_result

    _, _, root, _ = board
    saved = json.loads((root / "board" / "cocktail" / "movie" / "report.json").read_text())
    job, report = from_dict(CocktailJobConfig, saved.pop("config")), saved
    assert report["target_domain"] == "movie" and set(report["domains"]) == {"movie", "book"}
    for split in ("warm", "cold", "valid"):
        assert set(report[split]) == set(VARIANTS) and all(0.0 <= v <= 1.0 for v in report[split].values())
    assert report["records"]["warm"] and report["records"]["cold"]
    # each of the paper's claims (a mix vs a part, on warm or cold-start records) with a paired interval
    assert "warm/entropy_vs_ingredient" in report["comparisons"] and "cold/entropy_vs_base" in report["comparisons"]
    for found in report["comparisons"].values():
        assert found["ci"][0] <= found["diff"] <= found["ci"][1]
    assert len(report["entropy_merge"]["history"]) == 1 and report["tune"]["trials"] == 1
    for name in ("average", "entropy", "tune"):
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                  root / "board" / "cocktail" / report["adapters"][name])
    other = from_dict(CocktailJobConfig, {**to_dict(job), "target": "book"})
    stage, train, valid = base_spirit_inputs(other, load_domains(other))
    assert finished_result(TallrecTask, stage, train, valid) is not None


def test_the_bigrec_job_inside_grounded_searched_gamma_and_published_for_serving(board):
    """BIGRec's job as the leaderboard ran it: gamma searched by Ray Tune within its range, the recipe judged on
    validation windows, and the recommender `POST /recommend` loads published with the tuned gamma."""
    from raylib.methods.nextitem.recommender import Recommender

    config, _, root, _ = board
    folder = root / "board" / "nextitem" / f"bigrec-{config.bigrec_run}"
    report = json.loads((folder / "report.json").read_text())
    assert set(report["gamma"]) == {"pop", "cf"} and 0.0 <= report["gamma"]["pop"]
    assert 0.0 <= report["valid_metrics"]["bigrec"]["ndcg@10"] <= report["valid_metrics"]["bigrec"]["hr@10"] <= 1.0
    served = Recommender(folder / "recommender")
    assert served.config.gamma == report["gamma"]["pop"] and len(served.item_embeddings) == 150
    top = served.recommend("bigrec", served.catalogue.item_ids[:3], k=5)
    assert len(top["items"]) == 5 and top["gamma"] == report["gamma"]["pop"]


def test_raylib_report_compares_two_rows_of_a_leaderboard(board, capsys):
    from jobs.cli import main

    _, _, root, _ = board
    assert main(["report", str(root / "board"), "--compare", "bigrec_cf", "sasrec"]) == 0
    assert "bigrec_cf - sasrec on 10 ranking records: ndcg@10" in capsys.readouterr().out
    assert main(["report", str(root / "board"), "--compare", "tallrec", "sasrec"]) == 2  # two tasks
    assert "both must be rows of one task" in capsys.readouterr().err


def test_the_genrec_job_inside_ranks_exact_and_grounded_beams_that_are_all_titles(board):
    """GenRec as the leaderboard ran it (a GPU job): decoding constrained to the catalogue, so even the random
    model's top beams are real titles, and a grounded beam always names a real item."""
    config, _, root, _ = board
    report = json.loads((root / "board" / "nextitem" / f"genrec-{config.genrec_run}" / "report.json").read_text())
    assert set(report["metrics"]) == {"genrec_exact", "genrec_grounded"}
    exact, grounded = report["metrics"]["genrec_exact"], report["metrics"]["genrec_grounded"]
    assert grounded["hr@20"] >= exact["hr@20"]
    assert report["generation"]["not_a_title_share"] == 0.0


def test_the_corella_job_inside_routed_and_its_artifacts_reload(board):
    """CoReLLa's job as the leaderboard ran it (a GPU job, bf16 LLM): the CRM that routes trained and published in
    fp32, not rounded to bf16; the artifacts reload and score as in the report, and refuse a CRM of another run."""
    import math

    import torch
    from safetensors.torch import load_file

    from raylib import RaylibError
    from raylib.bench.leaderboard import jobs_of
    from raylib.data.ctr import load_ctr_data
    from raylib.methods.corella.artifacts import load_artifacts
    from raylib.methods.corella.pipeline import prepare_views

    config, _, root, _ = board
    job = jobs_of(config)["corella"]
    out = root / "board" / "corella"
    report = json.loads((out / "report.json").read_text())
    joint_crm = load_file(str(out / "stage2-joint" / "published" / "crm" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in joint_crm.values())
    assert any((v.bfloat16().float() != v).any() for v in joint_crm.values())  # fp32 precision, not bf16's
    assert set(report["metrics"]) == {"crm", "llm", "routed"} and 0.0 <= report["llm_share"] <= 0.2 + 1e-9
    assert report["threshold_search"]["bounds"][0] <= report["threshold"] <= math.log(2)
    if report["routing"] != "on":  # routing did not beat the CRM on held-out validation: the CRM answers all
        assert report["llm_share"] == 0.0 and report["metrics"]["routed"] == report["metrics"]["crm"]
    joint_state = json.loads((out / "stage2-joint" / "finished.json").read_text())["state"]
    assert "val_crm_auc" in joint_state["history"][0]
    artifacts = out / "artifacts"
    assert {p.name for p in artifacts.iterdir()} == {"crm", "adapter", "routing.json"}

    # The artifacts reload (PEFT adapter, safetensors CRM + vocabulary) and score exactly as in the report.
    data = load_ctr_data(job.data)
    probs, mask = load_artifacts(artifacts, job).routed(prepare_views(job, data).test)
    saved = json.loads((out / "scores" / "routed.json").read_text())["value"]
    assert np.allclose(probs, saved["probs"], atol=1e-5) and mask.tolist() == saved["mask"]
    routing = json.loads((artifacts / "routing.json").read_text())  # a CRM of another run is refused
    (artifacts / "routing.json").write_text(json.dumps({**routing, "vocab_hash": "0" * 40}))
    with pytest.raises(RaylibError, match="vocabulary"):
        load_artifacts(artifacts, job)
    (artifacts / "routing.json").write_text(json.dumps(routing))


# slow tier: a Ray Train run (the default tier resumes runs in tests/test_bench.py)
@pytest.mark.slow
def test_the_corella_job_inside_resumes_its_joint_stage_and_skips_its_finished_crm(board):
    """A rerun of CoReLLa's job with one more epoch skips stage 1 and resumes stage 2 from its checkpoint; each
    stage has its own run folder under the shared storage path."""
    from raylib.bench.leaderboard import jobs_of
    from raylib.config import to_dict
    from raylib.data.ctr import load_ctr_data
    from raylib.methods.corella.config import CorellaJobConfig
    from raylib.methods.corella.pipeline import CorellaRecipe, prepare_views

    config, _, root, _ = board
    job = jobs_of(config)["corella"]
    out = root / "board" / "corella"
    data = load_ctr_data(job.data)
    joint_state = json.loads((out / "stage2-joint" / "finished.json").read_text())["state"]
    # One more epoch: stage 1 is not redone (no Ray Train run); stage 2 resumes from its checkpoint (epoch 1 comes
    # back, it is not trained again) and trains epoch 2.
    crm_file = out / "stage1-crm" / "crm" / "model.safetensors"
    crm_mtime = crm_file.stat().st_mtime
    values = to_dict(job)
    longer = from_dict(CorellaJobConfig, {**values, "train": {**values["train"], "epochs": 2}})
    recipe, views = CorellaRecipe(longer), prepare_views(longer, data)
    crm_dir = recipe.train_crm(views)
    assert crm_file.stat().st_mtime == crm_mtime
    recipe.train_joint(views, crm_dir)
    resumed = json.loads((out / "stage2-joint" / "finished.json").read_text())["state"]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][0] == joint_state["history"][0]
    runs = [p for p in (root / "shared").iterdir() if (p / ".raylib-run.json").is_file()]
    assert len(runs) >= 3  # the CRM and the two LLM stages: one run folder each under the shared root
