"""Release converters on tiny fixtures shaped like the real releases (file names, columns, nesting)."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from leafrl.audio.io import write_audio
from leafrl.data.converters.covost2 import convert_covost2
from leafrl.data.converters.librisqa import convert_librisqa
from leafrl.data.converters.longaudio import convert_longaudio
from leafrl.data.schema import DataError
from leafrl.data.sources import load_split
from leafrl.data.templates import AST_EVAL_PROMPT, AST_TEMPLATES, SQA_TEMPLATES

TONE = (0.1 * np.sin(np.linspace(0, 60, 800))).astype(np.float32)


def _manifest(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


# ---- CoVoST 2 -------------------------------------------------------------------------------
# Common Voice 4 en/: validated.tsv (client_id path sentence up_votes down_votes age gender accent)
# and clips/*.mp3; covost_v2.en_de.tsv (path translation split) from covost_v2.en_de.tsv.tar.gz.
CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent"
COVOST = [  # (clip number, English sentence, German translation, CoVoST split)
    (1, "The cat sleeps.", "Die Katze schläft.", "train"),
    (2, 'He said "hello".', 'Er sagte "hallo".', "train_covost"),
    (3, "Where is the station?", "Wo ist der Bahnhof?", "dev"),
    (4, "It is raining.", "Es regnet.", "test"),
    (5, "Good morning.", "Guten Morgen.", "test"),
]


@pytest.fixture
def covost_src(tmp_path):
    en = tmp_path / "cv-corpus-4-2019-12-10" / "en"
    (en / "clips").mkdir(parents=True)
    validated = [CV_HEADER]
    covost = ["path\ttranslation\tsplit"]
    for n, sentence, translation, split in COVOST:
        clip = f"common_voice_en_{n}.mp3"
        sf.write(en / "clips" / clip, TONE, 16000, format="MP3")
        validated.append(f"client{n % 2}\t{clip}\t{sentence}\t2\t0\tthirties\tfemale\tus")
        covost.append(f"{clip}\t{translation}\t{split}")
    covost.append("common_voice_en_99.mp3\tNicht validiert.\ttrain")  # absent from validated.tsv
    (en / "validated.tsv").write_text("\n".join(validated) + "\n", encoding="utf-8")
    (en / "covost_v2.en_de.tsv").write_text("\n".join(covost) + "\n", encoding="utf-8")
    return en


def test_covost2_converts_the_release(covost_src, tmp_path):
    out = tmp_path / "out"
    summary = convert_covost2(covost_src, out)
    assert summary["rows"] == {"train": 2, "valid": 1, "test": 2}
    assert summary["skipped"] == {"not in validated.tsv": 1}
    train = _manifest(out, "train")
    assert [r["id"] for r in train] == ["common_voice_en_1", "common_voice_en_2"]
    assert train[1]["reference"] == 'Er sagte "hallo".'  # no quoting in the release TSVs
    assert train[1]["meta"]["source_text"] == 'He said "hello".' and train[1]["task"] == "ast"
    fmt = {"source_lang": "English", "target_lang": "German"}
    assert {r["prompt"] for r in train} <= {t.format(**fmt) for t in AST_TEMPLATES}
    eval_rows = _manifest(out, "valid") + _manifest(out, "test")
    assert {r["prompt"] for r in eval_rows} == {AST_EVAL_PROMPT.format(**fmt)}
    assert all(Path(r["audio"]).is_absolute() and Path(r["audio"]).is_file() for r in train + eval_rows)
    assert [e.reference for e in load_split(out, "test")] == ["Es regnet.", "Guten Morgen."]
    assert json.loads((out / "summary.json").read_text())["rows"] == summary["rows"]


def test_covost2_limit_and_missing_clips(covost_src, tmp_path):
    one_each = {"train": 1, "valid": 1, "test": 1}
    assert convert_covost2(covost_src, tmp_path / "o1", limit=1)["rows"] == one_each
    (covost_src / "clips" / "common_voice_en_4.mp3").unlink()
    with pytest.raises(DataError, match="common_voice_en_4.*not found"):
        convert_covost2(covost_src, tmp_path / "o2")
    summary = convert_covost2(covost_src, tmp_path / "o3", on_missing_audio="skip")
    assert summary["rows"]["test"] == 1 and summary["skipped"]["missing audio"] == 1
    assert summary["skipped_examples"]["missing audio"] == ["common_voice_en_4"]


@pytest.mark.parametrize("missing,needle", [("clips", "clips"), ("validated.tsv", "validated.tsv"),
                                            ("covost_v2.en_de.tsv", "covost_v2.en_de.tsv")])
def test_covost2_missing_inputs_say_what_was_expected_where(covost_src, tmp_path, missing, needle):
    target = covost_src / missing
    if target.is_dir():
        for f in target.iterdir():
            f.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(DataError) as err:
        convert_covost2(covost_src, tmp_path / "out")
    assert needle in str(err.value) and str(covost_src) in str(err.value)


def test_failed_conversion_leaves_old_manifests(covost_src, tmp_path):
    out = tmp_path / "out"
    convert_covost2(covost_src, out)
    before = (out / "train.jsonl").read_text()
    (covost_src / "clips" / "common_voice_en_1.mp3").unlink()
    with pytest.raises(DataError):
        convert_covost2(covost_src, out)
    assert (out / "train.jsonl").read_text() == before
    names = sorted(p.name for p in out.iterdir())  # no temporary files left behind
    assert names == ["summary.json", "test.jsonl", "train.jsonl", "valid.jsonl"]


# ---- LibriSQA Part I --------------------------------------------------------------------------
# HF ZihanZhao/LibriSQA: LibriSQA-PartI/LibriSQA-PartI-{train,test}.json, JSON arrays of
# {speech_path, question, answer, text, duration}; audio: openslr LibriSpeech tarballs, extracted
# to LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac.
UTTS = {"train": [f"{spk}-{chap}-{u:04d}" for spk, chap in [(100, 200), (101, 201), (102, 202), (103, 203)]
                  for u in range(2)],
        "test": ["1089-134686-0000", "1089-134686-0001"]}
SUBSET = {"train": "train-clean-360", "test": "test-clean"}


def _speech_path(style: str, split: str, utt: str) -> str:
    spk, chap, _ = utt.split("-")
    return {"prefixed-wav": f"LibriSpeech/{SUBSET[split]}/{spk}/{chap}/{utt}.wav",
            "subset-flac": f"{SUBSET[split]}/{spk}/{chap}/{utt}.flac",
            "bare-wav": f"{utt}.wav"}[style]


def _librisqa(root: Path, style: str) -> tuple[Path, Path]:
    src = root / "LibriSQA"
    (src / "LibriSQA-PartI").mkdir(parents=True)
    for split, utts in UTTS.items():
        records = []
        for i, utt in enumerate(utts):
            spk, chap, _ = utt.split("-")
            write_audio(root / "LibriSpeech" / SUBSET[split] / spk / chap / f"{utt}.flac", TONE, 16000)
            records.append({"speech_path": _speech_path(style, split, utt),
                            "question": f"What happens in passage {utt}?",
                            "answer": f"Something happens ({i}).", "text": "SOME WORDS", "duration": 0.05})
        path = src / "LibriSQA-PartI" / f"LibriSQA-PartI-{split}.json"
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return src, root


@pytest.mark.parametrize("style", ["prefixed-wav", "subset-flac", "bare-wav"])
@pytest.mark.parametrize("ls_level", ["parent", "LibriSpeech"])
def test_librisqa_converts_the_release(tmp_path, style, ls_level):
    src, root = _librisqa(tmp_path, style)
    librispeech = root if ls_level == "parent" else root / "LibriSpeech"
    out = tmp_path / "out"
    summary = convert_librisqa(src, out, librispeech=librispeech, valid_fraction=0.5)
    rows = {s: _manifest(out, s) for s in ("train", "valid", "test")}
    assert summary["rows"] == {s: len(r) for s, r in rows.items()}
    assert summary["rows"]["train"] + summary["rows"]["valid"] == 8 and summary["rows"]["test"] == 2
    chapters = {s: {r["id"].rsplit("-", 1)[0] for r in rows[s]} for s in ("train", "valid")}
    assert chapters["train"] and chapters["valid"] and not chapters["train"] & chapters["valid"]
    first = rows["test"][0]
    assert first["id"] == "1089-134686-0000" and first["task"] == "sqa"
    assert first["audio"].endswith("test-clean/1089/134686/1089-134686-0000.flac")
    assert first["prompt"] in {t.format(question=first["meta"]["question"]) for t in SQA_TEMPLATES}
    assert first["reference"] == "Something happens (0)."
    assert len(list(load_split(out, "valid"))) == summary["rows"]["valid"]


def test_librisqa_part_dir_limit_and_missing(tmp_path):
    src, root = _librisqa(tmp_path, "prefixed-wav")
    summary = convert_librisqa(src / "LibriSQA-PartI", tmp_path / "o1", librispeech=root, limit=1,
                               valid_fraction=0.0)
    assert summary["rows"] == {"train": 1, "valid": 0, "test": 1}
    (root / "LibriSpeech" / "test-clean" / "1089" / "134686" / "1089-134686-0001.flac").unlink()
    with pytest.raises(DataError, match="1089-134686-0001.*tried"):
        convert_librisqa(src, tmp_path / "o2", librispeech=root)
    summary = convert_librisqa(src, tmp_path / "o3", librispeech=root, on_missing_audio="skip")
    assert summary["skipped"] == {"missing audio": 1}
    (src / "LibriSQA-PartI" / "LibriSQA-PartI-test.json").unlink()
    with pytest.raises(DataError, match="LibriSQA-PartI-test.json"):
        convert_librisqa(src, tmp_path / "o4", librispeech=root)


def test_librisqa_bad_records(tmp_path):
    src, root = _librisqa(tmp_path, "subset-flac")
    path = src / "LibriSQA-PartI" / "LibriSQA-PartI-test.json"
    records = json.loads(path.read_text())
    records[1]["answer"] = None
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match="record 1.*'answer'"):
        convert_librisqa(src, tmp_path / "out", librispeech=root)
    records[1]["answer"], records[1]["speech_path"] = "ok", "test-clean/notes.wav"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match="record 1.*utterance id"):
        convert_librisqa(src, tmp_path / "out", librispeech=root)


# ---- long-audio QA ----------------------------------------------------------------------------

def _longaudio(root: Path, kind: str) -> Path:
    for name, seconds in [("short.wav", 2.0), ("edge.wav", 40.0), ("long.wav", 45.0)]:
        write_audio(root / "clips" / name, np.zeros(int(seconds * 1000), np.float32), 1000)
    rows = [("clips/short.wav", "Who speaks first?", "The waiter.", "train"),
            ("clips/short.wav", "What is ordered?", "A coffee.", "dev"),
            ("clips/edge.wav", "Where are they?", "In a cafe.", "test"),
            ("clips/long.wav", "What time is it?", "Noon.", "train")]
    if kind == "csv":
        text = "audio,question,answer,split\n" + "\n".join(",".join(f'"{v}"' for v in r) for r in rows)
    else:
        objs = [dict(zip(("audio", "question", "answer", "split"), r)) for r in rows]
        text = json.dumps(objs) if kind == "json" else "\n".join(json.dumps(o) for o in objs)
    path = root / f"dailytalk_qa.{kind}"
    path.write_text(text + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["csv", "json", "jsonl"])
def test_longaudio_keeps_clips_up_to_40s_and_reports_drops(tmp_path, kind):
    table = _longaudio(tmp_path, kind)
    summary = convert_longaudio(table, tmp_path / "out", dataset="dailytalk")
    assert summary["rows"] == {"train": 1, "valid": 1, "test": 1}
    assert summary["skipped"] == {"longer than 40 s": 1}
    assert summary["skipped_examples"]["longer than 40 s"] == ["dailytalk-3"]
    (test_row,) = _manifest(tmp_path / "out", "test")
    assert test_row["meta"]["duration"] == pytest.approx(40.0) and test_row["reference"] == "In a cafe."
    assert Path(test_row["audio"]) == (tmp_path / "clips" / "edge.wav").absolute()
    wider = convert_longaudio(table, tmp_path / "out2", max_seconds=50)
    assert wider["rows"]["train"] == 2 and wider["skipped"] == {}


def test_longaudio_bad_tables(tmp_path):
    table = _longaudio(tmp_path, "jsonl")
    text = table.read_text().replace('"split": "test"', '"split": "holdout"')
    table.write_text(text)
    with pytest.raises(DataError, match="dailytalk_qa.jsonl:3.*unknown split 'holdout'"):
        convert_longaudio(table, tmp_path / "out")
    with pytest.raises(DataError, match="dailytalk_qa.jsonl:1: missing column 'q'"):
        convert_longaudio(table, tmp_path / "out", question_column="q")
    with pytest.raises(DataError, match="long-audio QA table not found"):
        convert_longaudio(tmp_path / "nope.csv", tmp_path / "out")
    (tmp_path / "clips" / "short.wav").unlink()
    table.write_text(text.replace("holdout", "test"))
    with pytest.raises(DataError, match="longaudio-0.*short.wav"):
        convert_longaudio(table, tmp_path / "out")
