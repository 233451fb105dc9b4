"""The text side of the built-in spoken task: a small English grammar with rule-built German.

Two tasks, both spoken in English:
  - "ast": an English sentence of one (70%), two or three clauses ("I see a big red dog and two blue cats,
    but there is no white egg."), to be translated into German. The German is built by rule:
    article and adjective endings by determiner kind x gender/number x case (nominative after
    "here is" / "this is", accusative after transitive verbs and "es gibt", dative after
    "mit" / "neben" / "hinter"), dative plural -n, and verb-final order after "weil".
  - "sqa": an English description of a scene of two or three things ("On the table there are
    three red apples, a blue car and two green balls."), a question about it, and a short
    English answer.

Everything here is pure: functions take a ``random.Random`` and return text; nothing is
synthesized or written. ``(color, noun)`` pairs in English words are what the demo builder
holds out of the training split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CASES = ("nom", "acc", "dat")
MAX_DE_TOKENS = 20  # whitespace tokens of a German reference
AST_PROMPT = "Translate the English speech into German."
SQA_PROMPT = "Answer the question about the scene described in the audio with one short English sentence."


@dataclass(frozen=True)
class Noun:
    en: str
    en_plural: str
    de: str
    de_plural: str
    gender: str  # "m" | "f" | "n"

    def de_form(self, number: str, case: str) -> str:
        """German form; the dative plural adds -n unless the plural ends in -n or -s."""
        if number == "sg":
            return self.de
        if case == "dat" and not self.de_plural.endswith(("n", "s")):
            return self.de_plural + "n"
        return self.de_plural


NOUNS = {n.en: n for n in (
    Noun("dog", "dogs", "Hund", "Hunde", "m"), Noun("apple", "apples", "Apfel", "Äpfel", "m"),
    Noun("ball", "balls", "Ball", "Bälle", "m"), Noun("chair", "chairs", "Stuhl", "Stühle", "m"),
    Noun("hat", "hats", "Hut", "Hüte", "m"), Noun("key", "keys", "Schlüssel", "Schlüssel", "m"),
    Noun("spoon", "spoons", "Löffel", "Löffel", "m"), Noun("shoe", "shoes", "Schuh", "Schuhe", "m"),
    Noun("pencil", "pencils", "Bleistift", "Bleistifte", "m"),
    Noun("cat", "cats", "Katze", "Katzen", "f"), Noun("cup", "cups", "Tasse", "Tassen", "f"),
    Noun("lamp", "lamps", "Lampe", "Lampen", "f"), Noun("flower", "flowers", "Blume", "Blumen", "f"),
    Noun("bottle", "bottles", "Flasche", "Flaschen", "f"), Noun("bag", "bags", "Tasche", "Taschen", "f"),
    Noun("clock", "clocks", "Uhr", "Uhren", "f"), Noun("banana", "bananas", "Banane", "Bananen", "f"),
    Noun("box", "boxes", "Kiste", "Kisten", "f"),
    Noun("car", "cars", "Auto", "Autos", "n"), Noun("book", "books", "Buch", "Bücher", "n"),
    Noun("house", "houses", "Haus", "Häuser", "n"), Noun("glass", "glasses", "Glas", "Gläser", "n"),
    Noun("egg", "eggs", "Ei", "Eier", "n"), Noun("bed", "beds", "Bett", "Betten", "n"),
    Noun("boat", "boats", "Boot", "Boote", "n"), Noun("bike", "bikes", "Fahrrad", "Fahrräder", "n"),
    Noun("horse", "horses", "Pferd", "Pferde", "n"),
)}
COLORS = {"red": "rot", "blue": "blau", "green": "grün", "yellow": "gelb", "black": "schwarz",
          "white": "weiß", "brown": "braun", "gray": "grau"}
SIZES = {"big": "groß", "small": "klein"}
ADJECTIVES = {**SIZES, **COLORS}
NUMBERS = {"one": "ein", "two": "zwei", "three": "drei", "four": "vier", "five": "fünf", "six": "sechs",
           "seven": "sieben", "eight": "acht", "nine": "neun", "ten": "zehn", "eleven": "elf",
           "twelve": "zwölf"}
COUNT_WORDS = tuple(NUMBERS)  # index i is the English word for i + 1

# Determiners: English word (None: bare plural), number, declension kind.
#   "indef": ein-/kein-words in the singular (mixed adjective endings); "kein" in the plural
#   takes -en; "def": der/die/das (weak endings); "strong": numerals, einige, viele, no article.
DETERMINERS = {
    "a": ("a", "sg", "indef"), "one": ("one", "sg", "indef"), "no": ("no", "sg", "kein"),
    "the": ("the", "sg", "def"), "the_pl": ("the", "pl", "def"), "no_pl": ("no", "pl", "kein"),
    "some": ("some", "pl", "strong"), "many": ("many", "pl", "strong"), "bare": (None, "pl", "strong"),
    **{w: (w, "pl", "strong") for w in COUNT_WORDS[1:]},
}
INDEF = {"nom": {"m": "ein", "f": "eine", "n": "ein"}, "acc": {"m": "einen", "f": "eine", "n": "ein"},
         "dat": {"m": "einem", "f": "einer", "n": "einem"}}
DEF = {"nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
       "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"},
       "dat": {"m": "dem", "f": "der", "n": "dem", "pl": "den"}}
KEIN_PLURAL = {"nom": "keine", "acc": "keine", "dat": "keinen"}
QUANTIFIERS = {"some": {"nom": "einige", "acc": "einige", "dat": "einigen"},
               "many": {"nom": "viele", "acc": "viele", "dat": "vielen"}}
MIXED = {"nom": {"m": "er", "f": "e", "n": "es"}, "acc": {"m": "en", "f": "e", "n": "es"},
         "dat": {"m": "en", "f": "en", "n": "en"}}
WEAK = {"nom": {"m": "e", "f": "e", "n": "e", "pl": "en"}, "acc": {"m": "en", "f": "e", "n": "e", "pl": "en"},
        "dat": {"m": "en", "f": "en", "n": "en", "pl": "en"}}
STRONG_PLURAL = {"nom": "e", "acc": "e", "dat": "en"}


@dataclass(frozen=True)
class Frame:
    """A clause frame: English subject + verb, German subject, verb (sg/pl agreement) and case."""

    en: tuple[str, str]  # (with a singular first object, with a plural one)
    de_subject: str
    de_verb: tuple[str, str]
    case: str
    de_prep: str = ""
    max_nps: int = 2
    excludes: frozenset[str] = frozenset()


_NO = frozenset({"no", "no_pl"})
FRAMES = {
    "see": Frame(("I see",) * 2, "ich", ("sehe",) * 2, "acc"),
    "have": Frame(("we have",) * 2, "wir", ("haben",) * 2, "acc"),
    "need": Frame(("I need",) * 2, "ich", ("brauche",) * 2, "acc"),
    "buy": Frame(("she buys",) * 2, "sie", ("kauft",) * 2, "acc"),
    "want": Frame(("he wants",) * 2, "er", ("will",) * 2, "acc"),
    "find": Frame(("they find",) * 2, "sie", ("finden",) * 2, "acc"),
    "exist": Frame(("there is", "there are"), "es", ("gibt",) * 2, "acc",
                   excludes=frozenset({"the", "the_pl"})),
    "here": Frame(("here is", "here are"), "hier", ("ist", "sind"), "nom", max_nps=1, excludes=_NO),
    "this": Frame(("this is", "these are"), "das", ("ist", "sind"), "nom", max_nps=1, excludes=_NO),
    "play": Frame(("I play with",) * 2, "ich", ("spiele",) * 2, "dat", de_prep="mit", excludes=_NO),
    "sit": Frame(("we sit next to",) * 2, "wir", ("sitzen",) * 2, "dat", de_prep="neben", excludes=_NO),
    "stand": Frame(("he stands behind",) * 2, "er", ("steht",) * 2, "dat", de_prep="hinter", excludes=_NO),
}
# English joiner, German joiner, whether the German clause after it is verb-final.
CONJUNCTIONS = {"and": (" and ", " und ", False), "or": (" or ", " oder ", False),
                "but": (", but ", ", aber ", False), "because": (" because ", ", weil ", True)}


@dataclass(frozen=True)
class NounPhrase:
    det: str  # a key of DETERMINERS
    noun: str  # a key of NOUNS
    adjectives: tuple[str, ...] = ()  # keys of ADJECTIVES, size before color


@dataclass(frozen=True)
class Clause:
    frame: str  # a key of FRAMES
    nps: tuple[NounPhrase, ...]
    np_joiner: str = "and"  # "and" | "or" between two noun phrases


@dataclass(frozen=True)
class Sentence:
    clauses: tuple[Clause, ...]
    conjunctions: tuple[str, ...] = ()  # keys of CONJUNCTIONS, one fewer than clauses


def with_article(word: str) -> str:
    """English indefinite article for ``word``: "an apple", "a red car"."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def english_np(np: NounPhrase) -> str:
    """English noun phrase: "three big red apples", "an egg", "no dog"."""
    word, number, _ = DETERMINERS[np.det]
    noun = NOUNS[np.noun]
    head = " ".join((*np.adjectives, noun.en if number == "sg" else noun.en_plural))
    if word == "a":
        return with_article(head)
    return head if word is None else f"{word} {head}"


def german_np(np: NounPhrase, case: str) -> str:
    """German noun phrase in ``case``, e.g. ("a", "dog", ("red",)) in "acc" -> "einen roten Hund"."""
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    word, number, kind = DETERMINERS[np.det]
    noun = NOUNS[np.noun]
    slot = noun.gender if number == "sg" else "pl"
    if kind == "indef":
        article, ending = INDEF[case][noun.gender], MIXED[case][noun.gender]
    elif kind == "kein":
        article = "k" + INDEF[case][noun.gender] if number == "sg" else KEIN_PLURAL[case]
        ending = MIXED[case][noun.gender] if number == "sg" else "en"
    elif kind == "def":
        article, ending = DEF[case][slot], WEAK[case][slot]
    else:
        article = QUANTIFIERS[np.det][case] if np.det in QUANTIFIERS else NUMBERS.get(word or "", "")
        ending = STRONG_PLURAL[case]
    words = [article] if article else []
    words += [ADJECTIVES[a] + ending for a in np.adjectives]
    return " ".join([*words, noun.de_form(number, case)])


def _np_list(nps: tuple[NounPhrase, ...], joiner: str, word_np) -> str:
    """Noun phrases rendered by ``word_np`` and joined by ``joiner`` ("and", "oder", ...)."""
    return f" {joiner} ".join(word_np(np) for np in nps)


def english_clause(clause: Clause) -> str:
    """English clause: frame (agreeing with the first noun phrase) + noun phrases."""
    frame = FRAMES[clause.frame]
    number = DETERMINERS[clause.nps[0].det][1]
    verb = frame.en[0 if number == "sg" else 1]
    return f"{verb} {_np_list(clause.nps, clause.np_joiner, english_np)}"


def german_clause(clause: Clause, verb_final: bool = False) -> str:
    """German clause: verb second ("ich sehe einen Hund") or verb final ("ich einen Hund sehe")."""
    frame = FRAMES[clause.frame]
    joiner = {"and": "und", "or": "oder"}[clause.np_joiner]
    objects = _np_list(clause.nps, joiner, lambda np: german_np(np, frame.case))
    if frame.de_prep:
        objects = f"{frame.de_prep} {objects}"
    plural = len(clause.nps) > 1 or DETERMINERS[clause.nps[0].det][1] == "pl"
    verb = frame.de_verb[1 if plural else 0]
    parts = (frame.de_subject, objects, verb) if verb_final else (frame.de_subject, verb, objects)
    return " ".join(parts)


def _capitalize(text: str) -> str:
    return text[0].upper() + text[1:]


def render(sentence: Sentence) -> tuple[str, str]:
    """(English, German) sentences, capitalized and ending with a period."""
    if len(sentence.conjunctions) != len(sentence.clauses) - 1:
        raise ValueError(f"a sentence of {len(sentence.clauses)} clauses needs "
                         f"{len(sentence.clauses) - 1} conjunctions, got {sentence.conjunctions}")
    en, de = english_clause(sentence.clauses[0]), german_clause(sentence.clauses[0])
    for conj, clause in zip(sentence.conjunctions, sentence.clauses[1:]):
        en_join, de_join, verb_final = CONJUNCTIONS[conj]
        en += en_join + english_clause(clause)
        de += de_join + german_clause(clause, verb_final)
    return _capitalize(en) + ".", _capitalize(de) + "."


def color_noun_pairs(sentence: Sentence) -> frozenset[tuple[str, str]]:
    """The (color, noun) pairs a sentence mentions, in English words."""
    return frozenset((a, np.noun) for c in sentence.clauses for np in c.nps
                     for a in np.adjectives if a in COLORS)


# ---- sampling -------------------------------------------------------------------------------

SG_DET_WEIGHTS = {"a": 5.0, "one": 1.5, "the": 2.0, "no": 1.5}
PL_DET_WEIGHTS = {"the_pl": 1.0, "some": 1.0, "many": 1.0, "no_pl": 0.5, "bare": 1.0,
                  **{w: 0.5 for w in COUNT_WORDS[1:]}}
ADJECTIVE_PATTERNS = {(): 25, ("color",): 40, ("size",): 10, ("size", "color"): 25}
# Mostly one clause (a tiny model learns short sentences much sooner); two or three keep some long ones.
CLAUSE_COUNT_WEIGHTS = {1: 70, 2: 22, 3: 8}
MAX_TRIES = 1000


@dataclass(frozen=True)
class Utterance:
    """One row's text: what is spoken, the text prompt, the reference answer."""

    task: str  # "ast" | "sqa"
    transcript: str  # the English text that is synthesized
    prompt: str
    reference: str
    pairs: frozenset[tuple[str, str]]  # (color, noun) pairs in the transcript or the question
    question: str | None = None  # sqa only
    answer: str | None = None  # sqa only: the bare answer ("Three.", "Blue.", "No.")


def _weighted(rng: random.Random, weights: dict):
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def sample_np(rng: random.Random, frame: Frame) -> NounPhrase:
    """A random noun phrase that ``frame`` allows (half singular, half plural)."""
    table = SG_DET_WEIGHTS if rng.random() < 0.5 else PL_DET_WEIGHTS
    det = _weighted(rng, {k: w for k, w in table.items() if k not in frame.excludes})
    noun = rng.choice(tuple(NOUNS))
    pattern = _weighted(rng, ADJECTIVE_PATTERNS)
    adjectives = tuple(rng.choice(tuple(SIZES if kind == "size" else COLORS)) for kind in pattern)
    return NounPhrase(det, noun, adjectives)


def sample_clause(rng: random.Random) -> Clause:
    """A random clause: one noun phrase, or (30%) two with different nouns joined by and/or."""
    frame_key = rng.choice(tuple(FRAMES))
    frame = FRAMES[frame_key]
    nps = (sample_np(rng, frame),)
    if frame.max_nps > 1 and rng.random() < 0.3:
        second = sample_np(rng, frame)
        while second.noun == nps[0].noun:
            second = sample_np(rng, frame)
        nps += (second,)
    return Clause(frame_key, nps, "or" if rng.random() < 0.25 else "and")


def sample_sentence(rng: random.Random, clause_weights: dict[int, float] = CLAUSE_COUNT_WEIGHTS) -> Sentence:
    """A sentence of 1-3 clauses (``clause_weights``) whose German has at most MAX_DE_TOKENS words."""
    for _ in range(MAX_TRIES):
        n = _weighted(rng, clause_weights)
        sentence = Sentence(tuple(sample_clause(rng) for _ in range(n)),
                            tuple(rng.choice(tuple(CONJUNCTIONS)) for _ in range(n - 1)))
        if len(render(sentence)[1].split()) <= MAX_DE_TOKENS:
            return sentence
    raise RuntimeError(f"no sentence within MAX_DE_TOKENS={MAX_DE_TOKENS} in {MAX_TRIES} tries")


def sample_ast(rng: random.Random, clause_weights: dict[int, float] = CLAUSE_COUNT_WEIGHTS) -> Utterance:
    """A speech-translation row: English sentence (``clause_weights``) -> German reference."""
    sentence = sample_sentence(rng, clause_weights=clause_weights)
    english, german = render(sentence)
    return Utterance("ast", english, AST_PROMPT, german, color_noun_pairs(sentence))


# ---- spoken QA about a scene ----------------------------------------------------------------

LOCATIONS = ("On the table", "On the floor", "In the room", "In the garden", "On the shelf", "In the kitchen")
QUESTION_KINDS = ("count", "color", "exists", "exists_color", "which")
SCENE_COUNT_WEIGHTS = {1: 3, 2: 2, 3: 2, 4: 1, 5: 1, 6: 1}


@dataclass(frozen=True)
class Scene:
    location: str
    items: tuple[tuple[int, str, str], ...]  # (count, color, noun); nouns and colors distinct


def counted(count: int, noun: str, color: str = "") -> str:
    """English "a red car" / "three red apples" / "an apple"."""
    n = NOUNS[noun]
    head = f"{color} " if color else ""
    if count == 1:
        return with_article(head + n.en)
    return f"{COUNT_WORDS[count - 1]} {head}{n.en_plural}"


def describe(scene: Scene) -> str:
    """"On the table there are three red apples, a blue car and two green balls." """
    parts = [counted(count, noun, color) for count, color, noun in scene.items]
    listing = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
    return f"{scene.location} there {'is' if scene.items[0][0] == 1 else 'are'} {listing}."


def _the(count: int, noun: str, color: str) -> str:
    """"the car is blue" / "the apples are red" (lower case, no period)."""
    n = NOUNS[noun]
    return f"the {n.en} is {color}" if count == 1 else f"the {n.en_plural} are {color}"


def _there_are(count: int, noun: str, color: str = "") -> str:
    """"there is one apple" / "there are three red apples" / "there are no apples"."""
    if count == 0:
        return f"there are no {NOUNS[noun].en_plural}"
    return f"there is {counted(1, noun, color)}" if count == 1 else f"there are {counted(count, noun, color)}"


def ask(scene: Scene, kind: str, noun: str, color: str = "") -> tuple[str, str]:
    """(question, reference answer) about ``scene``; ``color`` is used by exists_color and which."""
    n = NOUNS[noun]
    count, actual = next(((k, c) for k, c, n_ in scene.items if n_ == noun), (0, ""))
    if kind == "count":
        answer = f"There is one {n.en}." if count == 1 else _capitalize(_there_are(count, noun)) + "."
        return f"How many {n.en_plural} are there?", answer
    if kind == "color":
        if count == 0:
            raise ValueError(f"a color question needs a noun in the scene, got {noun!r}")
        subject = f"is the {n.en}" if count == 1 else f"are the {n.en_plural}"
        return f"What color {subject}?", _capitalize(_the(count, noun, actual)) + "."
    if kind in ("exists", "exists_color"):
        asked = color if kind == "exists_color" else ""
        question = f"Is there {with_article(f'{asked} {n.en}'.strip())}?"
        if count == 0:
            return question, f"No, there is no {n.en}."
        if asked and asked != actual:
            return question, f"No, {_the(count, noun, actual)}."
        return question, f"Yes, {_there_are(count, noun, asked)}."
    if kind == "which":
        match = [(k, n_) for k, c, n_ in scene.items if c == color]
        answer = _capitalize(_the(*match[0], color)) if match else f"Nothing is {color}"
        return f"What is {color}?", answer + "."
    raise ValueError(f"question kind must be one of {QUESTION_KINDS}, got {kind!r}")


def short_answer(scene: Scene, kind: str, noun: str, color: str = "") -> str:
    """The bare answer to ``ask(scene, kind, noun, color)``'s question: "Three.", "Blue.", "No.",
    "The car." (the reference says the same in a short sentence)."""
    count, actual = next(((k, c) for k, c, n_ in scene.items if n_ == noun), (0, ""))
    if kind == "count":
        return (COUNT_WORDS[count - 1].capitalize() if count else "None") + "."
    if kind == "color":
        return actual.capitalize() + "."
    if kind in ("exists", "exists_color"):
        asked = color if kind == "exists_color" else ""
        return "No." if count == 0 or (asked and asked != actual) else "Yes."
    if kind == "which":
        match = [NOUNS[n_].en if k == 1 else NOUNS[n_].en_plural for k, c, n_ in scene.items if c == color]
        return f"The {match[0]}." if match else "Nothing."
    raise ValueError(f"question kind must be one of {QUESTION_KINDS}, got {kind!r}")


def sample_scene(rng: random.Random) -> Scene:
    """Two (2 in 3) or three distinct nouns with distinct colors and counts 1-6: scenes small
    enough for the built-in tiny model to find things in."""
    k = rng.choice((2, 2, 3))
    nouns, colors = rng.sample(tuple(NOUNS), k), rng.sample(tuple(COLORS), k)
    return Scene(rng.choice(LOCATIONS),
                 tuple((_weighted(rng, SCENE_COUNT_WEIGHTS), c, n) for c, n in zip(colors, nouns)))


def sample_sqa(rng: random.Random) -> Utterance:
    """A spoken-QA row: scene description (spoken), question (text) -> short English answer."""
    scene = sample_scene(rng)
    kind = rng.choice(QUESTION_KINDS)
    present = kind == "color" or rng.random() < 0.7
    in_scene = [n for _, _, n in scene.items]
    noun = rng.choice(in_scene if present else [n for n in NOUNS if n not in in_scene])
    scene_colors = [c for _, c, _ in scene.items]
    if kind == "which":
        color = rng.choice(scene_colors if present else [c for c in COLORS if c not in scene_colors])
    elif kind == "exists_color" and present and rng.random() < 0.5:
        color = scene_colors[in_scene.index(noun)]
    else:
        color = rng.choice(tuple(COLORS))
    question, reference = ask(scene, kind, noun, color)
    pairs = frozenset((c, n) for _, c, n in scene.items)
    if kind == "exists_color":
        pairs |= {(color, noun)}
    return Utterance("sqa", describe(scene), f"{SQA_PROMPT} Question: {question}", reference,
                     pairs, question, short_answer(scene, kind, noun, color))
