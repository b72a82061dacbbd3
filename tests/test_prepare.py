"""`nmt prepare`: alignment through sharding, drop counts, input forms, bad input, real corpora."""

from __future__ import annotations

import gzip
import json
import re
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import sentencepiece as spm
from conftest import require_shared_data

from pipeline.cli import main
from pipeline.corpus.readers import normalise_text
from pipeline.corpus.synthetic import parallel_corpus
from pipeline.corpus.tokenizer import Tokenizer, train_sentencepiece
from pipeline.errors import UserError
from pipeline.prepare import dataflow as prepare_ray
from pipeline.prepare.preparation import LEXICON_FIRST_INDEX, is_prepared, prepare_corpus
from pipeline.prepare.settings import PrepareSettings

EN_ZH_TSV = {
    "src_lang": "en",
    "tgt_lang": "zh",
    "separate_vocab": True,
    "src_col": "0",
    "tgt_col": "1",
}
COLUMNS = ["index", "src_ids", "tgt_ids", "src_len", "tgt_len"]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture
def small_shards(monkeypatch):
    """Small blocks and files, so a few thousand pairs cross many blocks, actors and files."""
    monkeypatch.setattr(prepare_ray, "BATCH_ROWS", 300)
    monkeypatch.setattr(prepare_ray, "ROWS_PER_FILE", 700)
    monkeypatch.setattr(prepare_ray, "TARGET_BLOCK_BYTES", 20_000)


def write_pair(prefix: Path, pairs: list[tuple[str, str]], langs=("de", "en"), gz=True) -> str:
    """P.<src>[.gz] and P.<tgt>[.gz], one sentence a line; returns the prefix."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for side, lang in enumerate(langs):
        data = "".join(pair[side] + "\n" for pair in pairs).encode()
        path = Path(f"{prefix}.{lang}" + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
    return str(prefix)


def read_split(directory: Path) -> list[dict]:
    return sorted(pq.read_table(directory).to_pylist(), key=lambda row: row["index"])


def tokenizers(out: Path) -> tuple[spm.SentencePieceProcessor, spm.SentencePieceProcessor]:
    return tuple(
        spm.SentencePieceProcessor(model_file=str(out / f"spm.{side}.model"))
        for side in ("src", "tgt")
    )


def prepare(tmp_path: Path, train: str, valid: str, **options) -> tuple[Path, dict]:
    out = tmp_path / "out"
    options = {"vocab_size": 150, "src_lang": "de", "tgt_lang": "en"} | options
    return out, prepare_corpus(train=train, valid=valid, out=out, **options)


def run_cli(*args: str) -> int:
    return main(["prepare", *args])


# ---------------------------------------------------------------- the pipeline's logic


def test_every_pair_maps_back_to_its_input_line_through_sharding(tmp_path, small_shards):
    pairs = parallel_corpus(3000, seed=1)
    train = write_pair(tmp_path / "data" / "train", pairs)
    valid = write_pair(tmp_path / "data" / "valid", pairs[:500], gz=False)
    out, stats = prepare(tmp_path, train, valid, max_ratio=10)

    assert is_prepared(out)
    assert len(list((out / "train").glob("*.parquet"))) > 1  # really sharded
    split = stats["splits"]["train"]
    assert (split["in"], split["kept"], split["dropped"]) == (3000, 3000, {})
    src, tgt = tokenizers(out)
    rows = read_split(out / "train")
    assert [row["index"] for row in rows] == list(range(3000))
    for row in rows:
        assert src.decode(row["src_ids"]) == pairs[row["index"]][0]
        assert tgt.decode(row["tgt_ids"]) == pairs[row["index"]][1]
        assert (row["src_len"], row["tgt_len"]) == (len(row["src_ids"]), len(row["tgt_ids"]))
    assert split["tokens"] == {
        "src": sum(row["src_len"] for row in rows),
        "tgt": sum(row["tgt_len"] for row in rows),
    }
    # every character is covered: a subword vocabulary has no unknown piece here
    assert split["unk_tokens"] == {"src": 0, "tgt": 0}
    assert split["unk_rate"] == {"src": 0.0, "tgt": 0.0}
    schema = pq.read_schema(next((out / "train").glob("*.parquet")))
    assert schema.names == COLUMNS
    assert schema.field("src_ids").type == pa.list_(pa.int32())
    assert schema.field("src_len").type == pa.int32()


def test_normalisation_is_nfkc_with_single_spaces_whatever_the_shortcut():
    """normalise_text skips strings a step cannot change; the result must be that of every
    step on every string (NFKC, runs of regex whitespace to one space, trimmed)."""
    texts = [
        "plain ascii.",
        "two  spaces",
        " lead",
        "trail ",
        "tab\there",
        "line\r\n",
        "",
        "   ",
        "ｆｕｌｌ－ｗｉｄｔｈ",
        "ﬁne",
        "nbsp\u00a0here",
        "ideographic\u3000\u3000space",
        "Ünïcödé  mit  Läufen",
        "我爱中国。",
        "vertical\x0btab",
        "sep\u2028x",
    ]
    chunked = pa.chunked_array([texts[:7], texts[7:]])
    expected = [
        re.sub(r"[\t\n\f\r ]+", " ", unicodedata.normalize("NFKC", t)).strip() for t in texts
    ]
    assert normalise_text(chunked).to_pylist() == expected


def test_train_drops_are_counted_by_reason_and_valid_keeps_everything(tmp_path):
    good = list(dict.fromkeys(parallel_corpus(400, seed=2)))  # distinct pairs
    long_german = " ".join(["Ein Mann läuft im Park."] * 12)
    bad = [
        ("", "A man runs."),  # empty source
        ("Ein Mann läuft.", "   "),  # empty target after whitespace normalisation
        (long_german, long_german),  # too long on both sides
        ("Ja.", "A man runs in the park while a woman waits on the street."),  # ratio
        good[0],  # exact duplicate of pair 0
        (good[1][0].replace(" ", "  "), good[1][1]),  # duplicate once whitespace is normalised
    ]
    pairs = good + bad
    train = write_pair(tmp_path / "data" / "train", pairs)
    out, stats = prepare(tmp_path, train, train, max_len=60, max_ratio=3.0, dedup=True)

    split = stats["splits"]["train"]
    assert split["dropped"] == {"duplicate": 2, "empty": 2, "length_ratio": 1, "too_long": 1}
    assert (split["in"], split["kept"]) == (len(pairs), len(good))
    kept = {row["index"] for row in read_split(out / "train")}
    assert kept == set(range(len(good)))
    assert split["src_len_pct"]["max"] <= 60

    valid_rows = read_split(out / "valid")  # the same pairs: nothing dropped, raw text kept
    assert stats["splits"]["valid"]["kept"] == len(pairs)
    assert [(row["src_text"], row["tgt_text"]) for row in valid_rows] == pairs
    assert valid_rows[len(good)]["src_ids"] == []


def test_tsv_with_chinese_and_parquet_inputs_with_separate_vocab(tmp_path):
    zh = ["我们在公园里散步。", "他喜欢喝茶。", "今天天气很好。", "她在看书。"]
    en = ["We walk in the park.", "He likes tea.", "The weather is nice today.", "She reads."]
    lines = [f"{e}\t{z}\tCC-BY 2.0 (France) Attribution\n" for e, z in zip(en, zh, strict=True)]
    tsv = tmp_path / "cmn-eng.train.tsv"
    tsv.write_text("".join(lines * 50), encoding="utf-8")
    store = tmp_path / "store"
    store.mkdir()
    for part in range(2):  # the index runs on across files, in sorted file order
        table = pa.table({"english": en[part * 2 : part * 2 + 2], "chinese": zh[part * 2 :][:2]})
        pq.write_table(table, store / f"part-{part}.parquet")

    out, stats = prepare(tmp_path, str(tsv), str(tsv), vocab_size=60, **EN_ZH_TSV)
    assert not stats["joint_vocab"]
    assert (out / "spm.src.model").read_bytes() != (out / "spm.tgt.model").read_bytes()
    assert stats["splits"]["train"]["kept"] == 200
    src, tgt = tokenizers(out)
    valid = read_split(out / "valid")
    assert {tgt.decode(row["tgt_ids"]) for row in valid} == set(zh)
    assert all(1 not in row["tgt_ids"] for row in valid)  # no <unk>: every character covered

    parquet_out = tmp_path / "from-parquet"
    prepare_corpus(
        src_lang="en",
        tgt_lang="zh",
        train=str(store),
        valid=str(store / "part-1.parquet"),
        test=[str(store / "*.parquet")],
        out=parquet_out,
        src_col="english",
        tgt_col="chinese",
        vocab_size=100,
    )
    rows = read_split(parquet_out / "test" / "store")
    assert [(row["index"], row["src_text"], row["tgt_text"]) for row in rows] == [
        (i, e, z) for i, (e, z) in enumerate(zip(en, zh, strict=True))
    ]


SETTINGS_KEYS = [  # stats.json's "settings", in this order (training and tools read it)
    "src_lang",
    "tgt_lang",
    "train",
    "valid",
    "out",
    "test",
    "overwrite",
    "src_col",
    "tgt_col",
    "vocab_size",
    "separate_vocab",
    "character_coverage",
    "spm_sample",
    "max_len",
    "max_ratio",
    "dedup",
    "skip_invalid_utf8",
    "workers",
    "seed",
    "context_turns",
    "tokenizer",
    "lexicon",
]


def test_settings_take_the_keywords_and_record_plain_json(tmp_path):
    settings = PrepareSettings("de", "en", "t", "v", tmp_path / "out", test=["a", "b"])
    assert settings.test == ("a", "b") and settings == PrepareSettings(
        src_lang="de", tgt_lang="en", train="t", valid="v", out=tmp_path / "out", test=("a", "b")
    )
    recorded = settings.to_json()
    assert list(recorded) == SETTINGS_KEYS
    assert (recorded["out"], recorded["test"]) == (str(tmp_path / "out"), ["a", "b"])
    assert json.loads(json.dumps(recorded)) == recorded
    with pytest.raises(TypeError, match="not both"):
        prepare_corpus(settings, vocab_size=100)
    with pytest.raises(TypeError, match="vocab"):
        prepare_corpus(src_lang="de", tgt_lang="en", train="t", valid="v", out="o", vocab=1)


def test_cli_prints_a_summary_and_refuses_to_overwrite(tmp_path, capsys):
    pairs = parallel_corpus(300, seed=3)
    train = write_pair(tmp_path / "train", pairs)
    test = write_pair(tmp_path / "test_2016_flickr", pairs[:20])
    out = tmp_path / "out"
    args = ["--src-lang", "de", "--tgt-lang", "en", "--train", train, "--valid", train]
    args += ["--test", test, "--out", str(out), "--vocab-size", "100"]

    assert run_cli(*args) == 0
    printed = capsys.readouterr().out
    assert "test/test_2016_flickr" in printed and "300" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert list(stats["settings"]) == SETTINGS_KEYS
    assert stats["settings"]["vocab_size"] == 100
    assert (stats["settings"]["out"], stats["settings"]["test"]) == (str(out), [test])
    assert (stats["settings"]["max_len"], stats["settings"]["workers"]) == (100, None)
    assert stats["splits"]["test/test_2016_flickr"]["kept"] == 20
    assert (out / "spm.src.model").read_bytes() == (out / "spm.tgt.model").read_bytes()
    assert stats["tokenizer"] == "unigram" == Tokenizer(out / "spm.src.model").kind

    assert run_cli(*args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_cli(*args, "--overwrite", "--max-len", "50", "--tokenizer", "bpe") == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["settings"]["max_len"] == 50
    assert stats["tokenizer"] == stats["settings"]["tokenizer"] == "bpe"
    assert Tokenizer(out / "spm.src.model").kind == "bpe"


def test_a_lexicon_adds_its_pairs_to_the_train_split_only(tmp_path, capsys):
    pairs = parallel_corpus(300, seed=6)
    train = write_pair(tmp_path / "train", pairs)
    words = [("Haus", "house"), ("Katze", "cat"), ("Hund", "dog")]
    lexicon = tmp_path / "words.tsv"
    lexicon.write_text("".join(f"{de}\t{en}\n" for de, en in words), encoding="utf-8")
    out, stats = prepare(tmp_path, train, train, lexicon=str(lexicon))

    split = stats["splits"]["train"]
    assert (split["in"], split["kept"], split["lexicon_pairs"]) == (303, 303, 3)
    valid = stats["splits"]["valid"]
    assert valid["kept"] == 300 and "lexicon_pairs" not in valid
    src, tgt = tokenizers(out)
    rows = read_split(out / "train")
    corpus_rows = [row for row in rows if row["index"] < LEXICON_FIRST_INDEX]
    assert [row["index"] for row in corpus_rows] == list(range(300))
    added = [(src.decode(r["src_ids"]), tgt.decode(r["tgt_ids"])) for r in rows[300:]]
    assert added == words

    args = ["--src-lang", "de", "--tgt-lang", "en", "--train", train, "--valid", train]
    assert run_cli(*args, "--out", str(tmp_path / "x"), "--lexicon", "cedict") == 2
    assert "Chinese-English: not de-en" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- word vocabularies


def word_pieces(text: str) -> list[str]:
    """The test's own reading of plain text as word pieces: runs of letters and digits, and
    single other characters, "▁" before one that follows a space or starts the text."""
    return [
        ("▁" if match.start() == 0 or text[match.start() - 1] == " " else "") + match.group()
        for match in re.finditer(r"\w+|[^\w\s]", text)
    ]


WORD_TRAIN_EXTRA = [("Ein Hund (braun) springt 3.5 Meter!", "A dog (brown) jumps 3.5 metres!")]
# (source, target, unknown source words, unknown target words): words and marks that the
# training text never has, "Hundes" and "Parks" beginning with words it has. A word right
# after a mark is a piece of its own, as in sentencepiece ("läuft" in "«läuft»", where the
# training text has "▁läuft"): «, läuft and » are three unknown pieces
WORD_VALID_UNKNOWN = [
    ("Ein Hundes läuft im Park.", "A dogs runs in the park.", 1, 1),
    ("Eine Katze sitzt im Parks, während ein Zebra lacht.", "A cat sits in the parks.", 2, 1),
    ("Ein Hund «läuft» am Strand.", 'A dog "runs" on the beach.', 3, 3),
    ("Ein Mann wartet 42 Minuten.", "A man waits 42 minutes.", 2, 2),
]


def test_word_tokenizer_splits_punctuation_round_trips_and_counts_unknowns(tmp_path):
    train_pairs = parallel_corpus(300, seed=7) + WORD_TRAIN_EXTRA * 3
    known = parallel_corpus(40, seed=8)  # other sentences of the same words
    valid_pairs = known + [(src, tgt) for src, tgt, _, _ in WORD_VALID_UNKNOWN]
    train = write_pair(tmp_path / "data" / "train", train_pairs)
    valid = write_pair(tmp_path / "data" / "valid", valid_pairs)
    out, stats = prepare(
        tmp_path, train, valid, tokenizer="word", vocab_size=1000, separate_vocab=True
    )

    assert stats["tokenizer"] == stats["settings"]["tokenizer"] == "word"
    # 1000 is more than there are: every word of each side, and the 4 special pieces
    for side, column in (("src", 0), ("tgt", 1)):
        types = {piece for pair in train_pairs for piece in word_pieces(pair[column])}
        assert stats["vocab_size"][side] == len(types) + 4
    src, tgt = (Tokenizer(out / f"spm.{side}.model") for side in ("src", "tgt"))
    assert src.kind == tgt.kind == "word"

    rows = read_split(out / "train")
    assert len(rows) == len(train_pairs)
    for row in rows:  # word pieces, punctuation apart, and the text back from the ids
        pair = train_pairs[row["index"]]
        assert src.pieces(row["src_ids"]) == word_pieces(pair[0])
        assert tgt.pieces(row["tgt_ids"]) == word_pieces(pair[1])
        assert (src.decode(row["src_ids"]), tgt.decode(row["tgt_ids"])) == pair
    extra = next(row for row in rows if row["index"] == 300)
    assert src.pieces(extra["src_ids"]) == [
        "▁Ein", "▁Hund", "▁(", "braun", ")", "▁springt", "▁3", ".", "5", "▁Meter", "!"
    ]  # fmt: skip
    assert stats["splits"]["train"]["unk_tokens"] == {"src": 0, "tgt": 0}

    valid_rows = read_split(out / "valid")
    for row in valid_rows[: len(known)]:
        assert 1 not in row["src_ids"] + row["tgt_ids"]
        assert (src.decode(row["src_ids"]), tgt.decode(row["tgt_ids"])) == known[row["index"]]
    for row, (_, _, src_unk, tgt_unk) in zip(
        valid_rows[len(known) :], WORD_VALID_UNKNOWN, strict=True
    ):  # one unknown id a word, however much of it is a known word
        assert (row["src_ids"].count(1), row["tgt_ids"].count(1)) == (src_unk, tgt_unk)
        assert src.decode(row["src_ids"]).count("⁇") == src_unk
    hundes = valid_rows[len(known)]["src_ids"]
    assert src.pieces(hundes) == ["▁Ein", "<unk>", "▁läuft", "▁im", "▁Park", "."]

    split = stats["splits"]["valid"]
    unknown = {
        "src": sum(n for _, _, n, _ in WORD_VALID_UNKNOWN),
        "tgt": sum(n for _, _, _, n in WORD_VALID_UNKNOWN),
    }
    tokens = {
        "src": sum(len(word_pieces(s)) for s, _ in valid_pairs),
        "tgt": sum(len(word_pieces(t)) for _, t in valid_pairs),
    }
    assert (split["unk_tokens"], split["tokens"]) == (unknown, tokens)
    assert split["unk_rate"] == {side: round(unknown[side] / tokens[side], 6) for side in unknown}


def test_word_vocabulary_keeps_the_most_frequent_words_or_every_word():
    sentences = [de for de, _ in parallel_corpus(300, seed=9)]
    counts: dict[str, int] = {}
    for sentence in sentences:
        for piece in word_pieces(sentence):
            counts[piece] = counts.get(piece, 0) + 1
    ranked = sorted(counts, key=lambda piece: (-counts[piece], piece))

    small = Tokenizer.from_serialized(train_sentencepiece(sentences, 12, model_type="word"))
    assert small.vocab_size == 12
    assert small.pieces(range(4, 12)) == ranked[:8]  # by count, ties by piece
    ids = small.encode(sentences)
    assert sum(i == 1 for row in ids for i in row) == sum(counts[p] for p in ranked[8:])

    every = Tokenizer.from_serialized(train_sentencepiece(sentences, 200_000, model_type="word"))
    assert every.vocab_size == len(counts) + 4  # no more than there are, and no error
    assert every.encode(sentences) == [
        every.processor.piece_to_id(word_pieces(s)) for s in sentences
    ]
    with pytest.raises(RuntimeError, match="no room for words"):
        train_sentencepiece(sentences, 4, model_type="word")


def test_word_model_in_plain_sentencepiece_and_with_a_user_symbol():
    """The model file is a sentencepiece model: sentencepiece alone (as training's
    augmentation uses it) encodes known words as Tokenizer does and decodes the same; only
    Tokenizer makes an unknown word one unknown id. A user symbol (the dialogue separator)
    stays whole, and the space before it is a piece of its own, as in sentencepiece."""
    texts = ["Hallo! <sep> Wie geht's?", "Gut, danke.<sep>Und dir?"]
    model = train_sentencepiece(texts * 3, 100, model_type="word", user_defined_symbols=["<sep>"])
    tokenizer = Tokenizer.from_serialized(model)
    plain = spm.SentencePieceProcessor(model_proto=model)
    assert tokenizer.pieces(tokenizer.encode(texts)[0]) == [
        "▁Hallo", "!", "▁", "<sep>", "▁Wie", "▁geht", "'", "s", "?"
    ]  # fmt: skip
    assert tokenizer.pieces(tokenizer.encode(texts)[1]) == [
        "▁Gut", ",", "▁danke", ".", "<sep>", "Und", "▁dir", "?"
    ]  # fmt: skip
    assert tokenizer.encode(texts) == plain.encode(texts)
    assert plain.decode(plain.encode(texts)) == texts
    assert tokenizer.pieces(tokenizer.encode(["Hallo, Gute!"])[0]) == ["▁Hallo", ",", "<unk>", "!"]
    # sentencepiece alone: a known word and an unknown rest
    assert tokenizer.pieces(plain.encode("Hallo, Gute!")) == ["▁Hallo", ",", "▁Gut", "<unk>", "!"]


def test_bad_tokenizer_is_a_clear_error(tmp_path, capsys):
    args = ["--src-lang", "de", "--tgt-lang", "en", "--train", "t", "--valid", "v"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args, "--out", str(tmp_path / "out"), "--tokenizer", "words")
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--tokenizer: invalid choice: 'words' (choose from" in error
    assert all(kind in error for kind in ("unigram", "bpe", "word"))
    with pytest.raises(UserError, match="--tokenizer must be one of unigram, bpe, word, not 'sp'"):
        prepare_corpus(src_lang="de", tgt_lang="en", train="t", valid="v", out="o", tokenizer="sp")


# ---------------------------------------------------------------- bad input


@pytest.fixture
def corpus_dir(tmp_path) -> Path:
    write_pair(tmp_path / "good", parallel_corpus(200, seed=4))
    write_pair(tmp_path / "short", parallel_corpus(10, seed=4))
    (tmp_path / "short.en.gz").write_bytes(gzip.compress(b"one\ntwo\n"))
    (tmp_path / "empty.de").write_text("")
    (tmp_path / "empty.en").write_text("")
    lines = [f"{de}\n".encode() for de, _ in parallel_corpus(5, seed=5)]
    lines[3] = b"Ein Mann l\xe4uft.\n"  # Latin-1, not UTF-8: line 4
    (tmp_path / "latin1.de").write_bytes(b"".join(lines))
    (tmp_path / "latin1.en").write_text("".join(f"{en}\n" for _, en in parallel_corpus(5, 5)))
    pq.write_table(pa.table({"de": ["a"], "english": ["b"]}), tmp_path / "store.parquet")
    (tmp_path / "pairs.tsv").write_text("Hallo\tHello\nNur eine Spalte\n")
    return tmp_path


BAD_INPUTS = {
    "misaligned train": (["--train", "short"], ["short.de.gz has 10 lines", "short.en.gz has 2"]),
    "misaligned valid": (["--valid", "short"], ["short.de.gz has 10 lines", "short.en.gz has 2"]),
    "invalid utf-8": (["--valid", "latin1"], ["latin1.de line 4 is not valid UTF-8"]),
    "missing file": (["--train", "nowhere"], ["no ", "nowhere.de[.gz]"]),
    "unknown language": (["--tgt-lang", "fr"], ["good.fr[.gz]", "has languages de, en"]),
    "bad language code": (["--src-lang", "german!"], ["not a language code"]),
    "empty corpus": (["--valid", "empty"], ["has no sentence pairs"]),
    "missing column": (
        ["--valid", "store.parquet", "--src-col", "de", "--tgt-col", "en"],
        ["has no column en", "its columns are de, english"],
    ),
    "tsv without columns": (["--valid", "pairs.tsv"], ["--src-col and --tgt-col"]),
    "tsv short line": (
        ["--valid", "pairs.tsv", "--src-col", "0", "--tgt-col", "1"],
        ["pairs.tsv line 2 has 1 tab-separated columns"],
    ),
}


@pytest.mark.parametrize("change, expected", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_clear_line_and_leaves_no_output(corpus_dir, capsys, change, expected):
    options = {"--src-lang": "de", "--tgt-lang": "en", "--train": "good", "--valid": "good"}
    options |= dict(zip(change[::2], change[1::2], strict=True))
    for key in ("--train", "--valid"):
        if not options[key].startswith("/"):
            options[key] = str(corpus_dir / options[key])
    out = corpus_dir / "out"
    args = [item for pair in options.items() for item in pair]

    assert run_cli(*args, "--out", str(out), "--vocab-size", "80") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # Ours is one line, the last, with no traceback; on a loaded machine Ray may log a line of
    # its own before it (the GCS about a slow actor start), which is not ours to silence.
    error = lines[-1]
    assert error.startswith("nmt prepare: error: ")
    assert not any("Traceback" in line or "nmt prepare" in line for line in lines[:-1])
    assert all(part in error for part in expected), error
    assert not out.exists()
    assert not list(corpus_dir.glob(".out.tmp-*"))  # the staging dir is cleaned up


def test_skip_invalid_utf8_drops_and_counts_the_line(corpus_dir):
    latin1 = str(corpus_dir / "latin1")
    out, stats = prepare(corpus_dir, latin1, latin1, vocab_size=60, skip_invalid_utf8=True)
    for split in ("train", "valid"):
        assert stats["splits"][split]["dropped"] == {"invalid_utf8": 1}
        assert [row["index"] for row in read_split(out / split)] == [0, 1, 2, 4]


# ---------------------------------------------------------------- real corpora


def test_multi30k_de_en(tmp_path):
    data = require_shared_data() / "multi30k"
    out, stats = prepare(
        tmp_path,
        str(data / "train"),
        str(data / "val"),
        test=[str(data / "test_2016_flickr")],
        vocab_size=8000,
    )
    splits = stats["splits"]
    assert (splits["train"]["in"], splits["valid"]["in"]) == (29000, 1014)
    assert splits["train"]["kept"] + sum(splits["train"]["dropped"].values()) == 29000
    assert splits["train"]["kept"] > 28500
    assert (splits["valid"]["kept"], splits["test/test_2016_flickr"]["kept"]) == (1014, 1000)
    assert stats["vocab_size"] == {"src": 8000, "tgt": 8000}
    with gzip.open(data / "val.de.gz", "rt", encoding="utf-8") as handle:
        german = handle.read().splitlines()
    src, _ = tokenizers(out)
    valid = read_split(out / "valid")
    assert [row["src_text"] for row in valid] == german
    assert sum(src.decode(row["src_ids"]) == row["src_text"] for row in valid) > 1000


def test_tatoeba_en_zh_tsv(tmp_path):
    data = require_shared_data() / "tatoeba"
    out, stats = prepare(
        tmp_path,
        str(data / "cmn-eng.train.tsv"),
        str(data / "cmn-eng.test.tsv"),
        vocab_size=8000,
        **EN_ZH_TSV,
    )
    assert stats["splits"]["train"]["in"] == 27155
    assert stats["splits"]["train"]["kept"] > 26000
    assert stats["splits"]["valid"]["kept"] == 1000
    _, tgt = tokenizers(out)
    valid = read_split(out / "valid")
    ids = [i for row in valid for i in row["tgt_ids"]]
    assert sum(i == tgt.unk_id() for i in ids) < 0.01 * len(ids)  # Chinese characters kept
    # sentencepiece normalises with NFKC: full-width punctuation comes back half-width
    nfkc = [unicodedata.normalize("NFKC", row["tgt_text"]) for row in valid]
    decoded = [tgt.decode(row["tgt_ids"]) for row in valid]
    assert sum(d == n for d, n in zip(decoded, nfkc, strict=True)) > 950
