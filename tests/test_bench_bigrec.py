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
