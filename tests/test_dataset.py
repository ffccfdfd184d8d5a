"""One dataset for every method (`data.dataset`): RecBole atomic files or plain tables, the same views from
either, the one time split, and one line naming what a dataset lacks."""

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from raylib import RaylibError
from raylib.config import from_dict
from raylib.data.dataset import load_dataset, time_cutoffs


def write_as_csv(dataset, folder):
    """The dataset's tables as CSV files (`genres` |-separated), as a user would export them."""
    folder.mkdir(parents=True, exist_ok=True)
    items = dataset.items.set_column(dataset.items.column_names.index("genres"), "genres",
                                     pa.array(["|".join(g) for g in dataset.items.column("genres").to_pylist()]))
    for name, table in (("interactions", dataset.interactions), ("items", items), ("users", dataset.users)):
        pacsv.write_csv(table, folder / f"{name}.csv")
    return folder


def test_the_embedded_movielens_reads_as_recbole_atomic_files_and_as_the_same_tables_in_csv(tmp_path):
    atomic = load_dataset("ml-100k")
    assert atomic.interactions.num_rows == 100_000 and atomic.items.num_rows == 1682 and atomic.users.num_rows == 943
    assert atomic.interactions.column_names == ["user_id", "item_id", "timestamp", "rating"]
    first = atomic.items.slice(0, 1).to_pylist()[0]
    assert first["title"] == "Toy Story (1995)" and first["genres"] == ["Animation", "Children's", "Comedy"]
    csv = load_dataset(write_as_csv(atomic, tmp_path / "csv"))
    for table in ("interactions", "items", "users"):
        assert getattr(csv, table).equals(getattr(atomic, table)), table


@pytest.fixture(scope="module")
def embedded_and_csv(tmp_path_factory):
    """The embedded ML-100K's first 120 users (~13k ratings), as RecBole atomic files copied line by line from
    the wheel, and the same tables as CSV: every method's view is built from both in seconds."""
    from raylib.data.dataset import dataset_files

    _, files = dataset_files("ml-100k")
    folder = tmp_path_factory.mktemp("ml-100k-120-users")
    for path in files:
        header, *rows = path.read_text(encoding="utf-8").splitlines()
        if path.suffix in (".inter", ".user"):
            rows = [r for r in rows if int(r.split("\t")[0]) <= 120]
        (folder / path.name).write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    atomic = load_dataset(folder)
    return atomic, write_as_csv(atomic, tmp_path_factory.mktemp("ml-100k-120-users-csv"))


def test_recbole_files_and_the_same_tables_in_csv_give_identical_views_for_every_method(embedded_and_csv):
    from raylib.data.ctr import load_ctr_data
    from raylib.methods.corella.config import CtrDataConfig
    from raylib.methods.nextitem.config import SequenceDataConfig
    from raylib.methods.nextitem.pipeline import load_sequence_data
    from raylib.methods.tallrec.config import DataConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data

    atomic, csv_folder = embedded_and_csv
    csv = load_dataset(csv_folder)
    for table in ("interactions", "items", "users"):
        assert getattr(csv, table).equals(getattr(atomic, table)), table
    views = {}
    for spec in (atomic.source, str(csv_folder)):
        windows = load_sequence_data(from_dict(SequenceDataConfig, {"dataset": spec}))
        ctr = load_ctr_data(from_dict(CtrDataConfig, {"dataset": spec}))
        records = load_tallrec_data(from_dict(DataConfig, {"dataset": spec, "train_samples": 0}))
        views[spec] = (list(windows.train), list(windows.test), windows.catalogue.titles, ctr.train.table(),
                       ctr.test.table(), records.train, list(records.test))
    for a, b in zip(*views.values()):
        assert a == b if isinstance(a, list) else a.equals(b)


def test_every_method_cuts_time_at_the_same_points(embedded_and_csv):
    """Next-item windows, CTR samples and TALLRec records of the test period all start at one timestamp."""
    from raylib.data.ctr import load_ctr_data
    from raylib.methods.corella.config import CtrDataConfig
    from raylib.methods.nextitem.config import SequenceDataConfig
    from raylib.methods.nextitem.pipeline import load_sequence_data

    from raylib.methods.tallrec.config import DataConfig
    from raylib.methods.tallrec.pipeline import dataset_records

    atomic, _ = embedded_and_csv
    split = [0.7, 0.2, 0.1]  # not the default: every method must read the one `data.time_split`
    valid_at, test_at = time_cutoffs(atomic.interactions.column("timestamp").to_numpy(), split)
    data = {"dataset": atomic.source, "time_split": split}
    windows = load_sequence_data(from_dict(SequenceDataConfig, {**data, "test_samples": 0}))
    ctr = load_ctr_data(from_dict(CtrDataConfig, data))
    records = dataset_records(from_dict(DataConfig, data))
    assert windows.cutoffs == (valid_at, test_at)
    assert windows.test.timestamps.min() == ctr.test.timestamps.min() >= test_at
    assert ctr.train.timestamps.max() < valid_at
    assert records[0].timestamps.max() < valid_at <= records[1].timestamps.min() and records[2].timestamps.min() >= test_at


def test_a_dataset_without_titles_names_the_column_and_still_gives_the_crm_its_samples(tmp_path):
    """Text-based methods stop before any work with one line naming `title`; CoReLLa's CRM needs no titles."""
    from raylib.data.ctr import load_ctr_data
    from raylib.methods.corella.config import CtrDataConfig
    from raylib.methods.nextitem.config import SequenceDataConfig
    from raylib.methods.nextitem.pipeline import load_sequence_data
    from raylib.methods.tallrec.config import DataConfig
    from raylib.methods.tallrec.pipeline import load_tallrec_data

    users, items = [f"u{i}" for i in range(30) for _ in range(12)], [f"i{(i * 7) % 40}" for i in range(360)]
    (tmp_path / "shop.inter").write_text("user_id:token\titem_id:token\tlabel:float\ttimestamp:float\n" + "".join(
        f"{u}\t{i}\t{n % 2}\t{1000 + n}\n" for n, (u, i) in enumerate(zip(users, items))))
    (tmp_path / "shop.item").write_text("item_id:token\tprice:float\n" + "".join(f"i{k}\t{k}.5\n" for k in range(40)))
    for load, cfg in ((load_sequence_data, SequenceDataConfig), (load_tallrec_data, DataConfig)):
        with pytest.raises(RaylibError, match=r"needs column\(s\) \['title'\] in its items") as err:
            load(from_dict(cfg, {"dataset": str(tmp_path)}))
        assert "\n" not in str(err.value)
    ctr = load_ctr_data(from_dict(CtrDataConfig, {"dataset": str(tmp_path)}))
    assert ctr.train.num_rows + ctr.valid.num_rows + ctr.test.num_rows == 360
    assert set(ctr.train.labels) == {0, 1} and not any(ctr.train.texts()["title"])


def test_a_dataset_names_what_is_wrong_in_one_line(tmp_path):
    with pytest.raises(RaylibError, match="no such folder"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(RaylibError, match="expected RecBole atomic files"):
        load_dataset(tmp_path)
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(RaylibError, match=r"interactions need column\(s\) \['timestamp'\]"):
        load_dataset(tmp_path)


def test_a_recCocktail_domain_is_a_dataset(embedded_and_csv):
    """A domain with `source: dataset` takes its records from the dataset's periods, its genres filter included."""
    from raylib.methods.cocktail.config import DomainConfig
    from raylib.methods.cocktail.domains import load_domain
    from raylib.methods.tallrec.config import DataConfig

    atomic, csv_folder = embedded_and_csv
    domain = from_dict(DomainConfig, {"name": "movie", "source": "dataset", "dataset": str(csv_folder),
                                      "genres": ["Drama"]})
    splits = load_domain(domain, DataConfig())
    assert splits.split == "time" and splits.train and splits.valid and splits.test
    dramas = {i for i, g in zip(atomic.items.column("item_id").to_pylist(), atomic.items.column("genres").to_pylist())
              if "Drama" in g}
    assert {r.item_id for r in [*splits.train, *splits.test]} <= dramas
    with pytest.raises(RaylibError, match="`dataset` goes with source=dataset"):
        from_dict(DomainConfig, {"name": "movie", "source": "dataset"})


def test_the_embedded_movielens_named_as_a_dataset_is_the_default_source_for_next_item_caches():
    """`data.dataset: ml-100k` and the default source give the very same windows, so they share one cache key
    (the leaderboard finds the BIGRec benchmark's beams); CTR samples split differently and keep their own."""
    from raylib.config import key_dict
    from raylib.methods.corella.config import CtrDataConfig
    from raylib.methods.nextitem.config import SequenceDataConfig
    from raylib.methods.nextitem.pipeline import load_sequence_data

    named, default = (from_dict(SequenceDataConfig, v) for v in ({"dataset": "ml-100k"}, {}))
    assert key_dict(named) == key_dict(default)
    a, b = load_sequence_data(named), load_sequence_data(default)
    assert (a.train, a.valid, a.test, a.catalogue.titles) == (b.train, b.valid, b.test, b.catalogue.titles)
    assert key_dict(from_dict(CtrDataConfig, {"dataset": "ml-100k"})) != key_dict(from_dict(CtrDataConfig, {}))
