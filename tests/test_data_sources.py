"""Manifest and HF dataset readers: Examples out, DataError naming the row id/line and file."""

import json
from pathlib import Path

import numpy as np
import pytest

from leafrl.audio.io import load_audio, write_audio
from leafrl.data.schema import DataError, Example
from leafrl.data.sources import count_rows, load_split, read_hf_dataset, read_manifest

RATE = 16000


def _wav(path: Path, seconds: float = 0.1, freq: float = 440.0) -> Path:
    t = np.arange(int(seconds * RATE)) / RATE
    write_audio(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), RATE)
    return path


def _row(i: int, audio: str = "audio/a.wav", **overrides) -> dict:
    row = {"id": f"ex{i}", "audio": audio, "prompt": f"question {i}?", "reference": f"answer {i}",
           "task": "sqa"}
    return {**row, **overrides}


def _write(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def data_dir(tmp_path):
    _wav(tmp_path / "audio" / "a.wav")
    _wav(tmp_path / "audio" / "b.wav", freq=220.0)
    extra = _row(1, "audio/b.wav", meta={"speaker": "s1"}, duration=0.1)
    _write(tmp_path / "train.jsonl", [_row(0), "", extra])
    _write(tmp_path / "valid.jsonl", [_row(2)])
    return tmp_path


def test_read_manifest_resolves_audio_and_keeps_meta(data_dir):
    examples = list(read_manifest(data_dir / "train.jsonl"))
    assert [e.id for e in examples] == ["ex0", "ex1"]  # the blank line is skipped
    assert all(Path(e.audio).is_absolute() and Path(e.audio).is_file() for e in examples)
    assert examples[1].meta == {"speaker": "s1", "duration": 0.1}
    assert examples[0].prompt == "question 0?" and examples[0].reference == "answer 0"
    audio = load_audio(examples[0].audio, sampling_rate=RATE, example_id=examples[0].id)
    assert audio.shape == (int(0.1 * RATE),)


def test_absolute_audio_paths_are_allowed(data_dir, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    _write(other / "m.jsonl", [_row(0, str(data_dir / "audio" / "a.wav"))])
    (example,) = read_manifest(other / "m.jsonl")
    assert example.audio == str(data_dir / "audio" / "a.wav")


BAD_ROWS = [  # (case, line 2 of the manifest, text the message must contain)
    ("invalid json", '{"id": "ex9", "audio": ', "m.jsonl:2"),
    ("not an object", "[1, 2]", "m.jsonl:2"),
    ("missing id", {k: v for k, v in _row(9).items() if k != "id"}, "m.jsonl:2"),
    ("empty id", _row(9, id=" "), "m.jsonl:2"),
    ("non-string id", _row(9, id=9), "m.jsonl:2"),
    ("missing prompt", {k: v for k, v in _row(9).items() if k != "prompt"}, "'ex9'"),
    ("missing task", {k: v for k, v in _row(9).items() if k != "task"}, "'ex9'"),
    ("empty reference", _row(9, reference="   "), "'ex9'"),
    ("non-string reference", _row(9, reference=3.5), "'ex9'"),
    ("non-string audio", _row(9, audio=["a.wav"]), "'ex9'"),
    ("missing audio file", _row(9, audio="audio/nope.wav"), "nope.wav"),
    ("meta not an object", _row(9, meta=[1]), "'ex9'"),
    ("duplicate id", _row(0), "duplicate id 'ex0'"),
]


@pytest.mark.parametrize("case,line,needle", BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_bad_manifest_rows(data_dir, case, line, needle):
    path = _write(data_dir / "m.jsonl", [_row(0), line])
    with pytest.raises(DataError) as err:
        list(read_manifest(path))
    message = str(err.value)
    assert needle in message and "m.jsonl" in message, message
    if case not in ("invalid json", "not an object") and "id" not in case:
        assert "ex9" in message


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(DataError, match="nothere.jsonl"):
        list(read_manifest(tmp_path / "nothere.jsonl"))


def test_example_checks_its_own_fields():
    with pytest.raises(DataError, match="'x'.*reference"):
        Example(id="x", audio="/a.wav", prompt="p", reference="", task="sqa")
    with pytest.raises(DataError, match="'x'.*audio"):
        Example(id="x", audio=3, prompt="p", reference="r", task="sqa")
    ok = Example(id="x", audio=(np.zeros(10, np.float32), RATE), prompt="p", reference="r", task="sqa")
    assert ok.meta == {}


def test_load_split_and_count_rows(data_dir):
    assert [e.id for e in load_split(data_dir, "train")] == ["ex0", "ex1"]
    assert [e.id for e in load_split(data_dir, "valid")] == ["ex2"]
    assert count_rows(data_dir, "train") == 2 and count_rows(data_dir, "valid") == 1


def test_missing_split_names_directory_and_what_exists(data_dir):
    with pytest.raises(DataError) as err:
        list(load_split(data_dir, "test"))
    assert str(data_dir) in str(err.value) and "['train', 'valid']" in str(err.value)
    with pytest.raises(DataError, match="not found"):
        list(load_split(data_dir / "nope", "train"))


def test_validation_split_may_be_named_dev(data_dir):
    (data_dir / "valid.jsonl").rename(data_dir / "dev.jsonl")
    assert [e.id for e in load_split(data_dir, "valid")] == ["ex2"]
    with pytest.raises(DataError, match="no split 'test'"):
        list(load_split(data_dir, "test"))  # never another split in place of a missing one


# ---- Hugging Face datasets -------------------------------------------------------------------

def _hf_dict(data_dir: Path, as_bytes: bool):
    from datasets import Audio, Dataset, DatasetDict

    def split(names):
        audio = [str(data_dir / "audio" / n) for n in names]
        if as_bytes:
            audio = [{"bytes": Path(a).read_bytes(), "path": None} for a in audio]
        columns = {"audio": audio, "prompt": [f"q {n}?" for n in names],
                   "reference": [f"r {n}" for n in names], "task": ["sqa"] * len(names),
                   "uid": list(range(len(names)))}
        return Dataset.from_dict(columns).cast_column("audio", Audio(decode=False))

    return DatasetDict({"train": split(["a.wav", "b.wav"]), "validation": split(["b.wav"])})


@pytest.mark.parametrize("as_bytes", [False, True], ids=["paths", "bytes"])
def test_saved_dataset_dict(data_dir, tmp_path_factory, as_bytes):
    saved = tmp_path_factory.mktemp("hf") / "ds"
    _hf_dict(data_dir, as_bytes).save_to_disk(str(saved))
    train = list(load_split(saved, "train"))
    assert [e.id for e in train] == ["train-0", "train-1"] and train[0].task == "sqa"
    assert train[1].meta == {"uid": 1}  # other scalar columns
    audio = load_audio(train[1].audio, sampling_rate=RATE, example_id=train[1].id)
    assert np.allclose(audio, load_audio(data_dir / "audio" / "b.wav", sampling_rate=RATE))
    assert [e.reference for e in load_split(saved, "valid")] == ["r b.wav"]  # "validation" on disk
    assert count_rows(saved, "train") == 2
    with pytest.raises(DataError) as err:
        list(load_split(saved, "test"))
    assert "['train', 'validation']" in str(err.value) and str(saved) in str(err.value)


def test_read_hf_dataset_options_and_errors(data_dir, tmp_path_factory):
    saved = tmp_path_factory.mktemp("hf") / "ds"
    _hf_dict(data_dir, False).save_to_disk(str(saved))
    rows = list(read_hf_dataset(saved, "train", id_column="uid", task="qa"))
    assert [e.id for e in rows] == ["0", "1"] and {e.task for e in rows} == {"qa"}
    assert rows[0].meta == {}
    with pytest.raises(DataError, match="missing column.*'answer'"):
        list(read_hf_dataset(saved, "train", reference_column="answer"))
    with pytest.raises(DataError, match="a DatasetDict"):
        list(read_hf_dataset(saved, None))


def test_hf_empty_reference_names_the_row(data_dir, tmp_path):
    from datasets import Dataset

    columns = {"audio": [str(data_dir / "audio" / "a.wav")] * 2, "prompt": ["p", "p"],
               "reference": ["r", " "], "key": ["k0", "k1"], "task": ["sqa", "sqa"]}
    Dataset.from_dict(columns).save_to_disk(str(tmp_path / "single"))
    with pytest.raises(DataError, match="'k1'.*reference"):
        list(read_hf_dataset(tmp_path / "single", None, id_column="key"))
    with pytest.raises(DataError, match="single Dataset"):
        list(read_hf_dataset(tmp_path / "single", "train"))


def test_streaming_from_a_folder_of_data_files(data_dir, tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    row = {"audio": "../audio/a.wav", "prompt": "p", "reference": "r", "task": "sqa"}
    _write(folder / "train.jsonl", [row])
    (example,) = read_hf_dataset(folder, "train", streaming=True)
    assert Path(example.audio).resolve() == (data_dir / "audio" / "a.wav").resolve()


def test_text_only_rows_have_no_audio(tmp_path):
    """LEAF also trains text LMs: a row may carry "audio": null or no audio key at all."""
    rows = [{"id": "t0", "audio": None, "prompt": "2 + 2 =", "reference": "4", "task": "math"},
            {"id": "t1", "prompt": "3 + 3 =", "reference": "6", "task": "math"}]
    path = _write(tmp_path / "m.jsonl", rows)
    examples = list(read_manifest(path))
    assert [e.audio for e in examples] == [None, None]
    assert examples[0].to_row()["audio"] is None
    with pytest.raises(DataError, match="'t2'"):
        list(read_manifest(_write(tmp_path / "n.jsonl", [{**rows[0], "id": "t2", "audio": ""}])))
