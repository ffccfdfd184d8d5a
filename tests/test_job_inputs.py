"""The TALLRec job stops with one clear line on bad input, before any training starts, and leaves no adapter."""

import pytest

from jobs.tallrec import main


@pytest.fixture
def files(tmp_path, movie_records):
    from raylib.data import write_records

    return {split: write_records(movie_records[split][:8], tmp_path / f"{split}.json")
            for split in ("train", "valid", "test")}


def run_job(tmp_path, files, *overrides):
    return main(["data.source=files", f"data.train_file={files['train']}", f"data.valid_file={files['valid']}",
                 f"data.test_file={files['test']}", f"output_dir={tmp_path / 'out'}", *overrides])


@pytest.mark.parametrize("content, message", [
    ('[{"instruction": "i", "input": "x", "output": "Yes."},', "train.json:1: malformed JSON"),
    ('[{"instruction": "i", "output": "Yes."}]', "record 0: the record has no 'input' field"),
    ('[{"instruction": "i", "input": "x", "output": "yes"}]', "output is 'yes'"),
    ("", "is empty"),
])
def test_bad_train_file(ray_session, tmp_path, files, capsys, content, message):
    files["train"].write_text(content)
    assert run_job(tmp_path, files) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "adapter").exists()


def test_unknown_model_and_missing_folder(ray_session, tmp_path, files, capsys):
    assert run_job(tmp_path, files, "model.name=llama-7b") == 2
    assert "Unknown model 'llama-7b'" in capsys.readouterr().err
    assert main(["data.movielens_dir=/no/such/ml-100k", f"output_dir={tmp_path / 'out'}"]) == 2
    assert "MovieLens folder /no/such/ml-100k does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out" / "adapter").exists()


def test_prompt_too_long_for_max_length(ray_session, tmp_path, files, capsys):
    assert run_job(tmp_path, files, "data.max_length=40") == 2
    assert "train record 0: even without history" in capsys.readouterr().err
