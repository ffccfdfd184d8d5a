"""The leaderboard: a synthetic dataset written here as RecBole atomic files runs every method end to end on the
tiny model, and the leaderboard's three files come out; a rerun finds every stage kept."""

import json

import numpy as np

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


def tiny_changes(model_dir):
    """Every method's recipe cut to seconds on the tiny model (the mechanics, not the quality)."""
    train = {"epochs": 1, "batch_size": 8, "micro_batch_size": 4, "learning_rate": 5e-3, "patience": 0,
             "cpus_per_worker": 1, "eval_batch_size": 8}
    small = {"model": {"dtype": "fp32"}, "train": train}
    return {
        "tallrec": {**small, "data": {"train_samples": 12, "valid_samples": 8, "max_length": 256}},
        "corella": {**small, "data": {"valid_samples": 16, "test_samples": 8, "max_length": 256},
                    "crm": {"epochs": 1, "batch_size": 512}, "tune": {"num_samples": 2},
                    "stages": {"joint_samples": 12, "llm_samples": 12, "valid_samples": 8}},
        "cocktail": {**small, "lora": {"r": 4, "alpha": 8}, "base_samples": 8, "warm_cold_samples": 6,
                     "data": {"train_samples": 8, "valid_samples": 8, "max_length": 256},
                     "merge": {"unlabelled_prompts": 6, "held_out_prompts": 2, "epochs": 1, "batch_size": 4},
                     "tune": {"num_samples": 1}, "eval": {"batch_size": 8}},
        "nextitem": {**small, "data": {"train_samples": 16, "valid_samples": 8, "test_samples": 10,
                                       "max_length": 256},
                     "generation": {"num_beams": 2, "max_new_tokens": 4, "batch_size": 8},
                     "sasrec": {"epochs": 1, "batch_size": 512, "hidden_size": 16},
                     "tune": {"num_samples": 2}, "genrec_num_beams": 2},
    }


def test_a_synthetic_recbole_dataset_runs_every_method_and_the_leaderboard_writes_its_files(
        ray_session, tiny_model_dir, tmp_path):
    from raylib.bench.leaderboard import PREFERENCE, RANKING, BenchLeaderboardConfig, run_bench

    dataset = write_synthetic_recbole(tmp_path / "shop")
    config = from_dict(BenchLeaderboardConfig, {
        "dataset": str(dataset), "model_name": str(tiny_model_dir), "test_samples": 24,
        "changes": tiny_changes(tiny_model_dir), "second_domain": None, "bootstrap_rounds": 200,
        "output_dir": str(tmp_path / "board"), "report": str(tmp_path / "reports" / "leaderboard.json")})
    report = run_bench(config)

    saved = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    assert (tmp_path / "reports" / "leaderboard.png").stat().st_size > 0
    table = (tmp_path / "reports" / "leaderboard.md").read_text()
    assert saved["dataset"] == str(dataset) and saved["split"]["kind"] == "time"
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
    # a rerun finds every method's outcome and scores kept: nothing trains or scores again
    again = run_bench(config)
    assert again["preference"] == report["preference"] and again["wall_time_s"] < 60
