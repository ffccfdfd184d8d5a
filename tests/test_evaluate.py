"""Yes/No scoring: one batched forward pass gives the same P(Yes) as one prompt at a time and as generate()."""

import numpy as np
import pytest
import torch

from raylib.config import ModelConfig
from raylib.bench.tallrec import yes_probabilities_by_generate
from raylib.evaluate import evaluate_records, yes_probabilities
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


def test_real_model_zero_shot_is_better_than_chance(tokenizer, official_movie_records):
    """SmolLM2-135M-Instruct, no tuning, on 200 official test records (0.64 measured in bf16, 0.653 in fp32; the
    full set ~0.65). The official files, as this docstring says: on 200 records built from the embedded ML-100K
    (the `movie_records` fixture) the same model scores 0.574 in fp32."""
    model = load_model(ModelConfig())
    report = evaluate_records(model, tokenizer, official_movie_records["test"][:200], batch_size=16,
                              progress=False)
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


def test_tallrec_scoring_is_the_originals_formula_and_ranks_differently():
    """TALLRec's evaluate.py: softmax([p_yes, p_no]) of the full-vocabulary probabilities; "pair" is the
    softmax over the two logits. Row A: Yes beats No by far but both are unlikely; row B: both likely."""
    from raylib.evaluate import yes_scores

    logits = torch.tensor([[0.0, -5.0, 10.0, 10.0],    # A: p_yes ~ 2e-5, p_yes / p_no = e^5
                           [2.0, 1.0, -10.0, -10.0]])  # B: p_yes ~ 0.73, p_no ~ 0.27
    pair = yes_scores(logits, 0, 1, "pair")
    tallrec = yes_scores(logits, 0, 1, "tallrec")
    probs = logits.softmax(-1)
    expected = torch.sigmoid(probs[:, 0] - probs[:, 1])  # softmax([a, b])[0] = sigmoid(a - b)
    assert torch.allclose(tallrec, expected, atol=1e-7)
    assert torch.allclose(pair, torch.sigmoid(logits[:, 0] - logits[:, 1]), atol=1e-7)
    assert pair[0] > pair[1] and tallrec[0] < tallrec[1]  # opposite rankings
    with pytest.raises(Exception, match="scoring"):
        yes_scores(logits, 0, 1, "ratio")


def test_common_prefix_compares_token_ids_and_leaves_a_token():
    from raylib.encoding import Encoded
    from raylib.evaluate import common_prefix_length

    enc = lambda ids: Encoded(ids, [], 0)  # noqa: E731
    assert common_prefix_length([enc([1, 2, 3, 4]), enc([1, 2, 3, 5, 6])]) == 3
    assert common_prefix_length([enc([1, 2, 3]), enc([1, 2, 3, 4])]) == 2  # the shorter keeps one token
    assert common_prefix_length([enc([1, 2, 3])]) == 2
    assert common_prefix_length([enc([1, 2]), enc([7, 2])]) == 0


def _mixed_records(movie_records):
    """Official records of varied lengths, plus two with another instruction (a shorter shared prefix)."""
    import dataclasses

    records = list(movie_records["test"][:11])
    for r in movie_records["test"][20:22]:
        records.append(dataclasses.replace(r, instruction=r.instruction.replace("the user", "this user")))
    return records


@pytest.mark.parametrize("scoring", ["pair", "tallrec"])
def test_prefix_cached_scores_equal_plain_batched(tiny_model, tokenizer, movie_records, scoring):
    from raylib.evaluate import common_prefix_length, encode_all

    for records in (movie_records["test"][:13], _mixed_records(movie_records), movie_records["test"][5:6]):
        encoded = encode_all(tokenizer, records, 512)
        assert common_prefix_length(encoded) > 10
        assert len({len(e.input_ids) for e in encoded}) > 1 or len(records) == 1
        plain = yes_probabilities(tiny_model, tokenizer, records, batch_size=5, progress=False, scoring=scoring,
                                  prefix_cache=False)
        cached = yes_probabilities(tiny_model, tokenizer, records, batch_size=5, progress=False, scoring=scoring,
                                   prefix_cache=True)
        single = yes_probabilities(tiny_model, tokenizer, records, batch_size=1, progress=False, scoring=scoring,
                                   prefix_cache=True)
        assert np.allclose(plain, cached, atol=1e-5) and np.allclose(plain, single, atol=1e-5)
    # a short budget truncates histories: prompts of very different lengths in one batch
    short = yes_probabilities(tiny_model, tokenizer, _mixed_records(movie_records), max_length=160, batch_size=7,
                              progress=False, scoring=scoring, prefix_cache=False)
    short_cached = yes_probabilities(tiny_model, tokenizer, _mixed_records(movie_records), max_length=160,
                                     batch_size=7, progress=False, scoring=scoring, prefix_cache=True)
    assert np.allclose(short, short_cached, atol=1e-5)


def test_generate_scores_with_tallrec_formula_and_counts_new_tokens(tiny_model, tokenizer, movie_records):
    records = movie_records["test"][:4]
    stats = {}
    generated = yes_probabilities_by_generate(tiny_model, tokenizer, records, max_new_tokens=3, progress=False,
                                              scoring="tallrec", stats=stats)
    batched = yes_probabilities(tiny_model, tokenizer, records, progress=False, scoring="tallrec")
    assert np.allclose(generated, batched, atol=1e-5)
    assert len(stats["new_tokens"]) == 4 and all(1 <= n <= 3 for n in stats["new_tokens"])


def test_score_records_uses_and_records_the_eval_dtype(tiny_model_dir, movie_records):
    """Trained in bf16, scored in fp32 unless eval.dtype says otherwise; the report says which."""
    from raylib.methods.tallrec.config import EvalConfig
    from raylib.methods.tallrec.pipeline import score_records

    records = movie_records["test"][:6]
    model_cfg = ModelConfig(name=str(tiny_model_dir), dtype="bf16")
    fp32 = score_records(model_cfg, records, None, 512, EvalConfig(batch_size=4))
    bf16 = score_records(model_cfg, records, None, 512, EvalConfig(dtype="bf16", batch_size=4, scoring="tallrec",
                                                                   prefix_cache=False))
    assert fp32["eval_dtype"] == "float32" and fp32["scoring"] == "pair" and fp32["prefix_cache"] is True
    assert bf16["eval_dtype"] == "bfloat16" and bf16["scoring"] == "tallrec"
    assert {"auc", "logloss", "accuracy", "records", "probabilities"} <= set(fp32)
    plain = yes_probabilities(load_model(ModelConfig(name=str(tiny_model_dir), dtype="fp32")),
                              load_tokenizer_for(tiny_model_dir), records, progress=False, prefix_cache=False)
    assert np.allclose(fp32["probabilities"], plain, atol=1e-5)


def load_tokenizer_for(model_dir):
    from raylib.model import load_tokenizer

    return load_tokenizer(ModelConfig(name=str(model_dir)))
