"""MovieLens loading, the TALLRec record builder, record files and few-shot sampling."""

import json

import pytest

from conftest import ML100K_RAW, TALLREC_MOVIE, needs_shared
from raylib import RaylibError
from raylib.config import from_dict
from raylib.data import (
    build_tallrec_records, load_movielens, read_records, records_from_table, records_to_table, sample_records,
    split_by_user, write_records,
)


@pytest.fixture(scope="module")
def embedded():
    return load_movielens()  # the recbole wheel's ML-100K, read by path


@pytest.fixture(scope="module")
def embedded_records(embedded):
    return build_tallrec_records(embedded.interactions, embedded.items)


def test_embedded_movielens_tables(embedded):
    assert embedded.interactions.num_rows == 100_000
    assert embedded.items.num_rows == 1682
    assert set(embedded.interactions.column_names) == {"user_id", "item_id", "rating", "timestamp"}
    titles = dict(zip(embedded.items["item_id"].to_pylist(), embedded.items["title"].to_pylist()))
    assert titles["1"] == "Toy Story (1995)"
    assert embedded.items["genres"][0].as_py() == ["Animation", "Children's", "Comedy"]
    assert embedded.users.num_rows == 943


def test_embedded_titles_are_read_as_utf8_and_the_recbole_typo_is_fixed(embedded):
    titles = dict(zip(embedded.items["item_id"].to_pylist(), embedded.items["title"].to_pylist()))
    assert "Misérables, Les (1995)" in titles.values()
    assert not [t for t in titles.values() if "Ã" in t]  # UTF-8 read as latin-1 shows up as "Ã©" and the like
    assert titles["267"] == "unknown"  # RecBole's file says "unkonwn" (title and year); GroupLens says "unknown"


@needs_shared(ML100K_RAW)
def test_embedded_titles_equal_the_grouplens_raw_titles(embedded):
    raw = load_movielens(ML100K_RAW)  # u.item, latin-1
    assert embedded.items["title"].to_pylist() == raw.items["title"].to_pylist()


def test_first_record_of_user_1_hand_checked(embedded_records):
    # u.data, user 1 by time (ties in file order): items 168 172 165 156 196 166 187 14 250 127, all rated 4-5,
    # then item 117 ("Rock, The (1996)") rated 3 -> not liked.
    record = next(r for r in embedded_records if r.user_id == "1")
    assert record.instruction == ("Given the user's preference and unpreference, identify whether the user will "
                                  'like the target movie by answering "Yes." or "No.".')
    assert record.input == (
        'User Preference: "Monty Python and the Holy Grail (1974)", "Empire Strikes Back, The (1980)", '
        '"Jean de Florette (1986)", "Reservoir Dogs (1992)", "Dead Poets Society (1989)", '
        '"Manon of the Spring (Manon des sources) (1986)", "Godfather: Part II, The (1974)", "Postino, Il (1994)", '
        '"Fifth Element, The (1997)", "Godfather, The (1972)"\n'
        "User Unpreference: \n"
        'Whether the user will like the target movie "Rock, The (1996)"?')
    assert (record.item_id, record.output, record.label) == ("117", "No.", 0)


@needs_shared(TALLREC_MOVIE)
@pytest.mark.parametrize("split", ["test", "valid"])
def test_builder_reproduces_the_official_tallrec_files(split):
    ml = load_movielens(ML100K_RAW)
    built = {(r.input, r.output) for r in build_tallrec_records(ml.interactions, ml.items)}
    official = json.loads((TALLREC_MOVIE / f"{split}.json").read_text())
    assert sum((o["input"], o["output"]) in built for o in official) == len(official)


def test_labels_follow_rating_threshold(embedded, embedded_records):
    ratings = {(u, i): r for u, i, r in zip(embedded.interactions["user_id"].to_pylist(),
                                            embedded.interactions["item_id"].to_pylist(),
                                            embedded.interactions["rating"].to_pylist())}
    for record in embedded_records[:500]:
        assert record.label == int(ratings[(record.user_id, record.item_id)] > 3)


def test_split_by_user_has_no_shared_users(embedded_records):
    train, valid, test = split_by_user(embedded_records, 0.1, 0.1, seed=0)
    assert len(train) + len(valid) + len(test) == len(embedded_records)
    users = [{r.user_id for r in part} for part in (train, valid, test)]
    assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])


def test_few_shot_sampling_is_seeded(embedded_records):
    a = sample_records(embedded_records, 64, seed=1)
    assert a == sample_records(embedded_records, 64, seed=1)
    assert a != sample_records(embedded_records, 64, seed=2)
    assert len(a) == 64 and len(sample_records(embedded_records[:10], 64, seed=1)) == 10


def test_record_files_round_trip(tmp_path, embedded_records):
    records = embedded_records[:20]
    for name in ("r.json", "r.parquet"):
        assert read_records(write_records(records, tmp_path / name)) == records
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("\n".join(json.dumps({"instruction": r.instruction, "input": r.input, "output": r.output})
                               for r in records))
    assert [r.output for r in read_records(jsonl)] == [r.output for r in records]
    assert records_from_table(records_to_table(records)) == records


@pytest.mark.parametrize("name, content, message", [
    ("bad.json", '[{"instruction": "i", "input": "x",', r"bad.json:1: malformed JSON"),
    ("bad.jsonl", '{"instruction": "i", "input": "x", "output": "Yes."}\n{oops}', r"bad.jsonl:2: malformed JSON"),
    ("missing.json", '[{"instruction": "i", "output": "Yes."}]', r"record 0: the record has no 'input' field"),
    ("answer.json", '[{"instruction": "i", "input": "x", "output": "Maybe."}]', r"output is 'Maybe.'"),
    ("empty.json", "", r"empty.json is empty"),
    ("nothing.json", "[]", r"holds no records"),
])
def test_bad_record_files_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(RaylibError, match=message):
        read_records(path)


def test_missing_folders_and_files_are_clear_errors(tmp_path):
    with pytest.raises(RaylibError, match="does not exist"):
        load_movielens(tmp_path / "nowhere")
    with pytest.raises(RaylibError, match="holds no MovieLens files"):
        load_movielens(tmp_path)
    with pytest.raises(RaylibError, match="does not exist"):
        read_records(tmp_path / "missing.json")


def test_unknown_item_in_interactions_is_named(embedded):
    import pyarrow as pa

    bad = pa.concat_tables([embedded.interactions.slice(0, 20), pa.table({
        "user_id": ["1"], "item_id": ["99999"], "rating": pa.array([4.0]), "timestamp": pa.array([1], pa.int64())})])
    with pytest.raises(RaylibError, match="'99999'"):
        build_tallrec_records(bad, embedded.items)


def test_job_data_from_embedded_movielens():
    """What `make demo` loads: records built from the embedded ML-100K, split by user, the same on every call."""
    from raylib.methods.tallrec.config import DataConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data

    config = DataConfig(train_samples=64, valid_samples=32, test_samples=100)
    data = load_tallrec_data(config)
    assert (len(data.train), len(data.valid), len(data.test)) == (64, 32, 100)
    again = load_tallrec_data(config)
    assert again.train == data.train and list(again.test) == list(data.test)
    assert not {r.user_id for r in data.test} & {r.user_id for r in data.train}


@pytest.fixture
def small_movielens(tmp_path):
    """A copy of the embedded ML-100K cut to its first 5,000 interactions (records build in a blink)."""
    from raylib.data import movielens_files

    folder = tmp_path / "ml-small"
    folder.mkdir()
    for path in movielens_files()[1]:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        (folder / path.name).write_text("".join(lines[:5001] if path.suffix == ".inter" else lines),
                                        encoding="utf-8")
    return folder


def test_records_follow_the_files_content(small_movielens):
    """Same path, same row count, same settings, different titles: the records say the new titles."""
    from raylib.methods.tallrec.config import DataConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data

    config = DataConfig(movielens_dir=str(small_movielens), train_samples=0)
    before = load_tallrec_data(config)
    assert any("Toy Story (1995)" in r.input for r in before.train)
    item = small_movielens / "ml-100k.item"
    item.write_text(item.read_text(encoding="utf-8").replace("Toy Story", "Toy Story!"), encoding="utf-8")
    after = load_tallrec_data(config)
    assert any("Toy Story! (1995)" in r.input for r in after.train)
    assert not any("Toy Story (1995)" in r.input for r in after.train)
    with pytest.raises(RaylibError, match="records are no longer cached"):
        from_dict(DataConfig, {"cache_dir": "/tmp/records"})


def test_stratified_sample_keeps_both_labels_and_proportions(embedded_records):
    from raylib.data import stratified_sample

    yes = [r for r in embedded_records if r.label == 1][:5]
    records = yes + [r for r in embedded_records if r.label == 0][:195]  # 2.5% "Yes."
    assert any(len({r.label for r in sample_records(records, 8, seed)}) == 1 for seed in range(20))  # the defect
    for seed in range(20):
        sample = stratified_sample(records, 8, seed)
        assert len(sample) == 8 and {r.label for r in sample} == {0, 1}
        assert sample == stratified_sample(records, 8, seed)
        assert sample == [r for r in records if r in sample]  # a subset, in the records' order
    assert sum(r.label for r in stratified_sample(records, 80, seed=0)) == 2  # 2.5% of 80
    assert stratified_sample(records, 8, 0) != stratified_sample(records, 8, 1)
    assert stratified_sample(records, 0, 0) == records and stratified_sample(records[:5], 8, 0) == records[:5]


def _write_valid(tmp_path, records):
    train = write_records(records[:4], tmp_path / "train.json")
    return train, write_records(records, tmp_path / "valid.json")


def test_small_validation_sample_of_the_job_has_both_labels(tmp_path, embedded_records):
    from raylib.methods.tallrec.config import DataConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data

    records = [r for r in embedded_records if r.label == 1][:2] + [r for r in embedded_records if r.label == 0][:60]
    train, valid = _write_valid(tmp_path, records)
    for seed in range(10):
        data = load_tallrec_data(DataConfig(source="files", train_file=str(train), valid_file=str(valid),
                                            valid_samples=4, seed=seed))
        assert len(data.valid) == 4 and {r.label for r in data.valid} == {0, 1}


def test_one_class_validation_records_stop_the_job(tmp_path, embedded_records):
    from raylib.methods.tallrec.config import DataConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data

    train, valid = _write_valid(tmp_path, [r for r in embedded_records if r.label == 0][:20])
    with pytest.raises(RaylibError, match=r"data.valid_file .*valid.json holds only records answered 'No.'; "
                                          r".*add records answered 'Yes.'"):
        load_tallrec_data(DataConfig(source="files", train_file=str(train), valid_file=str(valid)))
