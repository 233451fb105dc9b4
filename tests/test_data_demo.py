"""The built-in spoken task: German grammar by hand, QA answers by hand, held-out splits, and a
tiny real build (espeak-ng) checked for files, schema, determinism, audio and interruptions."""

import json
import re
import shutil

import pytest
import soundfile as sf

from leafrl.data import demo
from leafrl.data.grammar import (
    COLORS,
    FRAMES,
    MAX_DE_TOKENS,
    NOUNS,
    Clause,
    NounPhrase,
    Scene,
    Sentence,
    ask,
    describe,
    german_np,
    render,
    sample_ast,
)

requires_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                     reason="espeak-ng not installed (apt-get install espeak-ng)")
TINY = {"n_train": 20, "n_valid": 5, "n_test": 5}
MANIFESTS = ("train.jsonl", "valid.jsonl", "test.jsonl")

# ---- German by hand: every determiner kind x gender/plural x case ------------------------------
# Hund m, Katze f, Auto n (plural Autos: no dative -n), Apfel m (Äpfel -> dative Äpfeln).
NP_VECTORS = [
    # ein-words, singular: mixed adjective endings
    ("a", "dog", ("red",), "nom", "ein roter Hund"), ("a", "cat", ("red",), "nom", "eine rote Katze"),
    ("a", "car", ("red",), "nom", "ein rotes Auto"),
    ("a", "dog", ("red",), "acc", "einen roten Hund"), ("a", "cat", ("red",), "acc", "eine rote Katze"),
    ("a", "car", ("red",), "acc", "ein rotes Auto"),
    ("a", "dog", ("red",), "dat", "einem roten Hund"), ("a", "cat", ("red",), "dat", "einer roten Katze"),
    ("a", "car", ("red",), "dat", "einem roten Auto"),
    ("one", "dog", ("big", "red"), "acc", "einen großen roten Hund"),
    ("one", "egg", ("small", "white"), "acc", "ein kleines weißes Ei"),
    ("a", "cup", ("big", "green"), "dat", "einer großen grünen Tasse"),
    ("a", "apple", (), "acc", "einen Apfel"),
    ("no", "dog", ("red",), "nom", "kein roter Hund"), ("no", "cat", ("red",), "acc", "keine rote Katze"),
    ("no", "car", ("red",), "acc", "kein rotes Auto"), ("no", "dog", ("red",), "acc", "keinen roten Hund"),
    ("no", "dog", ("red",), "dat", "keinem roten Hund"), ("no", "cat", ("red",), "dat", "keiner roten Katze"),
    # keine + plural: -en
    ("no_pl", "dog", ("red",), "nom", "keine roten Hunde"),
    ("no_pl", "cat", ("red",), "acc", "keine roten Katzen"),
    ("no_pl", "car", ("red",), "dat", "keinen roten Autos"),
    # der/die/das: weak endings
    ("the", "dog", ("red",), "nom", "der rote Hund"), ("the", "cat", ("red",), "nom", "die rote Katze"),
    ("the", "car", ("red",), "nom", "das rote Auto"),
    ("the", "dog", ("red",), "acc", "den roten Hund"), ("the", "cat", ("red",), "acc", "die rote Katze"),
    ("the", "car", ("red",), "acc", "das rote Auto"),
    ("the", "dog", ("red",), "dat", "dem roten Hund"), ("the", "cat", ("red",), "dat", "der roten Katze"),
    ("the", "car", ("red",), "dat", "dem roten Auto"),
    ("the_pl", "dog", ("red",), "nom", "die roten Hunde"),
    ("the_pl", "cat", ("red",), "acc", "die roten Katzen"),
    ("the_pl", "apple", ("red",), "dat", "den roten Äpfeln"),
    # numerals, einige/viele, bare plural: strong endings, einige/viele decline, dative plural -n
    ("three", "apple", ("red",), "nom", "drei rote Äpfel"),
    ("two", "car", ("big", "blue"), "acc", "zwei große blaue Autos"),
    ("twelve", "book", ("small", "green"), "dat", "zwölf kleinen grünen Büchern"),
    ("three", "cat", (), "dat", "drei Katzen"), ("two", "car", (), "dat", "zwei Autos"),
    ("some", "egg", ("white",), "nom", "einige weiße Eier"),
    ("many", "flower", ("yellow",), "acc", "viele gelbe Blumen"),
    ("many", "key", ("black",), "dat", "vielen schwarzen Schlüsseln"),
    ("some", "hat", ("brown",), "dat", "einigen braunen Hüten"),
    ("bare", "cat", ("gray",), "nom", "graue Katzen"), ("bare", "dog", ("red",), "acc", "rote Hunde"),
    ("bare", "dog", ("red",), "dat", "roten Hunden"),
]


@pytest.mark.parametrize("det,noun,adjectives,case,expected", NP_VECTORS)
def test_german_noun_phrase(det, noun, adjectives, case, expected):
    assert german_np(NounPhrase(det, noun, adjectives), case) == expected


def _s(*parts):
    """Sentence from (frame, [nps], joiner) clauses with conjunction names between them."""
    clauses = [Clause(p[0], tuple(NounPhrase(*np) for np in p[1]), *p[2:]) for p in parts[::2]]
    return Sentence(tuple(clauses), tuple(parts[1::2]))


SENTENCE_VECTORS = [
    (_s(("see", [("a", "dog", ("big", "red")), ("two", "cat", ("blue",))])),
     "I see a big red dog and two blue cats.", "Ich sehe einen großen roten Hund und zwei blaue Katzen."),
    (_s(("exist", [("no", "egg", ("white",))]), "but", ("have", [("many", "banana", ("yellow",))])),
     "There is no white egg, but we have many yellow bananas.",
     "Es gibt kein weißes Ei, aber wir haben viele gelbe Bananen."),
    (_s(("stand", [("the_pl", "horse", ("black",))]), "because", ("see", [("a", "dog")])),
     "He stands behind the black horses because I see a dog.",
     "Er steht hinter den schwarzen Pferden, weil ich einen Hund sehe."),
    (_s(("play", [("one", "ball", ("small",))]), "or", ("sit", [("three", "chair", ("green",))])),
     "I play with one small ball or we sit next to three green chairs.",
     "Ich spiele mit einem kleinen Ball oder wir sitzen neben drei grünen Stühlen."),
    (_s(("here", [("five", "apple", ("small", "white"))])), "Here are five small white apples.",
     "Hier sind fünf kleine weiße Äpfel."),
    (_s(("this", [("the", "house", ("big",))]), "because",
        ("exist", [("a", "apple"), ("bare", "book", ("gray",))], "or")),
     "This is the big house because there is an apple or gray books.",
     "Das ist das große Haus, weil es einen Apfel oder graue Bücher gibt."),
    (_s(("want", [("some", "glass")]), "because", ("here", [("the_pl", "key", ("brown",))])),
     "He wants some glasses because here are the brown keys.",
     "Er will einige Gläser, weil hier die braunen Schlüssel sind."),
    (_s(("play", [("ten", "pencil", ("big",)), ("bare", "ball")])),
     "I play with ten big pencils and balls.", "Ich spiele mit zehn großen Bleistiften und Bällen."),
    (_s(("this", [("bare", "egg", ("yellow",))])), "These are yellow eggs.", "Das sind gelbe Eier."),
    (_s(("buy", [("no_pl", "car", ("big",))]), "and", ("find", [("a", "egg"), ("the", "cup", ("blue",))])),
     "She buys no big cars and they find an egg and the blue cup.",
     "Sie kauft keine großen Autos und sie finden ein Ei und die blaue Tasse."),
    (_s(("sit", [("a", "cat"), ("a", "glass", ("small", "gray"))]), "but",
        ("need", [("the", "egg", ("white",))])),
     "We sit next to a cat and a small gray glass, but I need the white egg.",
     "Wir sitzen neben einer Katze und einem kleinen grauen Glas, aber ich brauche das weiße Ei."),
]


@pytest.mark.parametrize("sentence,english,german", SENTENCE_VECTORS,
                         ids=[v[1][:40] for v in SENTENCE_VECTORS])
def test_sentence_translation(sentence, english, german):
    assert render(sentence) == (english, german)


def test_grammar_rejects_bad_input():
    with pytest.raises(ValueError, match="case"):
        german_np(NounPhrase("a", "dog"), "gen")
    with pytest.raises(ValueError, match="conjunctions"):
        render(Sentence((Clause("see", (NounPhrase("a", "dog"),)),) * 2, ()))


def test_sampled_german_is_bounded_and_varied():
    import random

    rng = random.Random(1)
    rows = [sample_ast(rng) for _ in range(2000)]
    lengths = [len(r.reference.split()) for r in rows]
    assert max(lengths) <= MAX_DE_TOKENS and max(lengths) >= 18 and min(lengths) <= 4
    text = " ".join(r.reference for r in rows)
    for word in ("weil", "aber", "oder", "es gibt", "einen", "einem", "einer", "keinen", "vielen", "den"):
        assert f" {word} " in text, word


# ---- spoken QA by hand -------------------------------------------------------------------------

SCENE = Scene("On the table", ((3, "red", "apple"), (1, "blue", "car"), (2, "green", "ball")))
QA_VECTORS = [
    ("count", "apple", "", "How many apples are there?", "There are three apples."),
    ("count", "car", "", "How many cars are there?", "There is one car."),
    ("count", "dog", "", "How many dogs are there?", "There are no dogs."),
    ("color", "car", "", "What color is the car?", "The car is blue."),
    ("color", "apple", "", "What color are the apples?", "The apples are red."),
    ("exists", "car", "", "Is there a car?", "Yes, there is a car."),
    ("exists", "apple", "", "Is there an apple?", "Yes, there are three apples."),
    ("exists", "dog", "", "Is there a dog?", "No, there is no dog."),
    ("exists_color", "car", "blue", "Is there a blue car?", "Yes, there is a blue car."),
    ("exists_color", "apple", "red", "Is there a red apple?", "Yes, there are three red apples."),
    ("exists_color", "apple", "green", "Is there a green apple?", "No, the apples are red."),
    ("exists_color", "egg", "yellow", "Is there a yellow egg?", "No, there is no egg."),
    ("which", "", "green", "What is green?", "The balls are green."),
    ("which", "", "blue", "What is blue?", "The car is blue."),
    ("which", "", "white", "What is white?", "Nothing is white."),
]


def test_scene_description():
    assert describe(SCENE) == "On the table there are three red apples, a blue car and two green balls."
    assert describe(Scene("In the room", ((1, "red", "egg"), (2, "blue", "cat")))) == \
        "In the room there is a red egg and two blue cats."


@pytest.mark.parametrize("kind,noun,color,question,answer", QA_VECTORS)
def test_question_answer(kind, noun, color, question, answer):
    assert ask(SCENE, kind, noun or "dog", color) == (question, answer)


def test_question_errors():
    with pytest.raises(ValueError, match="'dog'"):
        ask(SCENE, "color", "dog")
    with pytest.raises(ValueError, match="'why'"):
        ask(SCENE, "why", "car")


# ---- splits (pure: no synthesis) ---------------------------------------------------------------

def _pairs_in(text: str) -> set[tuple[str, str]]:
    """(color, noun) pairs written as adjacent words in English text, read from the text alone."""
    words = re.findall(r"[a-z]+", text.lower())
    plural = {n.en_plural: n.en for n in NOUNS.values()}
    return {(a, plural.get(b, b)) for a, b in zip(words, words[1:])
            if a in COLORS and plural.get(b, b) in NOUNS}


@pytest.fixture(scope="module")
def drawn():
    return demo.draw_all(0, {"train": 3000, "valid": 300, "test": 300})


def test_held_out_pairs_and_voices_only_in_eval(drawn):
    for row in drawn["train"]:
        text = row["transcript"] + " " + row.get("question", "")
        assert not _pairs_in(text) & demo.HELD_OUT_PAIRS, row
        assert row["voice"] in demo.TRAIN_VOICES and not row["held_out_voice"] and not row["held_out_pair"]
    train_pairs = set().union(*(_pairs_in(r["transcript"]) for r in drawn["train"]))
    assert {c for c, _ in train_pairs} == set(COLORS) and {n for _, n in train_pairs} == set(NOUNS)
    for split in ("valid", "test"):
        rows = drawn[split]
        with_pair = [r for r in rows if _pairs_in(r["transcript"] + " " + r.get("question", ""))
                     & demo.HELD_OUT_PAIRS]
        assert [r["held_out_pair"] for r in rows] == [r in with_pair for r in rows]
        assert 0.4 * len(rows) < len(with_pair) < 0.8 * len(rows)
        held_voice = [r for r in rows if r["voice"] in demo.HELD_OUT_VOICES]
        assert 0.35 * len(rows) < len(held_voice) < 0.65 * len(rows)
    assert not set(demo.TRAIN_VOICES) & set(demo.HELD_OUT_VOICES)


def test_splits_disjoint_and_speakers_vary(drawn):
    transcripts = [r["transcript"] for rows in drawn.values() for r in rows]
    assert len(set(transcripts)) == len(transcripts)
    ids = [r["id"] for rows in drawn.values() for r in rows]
    assert len(set(ids)) == len(ids)
    train = drawn["train"]
    assert len({r["voice"] for r in train}) == len(demo.TRAIN_VOICES)
    assert {r["speed"] for r in train} == set(range(demo.SPEED_WPM[0], demo.SPEED_WPM[1] + 1))
    assert {r["pitch"] for r in train} == set(range(demo.PITCH[0], demo.PITCH[1] + 1))
    assert 0.45 < sum(r["task"] == "sqa" for r in train) / len(train) < 0.55


def test_draw_is_deterministic_and_eval_ignores_n_train(drawn):
    small = demo.draw_all(0, {"train": 10, "valid": 300, "test": 300})
    assert small["valid"] == drawn["valid"] and small["test"] == drawn["test"]
    assert small["train"] == drawn["train"][:10]  # a larger n_train extends train
    sizes = {"train": 50, "valid": 5, "test": 5}
    assert demo.draw_all(0, sizes) == demo.draw_all(0, sizes)
    assert demo.draw_all(1, sizes)["train"] != demo.draw_all(0, sizes)["train"]


def test_every_frame_is_drawn(drawn):
    text = " ".join(r["transcript"] for r in drawn["train"])
    for frame in FRAMES.values():
        assert any(f.lower() in text.lower() for f in frame.en), frame.en


# ---- a real tiny build ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt-get install espeak-ng)")
    out = tmp_path_factory.mktemp("demo") / "tiny"
    return out, demo.build_demo(out, seed=0, workers=1, progress=False, **TINY)


def _manifests(out):
    return {name: (out / name).read_bytes() for name in MANIFESTS}


@requires_espeak
def test_build_files_and_schema(tiny):
    out, summary = tiny
    assert (out / "summary.json").is_file() and json.loads((out / "summary.json").read_text()) == summary
    assert summary["format_version"] == demo.FORMAT_VERSION and summary["settings"]["seed"] == 0
    for name, n in zip(MANIFESTS, (20, 5, 5)):
        rows = [json.loads(line) for line in (out / name).read_text(encoding="utf-8").splitlines()]
        assert len(rows) == n == summary["counts"][name[:-6]]["rows"]
        for row in rows:
            for key in ("id", "audio", "prompt", "reference", "task", "transcript", "voice"):
                assert isinstance(row[key], str) and row[key].strip(), (row["id"], key)
            assert row["task"] in ("ast", "sqa") and ("question" in row) == (row["task"] == "sqa")
            assert row["audio"] == f"audio/{name[:-6]}/{row['id']}.flac" and (out / row["audio"]).is_file()
            assert "<" not in row["prompt"]  # no model-specific tokens
            assert 0.3 < row["duration"] <= demo.MAX_SECONDS
    assert 1.0 < summary["mean_duration_s"] < 10.0


@requires_espeak
def test_build_loads_through_the_manifest_reader(tiny):
    from leafrl.data.sources import read_manifest

    examples = list(read_manifest(tiny[0] / "valid.jsonl"))
    assert [e.id for e in examples] == [f"valid-{i:05d}" for i in range(5)]
    assert examples[0].meta["voice"]


@requires_espeak
def test_audio_is_16k_mono_and_resampled_by_the_ratio(tiny):
    out, _ = tiny
    rows = [json.loads(line) for line in (out / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    espeak = demo.find_espeak()
    for row in rows[:3]:
        info = sf.info(out / row["audio"])
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert row["duration"] == round(info.frames / 16000, 3)
        raw, rate = demo.synthesize(espeak, row["transcript"], row["voice"], row["speed"], row["pitch"])
        assert rate == 22050
        assert abs(info.frames - len(raw) * 320 / 441) <= 1  # 16000 / 22050 = 320 / 441


def test_every_clip_fits_the_builtin_model_window():
    from leafrl.models.tiny import TinyConfig

    assert demo.MAX_SECONDS < TinyConfig().window_seconds


@requires_espeak
def test_a_clip_too_long_is_spoken_again_faster(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "MAX_SECONDS", 1.5)
    text = "Two blue cats, two black bikes and a white spoon."
    job = demo.Job(demo.find_espeak(), text, "en-us+m1", 150, 50, str(tmp_path / "a.flac"), 16000)
    length, speed = demo.render_job(job)
    raw, rate = demo.synthesize(job.espeak, text, job.voice, 150, 50)
    assert len(raw) > 1.5 * rate  # too long as drawn
    assert length <= 1.5 * 16000 and speed > 150 and sf.info(job.path).frames == length
    short = job._replace(text="Two cats.", path=str(tmp_path / "b.flac"))
    assert demo.render_job(short)[1] == 150  # a clip that fits keeps its speed
    monkeypatch.setattr(demo, "MAX_SECONDS", 0.1)
    with pytest.raises(demo.EspeakError, match="even at 450 words a minute"):
        demo.render_job(job)


@requires_espeak
def test_build_is_deterministic_across_workers_and_a_noop_when_complete(tiny, tmp_path):
    out, summary = tiny
    again = tmp_path / "again"
    demo.build_demo(again, seed=0, workers=2, progress=True, **TINY)  # the process pool + rich bar
    assert _manifests(again) == _manifests(out)
    stamps = {p: p.stat().st_mtime_ns for p in again.rglob("*")}
    noop = demo.build_demo(again, seed=0, workers=2, progress=False, **TINY)
    assert noop["settings"] == summary["settings"]
    assert {p: p.stat().st_mtime_ns for p in again.rglob("*")} == stamps  # nothing rewritten
    # other settings rebuild: fewer train rows, stale audio pruned, manifests rewritten
    smaller = demo.build_demo(again, seed=0, workers=1, progress=False, n_train=3, n_valid=5, n_test=5)
    assert smaller["counts"]["train"]["rows"] == 3
    kept = sorted(p.name for p in (again / "audio" / "train").iterdir())
    assert kept == [f"train-0000{i}.flac" for i in range(3)]
    assert (again / "valid.jsonl").read_bytes() == (out / "valid.jsonl").read_bytes()


@requires_espeak
def test_interrupted_build_leaves_no_manifests(tiny, tmp_path, monkeypatch):
    out = tmp_path / "broken"
    shutil.copytree(tiny[0], out)  # a complete build of other settings, then a rebuild dies
    real, calls = demo.render_job, []

    def interrupted(job):
        calls.append(job)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(demo, "render_job", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.build_demo(out, seed=1, workers=1, progress=False, **TINY)
    assert not any((out / name).exists() for name in (*MANIFESTS, "summary.json"))
    assert not list(out.glob(".*.tmp"))


def test_missing_espeak_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(demo.EspeakError, match="apt-get install espeak-ng") as err:
        demo.build_demo(tmp_path / "out", progress=False, **TINY)
    assert "brew install espeak-ng" in str(err.value)
    assert not (tmp_path / "out").exists()


@requires_espeak
def test_a_missing_voice_variant_is_caught(monkeypatch):
    # espeak-ng silently speaks an unknown variant with the default voice
    monkeypatch.setattr(demo, "HELD_OUT_VARIANTS", (*demo.HELD_OUT_VARIANTS, "nosuchvariant"))
    with pytest.raises(demo.EspeakError, match="'nosuchvariant'"):
        demo.check_voices(demo.find_espeak())


@pytest.mark.parametrize("kwargs,name", [({"n_train": -1}, "n_train"), ({"n_valid": 1.5}, "n_valid"),
                                         ({"sampling_rate": 0}, "sampling_rate"), ({"workers": 0}, "workers"),
                                         ({"seed": "0"}, "seed")])
def test_bad_arguments_name_the_argument(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        demo.build_demo(tmp_path, progress=False, **kwargs)


def test_builtin_task_dir(monkeypatch, tmp_path):
    from leafrl.builtin import task_dir

    monkeypatch.setenv("LEAFRL_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert task_dir() == tmp_path / "c" / "demo"
    monkeypatch.delenv("LEAFRL_CACHE")
    assert task_dir() == tmp_path / "x" / "leafrl" / "demo"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert task_dir() == tmp_path / "h" / ".cache" / "leafrl" / "demo"


def test_a_foreign_summary_is_an_error(tmp_path):
    (tmp_path / "summary.json").write_text("not json")
    with pytest.raises(ValueError, match="summary.json"):
        demo.build_demo(tmp_path, progress=False, **TINY)
