"""Several recommendation domains as TALLRec records, for RecCocktail's base spirit (all domains) and
ingredient (the target domain), with warm and cold-start test sets.

A domain is MovieLens (records built as TALLRec builds them) or any TALLRec-format file a user brings. Each is
split into train / valid / test by user (`split_by_user`); a file whose records carry no user id (TALLRec's
BookCrossing release) is split by record instead, as nothing identifies its users. Test records never train.
Each domain's training pool is cut into three disjoint parts (by user where records name users, else by record,
`three_pools`): the base spirit samples the first, the ingredient the second, the entropy merge's unlabelled
prompts come from the third; so the two adapters never learn from the same records, and the unlabelled prompts
are users neither saw. Cold-start test records are those whose target item never appears (as a target or in a
history) in anything either adapter trained on; the warm ones are the rest. Items are compared by their quoted text in the
prompt (`"Title (Year)"`, `"Title" written by Author`), which every TALLRec-format file has.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
import numpy as np

from raylib import RaylibError
from raylib.methods.cocktail.config import DomainConfig
from raylib.methods.tallrec.config import DataConfig
from raylib.data.records import (RecordRows, Records, TallrecRecord, pick, read_records, sample_records, split_by_user,
                                 stratified_sample, user_groups)
from raylib.prompts import quote_item


@dataclasses.dataclass
class DomainSplits:
    name: str
    train: Records  # the whole training pool
    valid: Records
    test: Records
    source: str
    split: str  # "user" or "record"


_TARGET = re.compile(r'target \w+ (".*")\?\s*$', re.S)


def target_text(record: TallrecRecord) -> str:
    """The target item as the prompt writes it (quoted); the record's item_id when the prompt is not TALLRec's."""
    found = _TARGET.search(record.input)
    if found:
        text = found.group(1)
        # a book is `"Title" written by Author` in histories but wrapped in one more pair of quotes as the target
        return text[1:-1] if text.startswith('""') else text
    if record.item_id:
        return record.item_id
    raise RaylibError(f"Record {record.input[:80]!r}...: no target item found (not TALLRec's question format).")


def load_domain(domain: DomainConfig, data: DataConfig, project_root: Path | None = None,
                taken_genres: set[str] = frozenset()) -> DomainSplits:
    """The domain's records, split 1 - valid - test / valid / test (data.valid_fraction, data.test_fraction).
    `taken_genres`: genres of the MovieLens domains listed before this one (their records are not this one's)."""
    if domain.source == "dataset":
        return dataset_domain(domain, data, taken_genres)
    if domain.source == "movielens":
        from raylib.methods.tallrec.pipeline import movielens_records

        records, source = movielens_records(data)
        source = str(data.movielens_dir) if data.movielens_dir else "the embedded MovieLens-100K (recbole wheel)"
        if domain.genres:
            from raylib.data.movielens import load_movielens

            items = load_movielens(data.movielens_dir).items
            records = of_genres(records, items, set(domain.genres), set(taken_genres))
            source += f", target genres {domain.genres}"
    else:
        path = Path(domain.file).expanduser()
        if not path.is_absolute() and project_root is not None and not path.exists():
            path = project_root / path
        if not path.is_file():
            raise RaylibError(f"domain {domain.name!r}: records file {domain.file} does not exist.")
        records, source = read_records(path), str(domain.file)
    if not records:
        raise RaylibError(f"domain {domain.name!r}: {source} holds no records.")
    if names_users(records):
        train, valid, test = split_by_user(records, data.valid_fraction, data.test_fraction, data.seed)
        split = "user"
    else:
        order = np.random.default_rng(data.seed).permutation(len(records))
        n_test, n_valid = round(len(records) * data.test_fraction), round(len(records) * data.valid_fraction)
        pick = lambda idx: [records[i] for i in sorted(idx)]  # noqa: E731
        test, valid, train = pick(order[:n_test]), pick(order[n_test:n_test + n_valid]), pick(order[n_test + n_valid:])
        split = "record"
    if not train or not valid or not test:
        raise RaylibError(f"domain {domain.name!r}: {len(records)} records leave an empty train, valid or test "
                          f"split (valid_fraction={data.valid_fraction}, test_fraction={data.test_fraction}).")
    return DomainSplits(domain.name, train, valid, test, source, split)


def dataset_domain(domain: DomainConfig, data: DataConfig, taken_genres: set[str] = frozenset()) -> DomainSplits:
    """A domain that is a dataset: its records in the periods of the shared time split (the genre filter as
    for MovieLens, where its items have genres)."""
    from raylib.data.dataset import load_dataset
    from raylib.methods.tallrec.pipeline import dataset_records

    splits = dataset_records(dataclasses.replace(data, dataset=domain.dataset), domain.name)
    source = str(domain.dataset)
    if domain.genres:
        dataset = load_dataset(domain.dataset)
        dataset.require("items", ("genres",), f"domain {domain.name!r} (its `genres`)")
        splits = tuple(of_genres(s, dataset.items, set(domain.genres), set(taken_genres)) for s in splits)
        source += f", target genres {domain.genres}"
    if not all(splits):
        raise RaylibError(f"domain {domain.name!r}: dataset {source} leaves an empty train, valid or test period.")
    return DomainSplits(domain.name, *splits, source, "time")


def names_users(records: Records) -> bool:
    """Whether every record names its user (records built from interactions always do)."""
    return isinstance(records, RecordRows) or all(r.user_id for r in records)


def of_genres(records: Records, items, genres: set[str], taken: set[str]) -> Records:
    """The records whose target item (in `items`, a table with genres) has one of `genres` and none of `taken`
    (an earlier domain's)."""
    known = {g for row in items.column("genres").to_pylist() for g in row}
    unknown = sorted(genres - known)
    if unknown:
        raise RaylibError(f"genres {unknown} are not genres of the items; they have {sorted(known)}.")
    item_genres = dict(zip(items.column("item_id").to_pylist(), (set(g) for g in items.column("genres").to_pylist())))
    wanted = lambda item: bool(item_genres.get(item, set()) & genres) and not item_genres.get(item, set()) & taken  # noqa: E731
    if isinstance(records, RecordRows):  # decided once per item, not per record
        item_ids = records.timelines.item_ids
        keep = np.array([wanted(item) for item in item_ids], dtype=bool)
        return records[keep[records.items]]
    return [r for r in records if wanted(r.item_id)]


@dataclasses.dataclass
class Pools:
    """A domain's training pool in three disjoint parts (`three_pools`)."""
    base: Records  # the base spirit samples these
    ingredient: Records  # the ingredient samples these (target domain)
    unlabelled: Records  # the entropy merge's unlabelled prompts (target domain)


def three_pools(records: Records, seed: int) -> Pools:
    """Thirds of the training pool, by user when every record names one (no user in two parts), else by record."""
    if names_users(records):
        users = len(np.unique(records.users)) if isinstance(records, RecordRows) else \
            len({r.user_id for r in records})
        # the k-th user of the shuffled order goes to part k * 3 // users
        part = user_groups(records, list(np.bincount(np.arange(users) * 3 // max(users, 1), minlength=3)), seed)
    else:
        order = np.random.default_rng(seed).permutation(len(records))
        part = np.empty(len(records), dtype=np.int64)
        part[order] = np.arange(len(records)) * 3 // len(records)
    return Pools(*(pick(records, np.flatnonzero(part == k)) for k in range(3)))


def mixture(domains: list[DomainSplits], per_domain: int, seed: int) -> list[TallrecRecord]:
    """The base spirit's training set: `per_domain` records of each domain's base pool (`three_pools`),
    interleaved."""
    parts = [sample_records(three_pools(d.train, seed).base, per_domain, seed + k) for k, d in enumerate(domains)]
    out = [r for group in parts for r in group]
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order]


def warm_cold(test: Records, train: list[TallrecRecord], n: int, seed: int) -> tuple[Records, Records]:
    """(warm, cold) test records, each a label-stratified sample of at most `n` (0 = all): cold ones' target
    items appear nowhere in `train` (neither as targets nor in histories)."""
    seen = " ".join(r.input for r in train)
    if isinstance(test, RecordRows):  # decided once per item, as the item's quoted title reads in the prompts
        titles = test.titles
        warm_item = np.array([quote_item(str(title)) in seen for title in titles], dtype=bool)
        is_warm = warm_item[test.items]
        return stratified_sample(test[is_warm], n, seed), stratified_sample(test[~is_warm], n, seed)
    warm, cold = [], []
    for record in test:
        (warm if target_text(record) in seen else cold).append(record)
    return stratified_sample(warm, n, seed), stratified_sample(cold, n, seed)
