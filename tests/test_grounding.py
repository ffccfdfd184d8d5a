"""BIGRec's grounding: L2 over the whole catalogue, popularity re-weighting, the embedding cache, GenRec's two
protocols."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raylib.grounding import (beam_ranks, catalogue_embeddings, embed_texts, exact_match_ranks, l2_distances,
                              popularity_ranks, reweight, target_ranks)

TITLES = ["Alien (1979)", "Brazil (1985)", "Casablanca (1942)", "Alien (1979)", "Dune (1984)"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), tokenizer


def test_the_exact_title_grounds_first_and_duplicates_tie(tiny):
    model, tokenizer = tiny
    items = embed_texts(model, tokenizer, TITLES, batch_size=2, progress=False)
    queries = embed_texts(model, tokenizer, ["Casablanca (1942)", "Alien (1979)", ""], progress=False)
    distances = l2_distances(queries, items)
    assert distances.shape == (3, 5) and torch.isfinite(distances).all()  # the empty text grounds too
    assert target_ranks(distances[:2], [2, 0]).tolist() == [1, 1]
    assert target_ranks(distances[1:2], [3]).tolist() == [1]  # the duplicate title shares rank 1


def test_batching_does_not_change_embeddings(tiny):
    model, tokenizer = tiny
    one = embed_texts(model, tokenizer, TITLES, batch_size=1, progress=False)
    many = embed_texts(model, tokenizer, TITLES, batch_size=5, progress=False)
    assert torch.allclose(one, many, atol=1e-5)


def test_popularity_reweighting_moves_popular_items_up_as_gamma_grows():
    distances = np.array([[0.10, 0.30, 0.50, 0.70, 0.90]])
    popularity = np.array([0.0, 0.0, 0.0, 0.0, 100.0])  # the farthest item is by far the most popular
    ranks = [target_ranks(reweight(distances, popularity, g), [4])[0] for g in (0.0, 1.0, 4.0, 20.0)]
    assert ranks[0] == 5 and ranks == sorted(ranks, reverse=True) and ranks[-1] < 5
    # gamma 0 keeps the distance ranking; a per-query signal ([q, n], e.g. SASRec scores) works the same way
    assert np.array_equal(np.argsort(reweight(distances, popularity, 0.0)[0]), np.argsort(distances[0]))
    assert reweight(distances, popularity[None, :], 3.0).shape == (1, 5)


def test_ranks_share_ties_and_popularity_baseline():
    assert target_ranks(np.array([[0.2, 0.1, 0.1, 0.3]]), [2]).tolist() == [1]
    assert target_ranks(np.array([[0.2, 0.1, 0.1, 0.3]]), [0]).tolist() == [3]
    assert popularity_ranks(np.array([5.0, 9.0, 9.0, 1.0]), [1, 2, 3]).tolist() == [1, 1, 4]


def test_catalogue_embeddings_are_cached(tiny, tmp_path):
    model, tokenizer = tiny
    calls = []
    hook = model.get_decoder().register_forward_hook(lambda *args: calls.append(1))
    try:
        first, computed = catalogue_embeddings(model, tokenizer, TITLES, "tiny", "five", tmp_path)
        assert computed and calls
        calls.clear()
        second, computed = catalogue_embeddings(model, tokenizer, TITLES, "tiny", "five", tmp_path)
        assert not computed and not calls  # the second call computes nothing
        assert torch.equal(first, second)
    finally:
        hook.remove()


def test_genrec_protocols():
    beams = [['"Dune (1984)"', "alien (1979)"], ["Heat (1995)", "Nothing"]]
    assert exact_match_ranks(beams, ["Alien (1979)", "Dune (1984)"], miss_rank=6).tolist() == [2, 6]
    # query 0: beams ground to items 3, 3 (duplicate), then the rest by beam 0's distance; query 1: to 1 then 0
    d0 = torch.tensor([[0.5, 0.4, 0.3, 0.0, 0.9], [0.8, 0.7, 0.6, 0.1, 0.2]])
    d1 = torch.tensor([[0.3, 0.1, 0.5, 0.6, 0.7], [0.0, 0.4, 0.5, 0.6, 0.7]])
    assert beam_ranks([d0, d1], [3, 0]).tolist() == [1, 2]
    assert beam_ranks([d0], [2]).tolist() == [2]  # not grounded to: after the grounded item, by beam 0
