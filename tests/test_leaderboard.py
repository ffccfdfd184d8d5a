"""The leaderboard: a synthetic dataset written here as RecBole atomic files runs every method end to end on the
tiny model, and the leaderboard's three files come out; a rerun finds every stage kept."""

import json
import os

import numpy as np
import pytest

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
        "cocktail": {**small, "lora": {"r": 4, "alpha": 8}, "base_samples": 8, "warm_cold_samples": 6,
                     "data": {"train_samples": 8, "valid_samples": 8, "max_length": 256},
                     "merge": {"unlabelled_prompts": 6, "held_out_prompts": 2, "epochs": 1, "batch_size": 4},
                     "tune": {"num_samples": 1}, "eval": {"batch_size": 8}},
        "nextitem": {**small, "data": {"train_samples": 16, "valid_samples": 8, "test_samples": 10,
                                       "max_length": 256},
                     "generation": {"num_beams": 2, "max_new_tokens": 4, "batch_size": 8},
                     "sasrec": {"epochs": 1, "batch_size": 512, "hidden_size": 16},
                     "tune": {"num_samples": 1}, "genrec_num_beams": 2},
    }


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
    config = from_dict(BenchLeaderboardConfig, {
        "dataset": str(dataset), "model_name": str(tiny_model_dir), "test_samples": 24, "changes": tiny_changes(),
        "second_domain": str(books), "bootstrap_rounds": 200, "output_dir": str(root / "board"),
        "report": str(root / "reports" / "leaderboard.json"), "tracking": {"enabled": True}})
    loads = Loads()
    with tracking.job_run(config.tracking, config.output_dir, "bench leaderboard", {}):  # as `raylib bench` runs it
        report = run_bench(config)
    return config, report, root, loads.records()


def test_a_synthetic_recbole_dataset_runs_every_method_and_the_leaderboard_writes_its_files(board):
    from raylib.bench.leaderboard import PREFERENCE, RANKING, run_bench

    config, report, root, loads = board
    saved = json.loads((root / "reports" / "leaderboard.json").read_text())
    assert (root / "reports" / "leaderboard.png").stat().st_size > 0
    table = (root / "reports" / "leaderboard.md").read_text()
    assert saved["dataset"] == config.dataset and saved["split"]["kind"] == "time"
    # every preference row scored the same 24 test records; every ranking row the same windows
    assert set(saved["preference"]) == set(PREFERENCE) and saved["split"]["preference_test_records"] == 24
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
    # a rerun finds every method's outcome and scores kept: nothing trains or scores again
    again = run_bench(config)
    assert again["preference"] == report["preference"] and again["ranking"] == report["ranking"]
    assert again["wall_time_s"] < 60


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
