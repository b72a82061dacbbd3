"""Sentencepiece tokenizers: training on a sample, and the source/target pair a model uses.

Ids are fixed across the project (see ModelConfig): pad=0, unk=1, bos=2, eos=3.

Three kinds (`nmt prepare --tokenizer`): sentencepiece's subword models "unigram" and "bpe",
and "word", a word-level vocabulary. Sentencepiece's own word model splits on whitespace
only ("Hund." is one word), and its splitting options (split_by_unicode_script,
pretokenization_delimiter) apply to unigram and bpe training only. So a word vocabulary is
built here: the text normalised as sentencepiece does it, split into runs of letters and
digits and single punctuation or symbol characters, each piece marked with "▁" when a space
came before it, as sentencepiece marks pieces ("A dog." -> ▁A ▁dog .), and the most
frequent pieces kept. It is stored as a sentencepiece unigram model of those pieces (every
score between -1 and -2, so the fewest pieces win), which any sentencepiece decodes back to
the text, and encodes text of known words the same way; `Tokenizer.encode` splits words
itself, so that a word outside the vocabulary is one unknown id (sentencepiece alone covers
it with what pieces it has: "Eisfischerhütte" as ▁Eis fi s che r hü t t e with Multi30K's).
"""

from __future__ import annotations

import functools
import io
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

SRC_SPM = "spm.src.model"
TGT_SPM = "spm.tgt.model"
TOKENIZERS = ("unigram", "bpe", "word")
# trainer_spec.model_prefix of a word vocabulary (the field is a file name sentencepiece
# does not read back): what tells a word model from a unigram one
WORD_MODEL = "rnnsearch-ray word vocabulary"
SPACE = "\u2581"  # sentencepiece's mark of a space ("▁")


def train_sentencepiece(
    sentences: Iterable[str],
    vocab_size: int,
    character_coverage: float = 1.0,
    model_type: str = "unigram",
    num_threads: int = 2,
    user_defined_symbols: Sequence[str] = (),
) -> bytes:
    """Train a sentencepiece model on `sentences`; returns the serialized model.

    `model_type` is one of TOKENIZERS: "unigram" and "bpe" are sentencepiece's, "word" the
    word vocabulary of `train_words`. character_coverage=1.0 keeps every character seen
    (Chinese needs this; for Latin scripts it only adds a handful of rare pieces).
    `hard_vocab_limit=False` lets a tiny corpus produce fewer pieces than asked instead of
    failing. `user_defined_symbols` are pieces always kept whole (the dialogue turn separator).
    """
    if model_type == "word":
        return train_words(sentences, vocab_size, num_threads, user_defined_symbols)
    return _train(
        iter(sentences),
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        model_type=model_type,
        num_threads=num_threads,
        user_defined_symbols=user_defined_symbols,
    )


def _train(
    sentences: Iterable[str],
    vocab_size: int,
    character_coverage: float,
    model_type: str,
    num_threads: int,
    user_defined_symbols: Sequence[str],
) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        model_type=model_type,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        hard_vocab_limit=False,
        num_threads=num_threads,
        minloglevel=2,
        user_defined_symbols=list(user_defined_symbols),
    )
    return model.getvalue()


# ---------------------------------------------------------------- word vocabularies


def train_words(
    sentences: Iterable[str],
    vocab_size: int,
    num_threads: int = 2,
    user_defined_symbols: Sequence[str] = (),
) -> bytes:
    """A word vocabulary of `sentences` (see the module's doc): the `vocab_size` - 4 - (user
    symbols) most frequent words and punctuation marks, or every one seen when there are
    fewer; returns the serialized model.

    Sentencepiece trains a model of the special pieces alone, whose normaliser (nmt_nfkc)
    and ids the word model keeps; its pieces are then replaced by the words."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    sentences = list(sentences)
    symbols = list(dict.fromkeys(user_defined_symbols))
    reserved = 4 + len(symbols)  # pad, unk, bos, eos and the user symbols
    if vocab_size <= reserved:
        raise RuntimeError(f"a vocabulary of {vocab_size} has no room for words")
    # sentencepiece's word trainer only counts whitespace-separated words: a few sentences
    # give the specs and special pieces, its words are dropped below
    template = _train(sentences[:100] or ["a"], reserved + 1, 1.0, "word", 1, symbols)
    proto = model_pb2.ModelProto.FromString(template)
    normalized = spm.SentencePieceProcessor(model_proto=template).normalize(sentences)
    known = set(symbols)  # pieces already, whatever their count
    counts = Counter(
        piece
        for text in normalized
        for piece in split_words(text, tuple(symbols))
        if piece not in known
    )
    words = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: vocab_size - reserved]

    special = [p for p in proto.pieces if p.type != model_pb2.ModelProto.SentencePiece.NORMAL]
    kept = [p for p in special if p.type != model_pb2.ModelProto.SentencePiece.USER_DEFINED]
    del proto.pieces[:]
    proto.pieces.extend(kept)  # pad, unk, bos, eos: in id order
    for symbol in symbols:
        proto.pieces.add(
            piece=symbol, score=0.0, type=model_pb2.ModelProto.SentencePiece.USER_DEFINED
        )
    for rank, (word, _) in enumerate(words):
        # from -1 (the most frequent) down to above -2: one piece always outscores two
        proto.pieces.add(piece=word, score=-1.0 - rank / len(words))
    spec = proto.trainer_spec
    spec.model_type = model_pb2.TrainerSpec.UNIGRAM
    spec.model_prefix = WORD_MODEL
    spec.vocab_size = len(proto.pieces)
    spec.num_threads = num_threads
    return proto.SerializeToString()


@functools.cache
def _punctuation() -> str:
    """A regex character class of every punctuation (P*) and symbol (S*) character but "▁"
    (a symbol too), which stands for a space in normalised text."""
    ranges: list[list[int]] = []
    for code in range(0x110000):
        if unicodedata.category(chr(code))[0] in "PS" and chr(code) != SPACE:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


@functools.cache
def _word_pattern(symbols: tuple[str, ...]) -> re.Pattern:
    """Pieces of normalised text: a user symbol; the space before one; a run of characters
    that are neither spaces, punctuation nor symbols; one punctuation or symbol character.
    The last two carry the space before them, as sentencepiece's pieces do."""
    punct = _punctuation()
    run = f"[^{SPACE}{punct}]"
    if not symbols:
        return re.compile(f"{SPACE}?(?:{run}+|[{punct}])")
    named = "|".join(re.escape(s) for s in sorted(symbols, key=len, reverse=True))
    word = f"(?:(?!{named}){run})+"  # a run stops where a user symbol starts
    return re.compile(f"(?:{named})|{SPACE}(?={named})|{SPACE}?(?:{word}|[{punct}])")


def split_words(normalized: str, symbols: tuple[str, ...] = ()) -> list[str]:
    """The word pieces of text normalised by sentencepiece (spaces as "▁"): "▁A▁dog." ->
    ["▁A", "▁dog", "."]; joined, they give the text back."""
    return _word_pattern(symbols).findall(normalized)


def model_kind(processor: spm.SentencePieceProcessor) -> str:
    """The model's kind: "word" for a word vocabulary (`train_words`), else sentencepiece's
    model type: "unigram", "bpe", and for models made elsewhere "char" or "spm-word"
    (sentencepiece's own word model, which splits at spaces only)."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    spec = _proto(processor).trainer_spec
    if spec.model_type == model_pb2.TrainerSpec.UNIGRAM and spec.model_prefix == WORD_MODEL:
        return "word"
    if spec.model_type == model_pb2.TrainerSpec.WORD:
        return "spm-word"
    return model_pb2.TrainerSpec.ModelType.Name(spec.model_type).lower()


def _proto(processor: spm.SentencePieceProcessor):
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    return model_pb2.ModelProto.FromString(processor.serialized_model_proto())


class WordEncoder:
    """Text -> ids with a word vocabulary: normalised by sentencepiece, split into word
    pieces, each looked up whole (a word the vocabulary lacks is the unknown id)."""

    def __init__(self, processor: spm.SentencePieceProcessor) -> None:
        from sentencepiece import sentencepiece_model_pb2 as model_pb2

        user = model_pb2.ModelProto.SentencePiece.USER_DEFINED
        self.processor = processor
        self.symbols = tuple(p.piece for p in _proto(processor).pieces if p.type == user)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        normalized = self.processor.normalize(list(texts))
        return [self.processor.piece_to_id(split_words(t, self.symbols)) for t in normalized]


class Tokenizer:
    """One sentencepiece model: text <-> ids and pieces. A word vocabulary's text is split
    into words here (`WordEncoder`); subword models encode in sentencepiece."""

    def __init__(self, path: str | Path | None = None, serialized: bytes | None = None) -> None:
        self.path = Path(path) if path is not None else None
        if serialized is not None:
            self.processor = spm.SentencePieceProcessor(model_proto=serialized)
        else:
            self.processor = spm.SentencePieceProcessor(model_file=str(path))

    @classmethod
    def from_serialized(cls, serialized: bytes) -> Tokenizer:
        """A tokenizer from model bytes (shipped to remote workers instead of a path)."""
        return cls(serialized=serialized)

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    @functools.cached_property
    def kind(self) -> str:
        """The model's kind: "unigram", "bpe" or "word" for `nmt prepare`'s (`model_kind`)."""
        return model_kind(self.processor)

    @functools.cached_property
    def _words(self) -> WordEncoder | None:
        return WordEncoder(self.processor) if self.kind == "word" else None

    def encode(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """Ids of each text: sentencepiece's for a subword model (`num_threads` is its, -1 for
        every core), one id a word for a word vocabulary (`WordEncoder`)."""
        if self._words is not None:
            return self._words.encode(texts)
        return self.processor.encode(list(texts), num_threads=num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode(list(ids))

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.processor.id_to_piece(int(i)) for i in ids]


def load_pair(directory: str | Path) -> tuple[Tokenizer, Tokenizer]:
    """The (source, target) tokenizers stored in a prepared-data or model directory."""
    directory = Path(directory)
    missing = [name for name in (SRC_SPM, TGT_SPM) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} has no tokenizer ({', '.join(missing)} missing)")
    return Tokenizer(directory / SRC_SPM), Tokenizer(directory / TGT_SPM)
