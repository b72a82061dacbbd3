"""Bilingual lexicons as extra training pairs: which CC-CEDICT entries are kept, in which
direction, and a user's .tsv lexicon."""

from __future__ import annotations

import pytest

from pipeline.corpus.lexicon import cedict_pairs, lexicon_pairs, plain_definition
from pipeline.errors import UserError

CORPUS = [("Hello, Tom.", "你好，汤姆。"), ("I love China.", "我爱中国。")]


def test_cedict_keeps_the_words_the_corpus_uses_in_the_corpus_direction():
    en_zh = cedict_pairs("en", "zh", CORPUS)
    assert ("hello", "你好") in en_zh
    assert ("China", "中国") in en_zh
    assert ("love", "爱") in en_zh  # "to love", as people type it
    words = {zh for _, zh in en_zh}
    assert "猫" not in words  # "cat": in the dictionary, not in the corpus
    assert all(zh in "".join(z for _, z in CORPUS) for zh in words)
    zh_en = cedict_pairs("zh", "en", [(zh, en) for en, zh in CORPUS])  # (src, tgt) pairs
    assert sorted(zh_en) == sorted((zh, en) for en, zh in en_zh)


def test_cedict_is_chinese_english_only():
    with pytest.raises(UserError, match="Chinese-English: not de-en"):
        cedict_pairs("de", "en", CORPUS)
    with pytest.raises(UserError, match="no cedict word occurs"):  # columns swapped
        cedict_pairs("zh", "en", CORPUS)


def test_a_definition_is_kept_only_when_it_is_a_short_translation():
    assert plain_definition(["CL:隻|只[zhi1]", "cat"]) == "cat"
    assert plain_definition(["variant of 貓|猫[mao1]"]) is None
    assert plain_definition(["(dialect) to hide oneself"]) == "hide oneself"
    assert plain_definition(["a long definition of many words"]) is None
    assert plain_definition(["surname Zhang", "to open up"]) == "open up"


def test_a_tsv_lexicon_is_read_as_source_then_target_and_cleaned(tmp_path):
    path = tmp_path / "words.tsv"
    path.write_text("Haus\thouse\nKatze \t cat\n\t\nHund\tdog\n", encoding="utf-8")
    assert lexicon_pairs(str(path), "de", "en", []) == [
        ("Haus", "house"),
        ("Katze", "cat"),
        ("Hund", "dog"),
    ]
    with pytest.raises(UserError, match="give a .tsv file"):
        lexicon_pairs(str(tmp_path / "words.txt"), "de", "en", [])
    with pytest.raises(UserError, match="does not exist"):
        lexicon_pairs(str(tmp_path / "none.tsv"), "de", "en", [])
