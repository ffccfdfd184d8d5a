"""Next-item data: windows, the global time split, popularity, a user's own files, and bad input."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylib import RaylibError
from raylib.data.sequences import (build_sequence_data, build_windows, held_out_validation, sample_windows,
                                    user_sequences)
from raylib.data.tables import read_table


def interactions(rows):
    users, items, stamps = zip(*rows)
    return pa.table({"user_id": list(users), "item_id": list(items), "timestamp": pa.array(stamps, pa.int64())})


ITEMS = pa.table({"item_id": ["a", "b", "c", "d", "e"],
                  "title": ["Alien (1979)", "Brazil (1985)", "Casablanca (1942)", "Dune (1984)", "Alien (1979)"]})


def test_windows_keep_up_to_history_len_items_oldest_first():
    per_user = user_sequences(interactions([("u1", "c", 3), ("u1", "a", 1), ("u1", "b", 2), ("u1", "d", 4)]),
                              {i: i for i in "abcd"})
    windows = build_windows(per_user, history_len=2)
    assert [(w.history, w.target) for w in windows] == [(("a",), "b"), (("a", "b"), "c"), (("b", "c"), "d")]


def test_split_by_global_time_of_the_target_and_popularity_from_training_only():
    # 10 interactions at t=1..10: the validation period starts at t=9, the test period at t=10 (80/10/10).
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "a", 4), ("u2", "b", 5), ("u2", "c", 6),
            ("u3", "a", 7), ("u3", "d", 8), ("u3", "d", 9), ("u1", "d", 10)]
    data = build_sequence_data(interactions(rows), ITEMS, history_len=10)
    assert data.cutoffs == (9, 10)
    assert all(w.timestamp < 9 for w in data.train)
    assert [(w.user_id, w.target) for w in data.valid] == [("u3", "d")]
    assert [(w.user_id, w.history, w.target) for w in data.test] == [("u1", ("a", "b", "c"), "d")]
    # popularity counts t < 9 only: d was seen once there (t=8), not three times
    assert dict(zip(data.catalogue.item_ids, data.catalogue.popularity)) == {"a": 3, "b": 2, "c": 2, "d": 1, "e": 0}
    # every item is in the catalogue, duplicate titles included (they tie when grounding)
    assert data.catalogue.titles.count("Alien (1979)") == 2


def test_a_single_interaction_makes_no_window():
    per_user = user_sequences(interactions([("u1", "a", 1)]), {"a": "A"})
    assert build_windows(per_user) == []


def test_unknown_item_and_missing_title_are_named():
    with pytest.raises(RaylibError, match="item 'zz'"):
        build_sequence_data(interactions([("u1", "a", 1), ("u1", "zz", 2)]), ITEMS)
    no_title = pa.table({"item_id": ["a", "b"], "title": ["Alien (1979)", " "]})
    with pytest.raises(RaylibError, match="Item 'b' has no title"):
        build_sequence_data(interactions([("u1", "a", 1), ("u1", "b", 2)]), no_title)


def test_user_files_csv_and_parquet(tmp_path):
    csv = tmp_path / "inter.csv"
    csv.write_text("user_id,item_id,timestamp,rating\n7,001,5,4\n7,002,6,3\n")
    table = read_table(csv, ("user_id", "item_id", "timestamp"))
    assert table.column("item_id").to_pylist() == ["001", "002"]  # ids stay strings (leading zeros kept)
    pq.write_table(ITEMS, tmp_path / "items.parquet")
    assert read_table(tmp_path / "items.parquet", ("item_id", "title")).num_rows == 5
    with pytest.raises(RaylibError, match="lacks column"):
        read_table(csv, ("user_id", "title"))
    with pytest.raises(RaylibError, match="does not exist"):
        read_table(tmp_path / "nope.csv", ("user_id",))


def test_embedded_movielens_windows():
    from raylib.methods.nextitem.config import SequenceDataConfig
    from raylib.methods.nextitem.pipeline import load_sequence_data

    data = load_sequence_data(SequenceDataConfig(valid_samples=50, test_samples=100))
    assert len(data.catalogue) == 1682 and len(data.valid) == 50 and len(data.test) == 100
    assert len(data.train) > 70_000 and all(1 <= len(w.history) <= 10 for w in data.train[:1000])
    assert data.train.timestamps.max() < data.cutoffs[0] <= min(data.test.timestamps.min(), data.valid.timestamps.min())
    assert sample_windows(data.test, 10, 1) == sample_windows(data.test, 10, 1)  # seeded


def test_over_long_histories_lose_the_oldest_items_never_the_instruction(tokenizer):
    from raylib.encoding import fit_history
    from raylib.prompts import BIGREC_INSTRUCTION, bigrec_prompt

    history = [f"Movie number {i} (19{i:02d})" for i in range(40)]
    full = len(tokenizer(bigrec_prompt(history))["input_ids"])
    prompt = fit_history(tokenizer, bigrec_prompt, history, full - 20)
    assert BIGREC_INSTRUCTION.format(domain="movie") in prompt
    assert '"Movie number 39 (1939)"' in prompt and '"Movie number 0 (1900)"' not in prompt
    assert len(tokenizer(prompt)["input_ids"]) <= full - 20
    with pytest.raises(RaylibError, match="even without history"):
        fit_history(tokenizer, bigrec_prompt, history, 10)


def test_a_users_own_files_feed_the_same_pipeline(tmp_path):
    from raylib.methods.nextitem.config import SequenceDataConfig
    from raylib.methods.nextitem.pipeline import load_sequence_data

    rows = "".join(f"{u},{i},{10 * u + t}\n" for u in range(1, 6) for t, i in enumerate(["a", "b", "c", "d"]))
    (tmp_path / "inter.csv").write_text("user_id,item_id,timestamp\n" + rows)
    pq.write_table(ITEMS, tmp_path / "items.parquet")
    config = SequenceDataConfig(source="files", interactions_file=str(tmp_path / "inter.csv"),
                                items_file=str(tmp_path / "items.parquet"), time_split=[0.6, 0.2, 0.2])
    data = load_sequence_data(config)
    assert len(data.catalogue) == 5 and data.train and data.valid and data.test
    (tmp_path / "bad.csv").write_text("user_id,item_id,timestamp\n1,a,1\n1,zz,2\n")
    with pytest.raises(RaylibError, match="item 'zz'"):
        load_sequence_data(SequenceDataConfig(source="files", interactions_file=str(tmp_path / "bad.csv"),
                                              items_file=str(tmp_path / "items.parquet")))


def test_titles_read_as_people_write_them():
    from raylib.data.sequences import readable_title

    assert readable_title("Shining, The (1980)") == "The Shining (1980)"
    assert readable_title("Cité des enfants perdus, La (1995)") == "La Cité des enfants perdus (1995)"
    assert readable_title("Seven (Se7en) (1995)") == "Seven (Se7en) (1995)"
    assert readable_title("Angel, Angel (1990)") == "Angel, Angel (1990)"


def test_sasrec_picks_its_epoch_on_validation_windows_the_gamma_search_never_sees():
    """BIGRec's gamma is searched on the sampled validation windows; SASRec (the CF signal) early-stops on the rest."""
    windows = build_windows(user_sequences(interactions([("u", i, t) for t, i in enumerate("abcdeabcde")]),
                                           {i: i for i in "abcde"}), history_len=2)
    sample, held = held_out_validation(windows, 4, seed=0)
    assert sample == sample_windows(windows, 4, seed=0) and len(held) == len(windows) - 4
    assert not set(sample.at) & set(held.at)  # each window's row in the users' timelines
    sample, held = held_out_validation(windows, 0, seed=0)  # "all windows": every other one is held out instead
    assert sample == windows[1::2] and held == windows[::2]
