"""Yes/No scoring: one batched forward pass gives the same P(Yes) as one prompt at a time and as generate()."""

import numpy as np
import pytest
import torch

from raylib.config import ModelConfig
from raylib.evaluate import evaluate_records, yes_probabilities, yes_probabilities_by_generate
from raylib.model import load_model


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    torch.manual_seed(0)
    return load_model(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))


def test_batched_scores_equal_unbatched_and_generate(tiny_model, tokenizer, movie_records):
    records = movie_records["test"][:12]  # different lengths: left padding must not change any score
    batched = yes_probabilities(tiny_model, tokenizer, records, batch_size=6, progress=False)
    single = yes_probabilities(tiny_model, tokenizer, records, batch_size=1, progress=False)
    generated = yes_probabilities_by_generate(tiny_model, tokenizer, records, max_new_tokens=1, progress=False)
    assert np.allclose(batched, single, atol=1e-5)
    assert np.allclose(batched, generated, atol=1e-5)
    assert ((batched > 0) & (batched < 1)).all()


def test_real_model_zero_shot_is_better_than_chance(tokenizer, movie_records):
    """SmolLM2-135M-Instruct, no tuning, on 200 official test records (0.64 measured; the full set ~0.65)."""
    model = load_model(ModelConfig())
    report = evaluate_records(model, tokenizer, movie_records["test"][:200], batch_size=16, progress=False)
    assert set(report) == {"auc", "logloss", "accuracy"}
    assert report["auc"] > 0.58


def test_merged_adapter_scores_like_the_peft_model(tiny_model_dir, tokenizer, movie_records, tmp_path):
    """The job scores with the adapter merged into the weights (no LoRA cost at inference): same P(Yes)."""
    from peft import PeftModel

    from raylib.config import LoraSettings
    from raylib.model import add_lora

    torch.manual_seed(0)
    model = add_lora(load_model(ModelConfig(name=str(tiny_model_dir), dtype="fp32")), LoraSettings())
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # a non-trivial adapter (B starts at zero)
    model.save_pretrained(tmp_path / "adapter")
    records = movie_records["test"][:8]
    base = lambda: load_model(ModelConfig(name=str(tiny_model_dir), dtype="fp32"))  # noqa: E731
    unmerged = PeftModel.from_pretrained(base(), tmp_path / "adapter")
    merged = PeftModel.from_pretrained(base(), tmp_path / "adapter").merge_and_unload()
    plain = yes_probabilities(base(), tokenizer, records, progress=False)
    a = yes_probabilities(unmerged, tokenizer, records, progress=False)
    b = yes_probabilities(merged, tokenizer, records, progress=False)
    assert np.allclose(a, b, atol=1e-5) and not np.allclose(a, plain, atol=1e-3)
