"""A seeded, generated German-English parallel corpus for tests and the demo's fallback.

Sentences are built from templates over a small lexicon, so a model can learn them in
minutes, and the corpus can be as large as a test needs without any files.
"""

from __future__ import annotations

import random

NOUNS = [  # (German with article, English with article)
    ("ein Mann", "a man"),
    ("eine Frau", "a woman"),
    ("ein Kind", "a child"),
    ("ein Hund", "a dog"),
    ("eine Katze", "a cat"),
    ("ein Junge", "a boy"),
    ("ein Mädchen", "a girl"),
    ("eine Gruppe", "a group"),
    ("ein Arbeiter", "a worker"),
    ("ein Radfahrer", "a cyclist"),
]
VERBS = [
    ("läuft", "runs"),
    ("spielt", "plays"),
    ("sitzt", "sits"),
    ("steht", "stands"),
    ("springt", "jumps"),
    ("wartet", "waits"),
    ("lacht", "laughs"),
    ("arbeitet", "works"),
]
PLACES = [
    ("auf der Straße", "on the street"),
    ("im Park", "in the park"),
    ("am Strand", "on the beach"),
    ("im Wasser", "in the water"),
    ("vor dem Haus", "in front of the house"),
    ("auf dem Feld", "on the field"),
    ("im Schnee", "in the snow"),
    ("neben dem Auto", "next to the car"),
]
ADJECTIVES = [
    ("junger", "young"),
    ("alter", "old"),
    ("großer", "tall"),
    ("kleiner", "small"),
    ("glücklicher", "happy"),
]


def _noun_phrase(rng: random.Random) -> tuple[str, str]:
    german, english = rng.choice(NOUNS)
    if german.startswith("ein ") and rng.random() < 0.4:
        adj_de, adj_en = rng.choice(ADJECTIVES)
        article_en = "an" if adj_en[0] in "aeiou" else "a"
        return f"ein {adj_de} {german[4:]}", f"{article_en} {adj_en} {english[2:]}"
    return german, english


def sentence_pair(rng: random.Random) -> tuple[str, str]:
    subject_de, subject_en = _noun_phrase(rng)
    verb_de, verb_en = rng.choice(VERBS)
    place_de, place_en = rng.choice(PLACES)
    german, english = f"{subject_de} {verb_de} {place_de}", f"{subject_en} {verb_en} {place_en}"
    if rng.random() < 0.3:  # a second clause makes some sentences long
        other_de, other_en = _noun_phrase(rng)
        verb2_de, verb2_en = rng.choice(VERBS)
        german += f", während {other_de} {verb2_de}"
        english += f" while {other_en} {verb2_en}"
    return german[0].upper() + german[1:] + ".", english[0].upper() + english[1:] + "."


def parallel_corpus(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` (German, English) pairs, the same for the same seed."""
    rng = random.Random(seed)
    return [sentence_pair(rng) for _ in range(count)]
