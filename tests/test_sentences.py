"""Sentence splitting and reassembly: Latin and CJK punctuation, layout kept."""

from __future__ import annotations

import pytest

from pipeline.corpus.sentences import reassemble, split_document
from pipeline.corpus.synthetic import parallel_corpus


def rejoin(text: str) -> str:
    parts = split_document(text)
    return "".join(s + t for s, t in zip(parts.separators, [*parts.sentences, ""], strict=True))


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Ein Mann läuft. Eine Frau sitzt!", ["Ein Mann läuft.", "Eine Frau sitzt!"]),
        ("Wirklich? Ja… Gut.", ["Wirklich?", "Ja…", "Gut."]),
        ('Er sagte: "Komm." Sie kam.', ['Er sagte: "Komm."', "Sie kam."]),
        (
            "Dr. Weber kam z.B. am 3. Mai. Dann ging er.",
            ["Dr. Weber kam z.B. am 3. Mai.", "Dann ging er."],
        ),
        (
            "J. Smith paid 3.50 dollars. Then he left.",
            ["J. Smith paid 3.50 dollars.", "Then he left."],
        ),
        ("Apples, pears, etc. and more.", ["Apples, pears, etc. and more."]),
        ("一个男人在跑。一个女人坐着！孩子呢？", ["一个男人在跑。", "一个女人坐着！", "孩子呢？"]),
        ("她说：“好。”然后走了。", ["她说：“好。”", "然后走了。"]),
        ("Tom 来了。He laughed.他笑了。", ["Tom 来了。", "He laughed.", "他笑了。"]),
    ],
)
def test_sentences_are_cut_at_final_punctuation_only(text, sentences):
    assert split_document(text).sentences == sentences


def test_line_breaks_are_cuts_and_separators_keep_every_character():
    text = "  Titel\n\nEin Hund läuft. Eine Katze sitzt.  \n- Punkt eins\r\n\n猫在睡觉。\n"
    parts = split_document(text)
    assert parts.sentences == [
        "Titel",
        "Ein Hund läuft.",
        "Eine Katze sitzt.",
        "- Punkt eins",
        "猫在睡觉。",
    ]
    assert parts.separators == ["  ", "\n\n", " ", "  \n", "\r\n\n", "\n"]
    assert rejoin(text) == text


@pytest.mark.parametrize("text", ["", "   ", "\n\n", " \t\n "])
def test_blank_documents_have_no_sentences(text):
    parts = split_document(text)
    assert parts.sentences == [] and parts.separators == [text]
    assert reassemble([], parts.separators) == text


def test_generated_documents_round_trip():
    german = [g for g, _ in parallel_corpus(40, seed=3)]
    document = " ".join(german[:20]) + "\n\n" + " ".join(german[20:])
    parts = split_document(document)
    assert parts.sentences == german
    assert reassemble(parts.sentences, parts.separators) == document


def test_reassembly_keeps_paragraphs_and_follows_the_target_script():
    parts = split_document("第一句。第二句！\n\n第三句。")
    english = reassemble(["One.", "Two!", "Three."], parts.separators)
    assert english == "One. Two!\n\nThree."
    back = reassemble(["第一句。", "第二句！", "第三句。"], split_document(english).separators)
    assert back == "第一句。第二句！\n\n第三句。"


def test_reassembly_needs_one_separator_more_than_sentences():
    with pytest.raises(ValueError, match="separators"):
        reassemble(["a", "b"], ["", ""])
