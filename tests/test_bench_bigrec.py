"""The BIGRec benchmark's engineering parts on a tiny LLaMA: grounding at catalogue scale (embedding
throughput, a cached second run that computes nothing, ms per query over the whole catalogue) and beam search
batched vs one query at a time, with identical beams. The quality parts are `run_bigrec` / `run_genrec`, tested
end to end in test_nextitem.py."""

import json

from raylib.bench.nextitem import BenchNextItemConfig, run_bench
from raylib.config import from_dict


def test_grounding_and_beam_speed_parts_write_their_report_keys(tiny_model_dir, tmp_path):
    catalogue = tmp_path / "id2name.txt"
    catalogue.write_text("".join(f"Game number {i}: the sequel\t{i}\n" for i in range(300)), encoding="utf-8")
    config = from_dict(BenchNextItemConfig, {
        "model": {"name": str(tiny_model_dir), "dtype": "fp32"}, "data": {"valid_samples": 8, "test_samples": 8},
        "generation": {"num_beams": 2, "max_new_tokens": 4, "batch_size": 4, "dtype": "fp32"},
        "catalogue_file": str(catalogue), "grounding_queries": 50, "speed_queries": 4,
        "parts": ["grounding", "speed"], "output_dir": str(tmp_path / "work"),
        "report": str(tmp_path / "reports" / "bigrec.json")})
    report = run_bench(config)
    saved = json.loads((tmp_path / "reports" / "bigrec.json").read_text())
    assert saved["test_windows"] == 8
    for key in ("grounding_ms_per_query", "catalogue_titles_per_s", "beam_batch_speedup"):
        assert isinstance(saved[key], float) and saved[key] > 0
    assert report["grounding"]["catalogue_titles"] == 300 and not report["grounding"]["second_run_computed"]
    assert all(share == 1.0 for share in report["beam_speed"]["same_beams_as_baseline"].values())


def test_runs_that_change_only_decoding_share_the_training_of_an_earlier_run(tmp_path):
    """The benchmark's runs: the recipe, then variants; a variant of decoding or ranking reuses the folder (the
    adapter and beams) of the first run that trains the same model, a variant of training gets its own; every
    comparison has a paired interval."""
    import numpy as np

    from raylib.bench.nextitem import comparisons, run_jobs
    from raylib.methods.nextitem.config import GenrecJobConfig

    config = from_dict(BenchNextItemConfig, {"output_dir": str(tmp_path), "genrec_runs": {
        "authors": {}, "response_loss": {"train": {"loss_on": "response"}},
        "constrained": {"generation": {"constrained": True}},
        "response_constrained": {"train": {"loss_on": "response"}, "generation": {"constrained": True}}}})
    jobs = dict(run_jobs(config, "genrec", GenrecJobConfig, config.genrec_runs, generation={"num_beams": 10}))
    assert {name: job.output_dir.rsplit("/", 1)[-1] for name, job in jobs.items()} == {
        "authors": "genrec-authors", "response_loss": "genrec-response_loss", "constrained": "genrec-authors",
        "response_constrained": "genrec-response_loss"}
    assert jobs["constrained"].generation.constrained and jobs["constrained"].generation.num_beams == 10
    assert jobs["response_loss"].train.loss_on == "response" and jobs["authors"].train.loss_on == config.train.loss_on
    ranks = {"bigrec": np.tile([1, 2, 30], 40), "popularity": np.tile([9, 40, 30], 40), "sasrec": np.tile([1, 2, 30], 40)}
    found = comparisons(ranks, rounds=200)
    assert set(found) == {"bigrec_vs_popularity"}
    assert found["bigrec_vs_popularity"]["ci"][0] > 0
    # the report's runs as a Markdown table: a row per run, then each comparison with its interval
    from raylib.bench.nextitem import runs_table
    from raylib.methods.nextitem.pipeline import metrics_of

    run = {"metrics": {m: metrics_of(r) for m, r in ranks.items()}, "generation": {"not_a_title_share": 0.25},
           "valid_metrics": {"bigrec": metrics_of(ranks["bigrec"])}, "comparisons": found,
           "valid_ranks": {"bigrec": list(ranks["bigrec"])}}
    table = runs_table({"bigrec/authors": run}).splitlines()
    assert table[0].startswith("| run | top beam not an item | valid NDCG@10 | valid loss | BIGRec |")
    lo, hi = found["bigrec_vs_popularity"]["ci"]
    assert table[2].startswith("| bigrec/authors | 25.0% |")
    assert "Chosen on validation, by valid_ndcg@10: `bigrec/authors`" in runs_table({"bigrec/authors": run})
    assert table[-1] == f"| bigrec/authors | bigrec - popularity | {found['bigrec_vs_popularity']['diff']:+.4f} | [{lo:+.4f}, {hi:+.4f}] |"


def test_a_recipe_is_chosen_on_validation_windows_never_on_test():
    """Of the BIGRec runs, the best validation NDCG@10 is kept where its paired interval
    separates it from every other run; where a few hits cannot, the lowest validation loss of the runs trained on
    the answer alone. Test figures never choose."""
    from raylib.bench.nextitem import recipe_on_validation
    from raylib.methods.nextitem.pipeline import metrics_of

    def run(valid_ranks, test_ranks, loss, loss_on="response"):
        return {"metrics": {"bigrec": metrics_of(test_ranks)}, "valid_metrics": {"bigrec": metrics_of(valid_ranks)},
                "valid_ranks": {"bigrec": valid_ranks}, "loss_on": loss_on,
                "train": {"best_epoch": 1, "history": [{"epoch": 1, "val_loss": loss}]}}

    hits, misses = [1] * 60 + [50] * 140, [50] * 200
    runs = {"bigrec/authors": run(misses, [1] * 4, 0.9, "all"), "bigrec/more_epochs": run(hits, [50] * 4, 1.4),
            "bigrec/lr": run(misses, [1] * 4, 1.2), "genrec/authors": {"metrics": {}}}
    chosen = recipe_on_validation(runs, rounds=200)
    assert chosen["run"] == "bigrec/more_epochs" and chosen["by"] == "valid_ndcg@10" and chosen["test_ndcg@10"] == 0.0
    one_hit = [1] + [50] * 199
    runs["bigrec/more_epochs"] = run(one_hit, [50] * 4, 1.4)  # one hit more: no interval excludes 0
    chosen = recipe_on_validation(runs, rounds=200)
    assert chosen["run"] == "bigrec/lr" and chosen["by"].startswith("valid_loss")  # 0.9 is another loss ("all")
    assert set(chosen["valid_ndcg@10_of_each"]) == {"bigrec/authors", "bigrec/more_epochs", "bigrec/lr"}
