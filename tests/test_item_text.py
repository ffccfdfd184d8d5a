"""An LLM's item-title embeddings as an item feature of DCNv2 and SASRec (`raylib.item_text`): the exchange
Parquet is aligned to each model's own item index, the vectors reach the score, and a published model carries
them in its safetensors."""

import json

import pytest
import torch

from raylib import RaylibError
from raylib.item_text import aligned, load_table, save_table, table_dim, write_embeddings


def test_vectors_land_on_the_models_own_rows_and_unknown_items_stay_zero(tmp_path):
    path = write_embeddings(tmp_path / "emb.parquet", ["a", "b", "c"], torch.arange(6.0).reshape(3, 2))
    table = aligned(path, {"c": 1, "a": 3, "z": 2}, rows=4)  # row 0 is padding; "z" has no vector; "b" no row
    assert table.tolist() == [[0, 0], [4, 5], [0, 0], [0, 1]]
    saved = save_table(tmp_path / "t.safetensors", table)
    assert torch.equal(load_table(saved), table) and table_dim(saved) == 2
    with pytest.raises(RaylibError, match="none of its 3 item_ids is an item of the model"):
        aligned(path, {"x": 1}, rows=2)


def test_sasrec_scores_move_with_the_title_vectors_and_the_published_model_keeps_them(tmp_path):
    from safetensors.torch import save_file

    from raylib.methods.nextitem.sasrec import CONFIG_FILE, MODEL_FILE, SASRec, load_sasrec

    torch.manual_seed(0)
    plain = SASRec(num_items=5, history_len=3, hidden_size=8)
    assert "text_dim" not in plain.hparams and plain.item_text is None  # a plain model's config is as before
    model = SASRec(num_items=5, history_len=3, hidden_size=8, text_dim=4).eval()
    history = torch.tensor([[0, 1, 2]])
    before = model(history)
    model.item_text.fill(torch.cat([torch.zeros(1, 4), torch.randn(5, 4)]))
    after = model(history)
    assert after.shape == (1, 5) and not torch.allclose(before, after)
    assert torch.all(model.items()[0] == 0)  # padding stays zero
    save_file(model.state_dict(), str(tmp_path / MODEL_FILE))
    (tmp_path / CONFIG_FILE).write_text(json.dumps(model.hparams))
    assert torch.allclose(load_sasrec(tmp_path)(history), after)


def test_dcnv2_reads_the_target_items_title_vector_as_one_more_field():
    from raylib.data.ctr import SINGLE_FIELDS
    from raylib.methods.corella.crm import ITEM_COLUMN, DCNv2, DCNv2Config

    sizes = {f: 6 for f in SINGLE_FIELDS + ("genres", "rating")}
    torch.manual_seed(0)
    model = DCNv2(DCNv2Config(sizes, embedding_dim=4, cross_layers=1, deep_layers=(8,), text_dim=3)).eval()
    model.item_text.fill(torch.randn(6, 3))
    fields = torch.full((2, len(SINGLE_FIELDS)), 2)
    fields[1, ITEM_COLUMN] = 3  # the second row's target is another item: only its title vector differs
    zeros = torch.zeros((2, 1), dtype=torch.long)
    x0 = model.embed(fields, zeros, zeros, zeros)
    assert x0.shape == (2, 4 * (len(SINGLE_FIELDS) + 3))
    assert torch.allclose(x0[0, -4:], model.item_text(torch.tensor(2)))
    assert model(fields, zeros, zeros, zeros).shape == (2,)
