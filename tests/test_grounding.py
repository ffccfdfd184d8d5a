"""BIGRec's grounding (Sec. 3.2): L2 over the whole catalogue, the statistical re-weighting, the embedding cache;
GenRec's two ranking protocols.

The model tests use the tiny random LLaMA: grounding needs no model that knows movies, only that the same text
gives the same embedding (distance 0) and that batching and padding change nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raylib import RaylibError
from raylib.methods.nextitem.grounding import (beam_ranks, catalogue_embeddings, embed_texts, exact_match_ranks, l2_distances,
                              popularity_ranks, reweight, target_ranks)

TITLES = ["Alien (1979)", "Brazil (1985)", "Casablanca (1942)", "Alien (1979)", "Dune (1984)",
          "Twelve Monkeys (a.k.a. 12 Monkeys) (1995)"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval(), tokenizer


# ------------------------------------------------------------------ embedding and grounding (tiny model)
def test_the_exact_title_grounds_first_and_duplicates_tie(tiny):
    model, tokenizer = tiny
    items = embed_texts(model, tokenizer, TITLES, batch_size=2, progress=False)
    generated = ["Casablanca (1942)", "Alien (1979)", "Alien (1979)", ""]  # what the LLM wrote
    distances = l2_distances(embed_texts(model, tokenizer, generated, progress=False), items)
    assert distances.shape == (4, 6) and distances.dtype == torch.float32
    assert torch.isfinite(distances).all()  # the empty text grounds too (as the end-of-text token)
    assert distances[0, 2] < 1e-3  # same text, same embedding
    # targets: Casablanca; each of the two "Alien (1979)" items (a duplicate title shares rank 1)
    assert target_ranks(distances[:3], [2, 0, 3]).tolist() == [1, 1, 1]
    assert target_ranks(distances[:3], [4, 4, 4]).min() > 1


def test_batching_and_padding_change_no_embedding(tiny):
    model, tokenizer = tiny
    texts = TITLES + [""]
    together = embed_texts(model, tokenizer, texts, batch_size=7, progress=False)  # one left-padded batch
    alone = torch.cat([embed_texts(model, tokenizer, [t], progress=False) for t in texts])  # no padding
    assert together.shape == (7, model.config.hidden_size)
    assert torch.allclose(together, alone, atol=1e-5)  # rows in the given order, padding ignored


def test_catalogue_embeddings_are_cached(tiny, tmp_path):
    model, tokenizer = tiny
    calls = []  # one entry per forward pass (a batch of titles)
    hook = model.get_decoder().register_forward_hook(lambda *args: calls.append(1))
    try:
        first, computed = catalogue_embeddings(model, tokenizer, TITLES, "tiny", "six", tmp_path, batch_size=2)
        assert computed and len(calls) == 3  # 5 distinct titles in batches of 2
        second, computed = catalogue_embeddings(model, tokenizer, TITLES, "tiny", "six", tmp_path)
        assert not computed and len(calls) == 3  # read from the safetensors file: no forward pass
        assert torch.equal(first, second)
        catalogue_embeddings(model, tokenizer, TITLES, "tiny", "six-v2", tmp_path)
        assert len(calls) == 4  # another catalogue (or model) key is computed afresh
    finally:
        hook.remove()
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and not list(tmp_path.glob("*.tmp*"))


# ------------------------------------------------------------------ re-weighting (BIGRec Eq. 4)
def test_popularity_reweighting_moves_popular_items_up_as_gamma_grows():
    distances = np.array([[0.10, 0.30, 0.50, 0.70, 0.90]])
    popularity = np.array([0.0, 0.0, 0.0, 20.0, 100.0])  # the farthest item is by far the most popular
    ranks = [target_ranks(reweight(distances, popularity, g), [4])[0] for g in (0.0, 1.5, 4.0)]
    assert ranks == [5, 3, 2]
    # normalised distances put the nearest item at 0: it stays first whatever gamma (as in the authors' code)
    assert target_ranks(reweight(distances, popularity, 20.0), [0]).tolist() == [1]


def test_gamma_zero_keeps_the_ranking():
    rng = np.random.default_rng(0)
    distances = rng.uniform(1, 5, size=(3, 40))
    for signal in (rng.uniform(0, 100, size=40), rng.normal(size=(3, 40))):  # popularity; per-query scores
        weighted = reweight(distances, signal, 0.0)
        assert np.array_equal(np.argsort(weighted, axis=1), np.argsort(distances, axis=1))


def test_reweighting_with_per_query_scores_and_a_constant_signal():
    distances = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    scores = np.array([[0.0, 0.0, 9.0], [5.0, 0.0, 0.0]])  # e.g. SASRec's scores, normalised per query
    np.testing.assert_allclose(reweight(distances, scores, 1.0), [[0.0, 0.5, 0.5], [0.5, 0.5, 0.0]])
    # a constant signal carries no information: only the normalised distances remain
    np.testing.assert_allclose(reweight(distances, np.full(3, 7.0), 4.0), [[0, 0.5, 1], [1, 0.5, 0]])
    with pytest.raises(RaylibError, match="one value per item"):
        reweight(distances, np.ones(4), 1.0)


# ------------------------------------------------------------------ ranks
def test_ranks_share_ties_and_popularity_baseline():
    scores = np.array([[0.3, 0.1, 0.1, 0.5]] * 4)
    assert target_ranks(scores, [1, 2, 0, 3]).tolist() == [1, 1, 3, 4]  # lower is better: ties share rank 1
    assert target_ranks(torch.tensor(scores), [3, 0, 1, 2], lower_is_better=False).tolist() == [1, 2, 3, 3]
    assert popularity_ranks(np.array([5.0, 9.0, 9.0, 1.0]), [1, 2, 0, 3]).tolist() == [1, 1, 3, 4]


def test_genrec_exact_match_ranks():
    beams = [['"Dune (1984)"', "  alien (1979) "], ["Heat (1995)", "Nothing"], ['"Dune (1984)"\nmore text']]
    ranks = exact_match_ranks(beams, ["Alien (1979)", "Dune (1984)", "Dune (1984)"], miss_rank=7)
    assert ranks.tolist() == [2, 7, 1]  # a miss ranks after the whole catalogue (size + 1)


def test_genrec_grounded_beam_ranks():
    # 5 items on a line; beam 0 at 0.0 and beam 1 at 0.15 ground to item 2, beam 2 at 3.9 to item 4; by beam 0's
    # distance the items are 2, 0, 3, 1, 4.
    items = torch.tensor([[0.5], [3.0], [0.1], [0.7], [4.0]])
    beams = torch.tensor([[0.0], [0.15], [3.9]])
    # the ranked list: grounded items in beam order without repeats [2, 4], then the rest by beam 0 [0, 3, 1]
    assert beam_ranks([beams] * 5, items, [2, 4, 0, 3, 1]).tolist() == [1, 2, 3, 4, 5]
    assert beam_ranks([beams[:1]], items, [4]).tolist() == [5]  # one beam: plain grounding of that beam


def test_chunked_grounding_ranks_as_the_whole_matrix_does():
    """Chunks of items (memory bounded by the chunk) give the ranks and top-k of the whole distance matrix, with
    re-weighting by a shared or a per-query signal, seen items taken out, and duplicate items tied exactly."""
    from raylib.methods.nextitem.grounding import grounded_ranks, nearest_items

    rng = np.random.default_rng(0)
    items = torch.tensor(rng.normal(size=(3000, 16)), dtype=torch.float32)
    items[7] = items[5]  # a duplicate title: the same vector
    queries = torch.tensor(rng.normal(size=(40, 16)), dtype=torch.float32)
    targets = rng.integers(0, 3000, 40)
    targets[:2] = (5, 7)
    seen = [set(rng.integers(0, 3000, 5).tolist()) for _ in range(40)]
    whole = l2_distances(queries, items)
    for signal in (None, rng.random(3000), rng.random((40, 3000))):
        for gamma in (0.0, 1.3):
            scores = whole if signal is None else reweight(whole, signal, gamma)
            expected = target_ranks(scores, targets, seen=seen)
            assert (grounded_ranks(queries, items, targets, seen, signal, gamma, chunk=512) == expected).all()
            top, _ = nearest_items(queries, items, 3, signal=signal, gamma=gamma, chunk=700)
            assert (top == np.argsort(np.asarray(scores), 1, kind="stable")[:, :3]).all()


def test_seen_items_are_taken_out_of_every_ranking_alike():
    """With the user's history excluded, a history item never counts as ranked above the target."""
    scores = np.array([[0.3, 0.1, 0.1, 0.5]] * 2)  # lower is better
    assert target_ranks(scores, [0, 3], seen=[{1}, {1, 2}]).tolist() == [2, 2]  # items 1 and 2 no longer ahead
    assert popularity_ranks(np.array([5.0, 9.0, 9.0, 1.0]), [0, 3], seen=[{1}, {1, 2}]).tolist() == [2, 2]
    items, beams = torch.tensor([[0.5], [3.0], [0.1], [0.7], [4.0]]), torch.tensor([[0.0], [3.9]])
    # item 2 (the first beam's) is seen: the list is [4], then the rest by beam 0 without item 2: [0, 3, 1]
    assert beam_ranks([beams] * 3, items, [4, 0, 1], seen=[{2}] * 3).tolist() == [1, 2, 4]
    texts = [['"Dune (1984)"', "Alien (1979)"]]
    assert exact_match_ranks(texts, ["Alien (1979)"], 7, seen_titles=[{"Dune (1984)"}]).tolist() == [1]


def test_mean_pooling_is_an_option(tiny):
    model, tokenizer = tiny
    last = embed_texts(model, tokenizer, TITLES, progress=False)
    mean = embed_texts(model, tokenizer, TITLES, progress=False, pooling="mean")
    assert mean.shape == last.shape and not torch.allclose(mean, last)
    single = embed_texts(model, tokenizer, TITLES[:1], batch_size=1, progress=False, pooling="mean")
    assert torch.allclose(single[0], mean[0], atol=1e-5)  # padding does not enter the mean
