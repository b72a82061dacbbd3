"""Corpus preparation: read, clean and tokenize a parallel corpus with Ray Data into Parquet blocks
of token ids that training streams from.

OUT is a local path or a URI (s3://bucket/path, ...), as are the inputs. Layout written
(locally into a temp dir beside OUT, renamed to OUT only when complete; on remote storage
straight into OUT, stats.json last):
  OUT/stats.json, OUT/spm.src.model, OUT/spm.tgt.model,
  OUT/train/*.parquet (index, src_ids, tgt_ids, src_len, tgt_len),
  OUT/valid/*.parquet and OUT/test/<name>/*.parquet (the same + src_text, tgt_text).
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.corpus.dialogue import SEPARATOR, dialogue_stats
from pipeline.corpus.readers import (
    CorpusInput,
    ReadOptions,
    check_lang,
    kept_pairs,
    pairs_block,
    resolve_input,
)
from pipeline.corpus.tokenizer import SRC_SPM, TGT_SPM, TOKENIZERS
from pipeline.errors import UserError
from pipeline.prepare.settings import PrepareSettings
from pipeline.storage import Location

STATS = "stats.json"
LEXICON_FIRST_INDEX = 10**12  # a lexicon's pairs are numbered after any corpus's lines


def is_prepared(path: str | Path | Location) -> bool:
    """Whether `path` (local or a URI) is a complete `nmt prepare` output (stats.json is
    written last)."""
    location = Location.of(path)
    return all((location / name).exists() for name in (STATS, SRC_SPM, TGT_SPM, "train", "valid"))


def prepare_corpus(settings: PrepareSettings | None = None, /, **keywords: Any) -> dict:
    """Prepare a corpus; returns stats.json's dict. Takes a `PrepareSettings`, or its fields
    as keyword arguments (the command's options: `prepare_corpus(src_lang="de", ...)`).

    Runs on the Ray cluster this process is connected to, or starts a local one."""
    if settings is None:
        settings = PrepareSettings(**keywords)
    elif keywords:
        raise TypeError("prepare_corpus takes a PrepareSettings or keywords, not both")
    splits = _resolve_splits(settings)
    target = Location.of(settings.out)
    _check_out(target, settings.overwrite)
    if target.is_local:
        return _prepare_locally(Path(target.path), splits, settings)
    return _prepare_remotely(target, splits, settings)


def _prepare_locally(out: Path, splits: dict[str, CorpusInput], settings: PrepareSettings) -> dict:
    """Into a temp dir beside `out`, swapped in when complete: `out` is never half-written."""
    staging = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir(parents=True)
        stats = _prepare_into(Location.of(staging), splits, settings)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stats


def _prepare_remotely(
    out: Location, splits: dict[str, CorpusInput], settings: PrepareSettings
) -> dict:
    """Straight into `out`: object stores cannot rename a directory. stats.json goes last, so
    is_prepared() sees a complete dataset or none; a failed run removes what it wrote."""
    out.delete()  # the dataset --overwrite replaces (_check_out refused it otherwise)
    try:
        return _prepare_into(out, splits, settings)
    except BaseException:
        out.delete()
        raise


def _resolve_splits(settings: PrepareSettings) -> dict[str, CorpusInput]:
    """{split name: CorpusInput}; split names are "train", "valid", "test/<name>"."""
    languages = (settings.src_lang, settings.tgt_lang)
    for code in languages:
        check_lang(code)
    if settings.context_turns < 1:
        raise UserError(f"--context-turns must be at least 1, not {settings.context_turns}")
    if settings.tokenizer not in TOKENIZERS:
        raise UserError(
            f"--tokenizer must be one of {', '.join(TOKENIZERS)}, not '{settings.tokenizer}'"
        )

    def resolve(spec: str) -> CorpusInput:
        return resolve_input(
            spec, *languages, settings.src_col, settings.tgt_col, settings.context_turns
        )

    splits = {"train": resolve(settings.train), "valid": resolve(settings.valid)}
    for spec in settings.test:
        corpus = resolve(spec)
        if f"test/{corpus.name}" in splits:
            raise UserError(f"two --test inputs are both named '{corpus.name}': rename one")
        splits[f"test/{corpus.name}"] = corpus
    dialogue = [corpus.kind == "dialogue" for corpus in splits.values()]
    if any(dialogue) and not all(dialogue):
        raise UserError("conversations and parallel text cannot be mixed in one dataset")
    if settings.src_lang == settings.tgt_lang and not any(dialogue):
        raise UserError(f"--src-lang and --tgt-lang are both '{settings.src_lang}'")
    if any(dialogue) and settings.separate_vocab:
        raise UserError("conversations share one vocabulary: drop --separate-vocab")
    return splits


def _check_out(out: Location, overwrite: bool) -> None:
    if not out.is_local and "/" not in out.path.strip("/"):
        # --overwrite would delete the whole bucket
        raise UserError(f"--out {out} is a bucket: give a directory inside it")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists: pass --overwrite to replace it, or another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")


def _publish(staging: Path, out: Path) -> None:
    """Swap the finished staging dir in as `out` (a rename, so `out` is never half-written)."""
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _prepare_into(
    target: Location, splits: dict[str, CorpusInput], settings: PrepareSettings
) -> dict:
    from pipeline.prepare.dataflow import run_split, start_ray

    seconds = {}
    with _timed(seconds, "lexicon"):  # before Ray starts: a bad lexicon fails at once
        lexicon = lexicon_block(splits["train"], settings)
    with _timed(seconds, "ray_init"):
        start_ray()
    with _timed(seconds, "sentencepiece"):
        src_model, tgt_model = train_vocab(splits["train"], settings)
    (target / SRC_SPM).write_bytes(src_model)
    (target / TGT_SPM).write_bytes(tgt_model)
    split_stats = {}
    for name, corpus in splits.items():
        with _timed(seconds, name):
            extra = lexicon if name == "train" else None
            split_stats[name] = run_split(
                corpus, target / name, src_model, tgt_model, settings, name == "train", extra
            )
        if corpus.kind == "dialogue":  # a second read of a small input: what it held
            found = dialogue_stats(corpus.paths, corpus.context_turns, corpus.part)
            split_stats[name]["dialogue"] = found.to_json()
    if lexicon is not None:  # "in" and "kept" count them too
        split_stats["train"]["lexicon_pairs"] = lexicon.num_rows
    dialogue = splits["train"].kind == "dialogue"
    stats = {
        "src_lang": settings.src_lang,
        "tgt_lang": settings.tgt_lang,
        "tokenizer": settings.tokenizer,
        "joint_vocab": not settings.separate_vocab,
        "vocab_size": {"src": _pieces(src_model), "tgt": _pieces(tgt_model)},
        "splits": split_stats,
        **({"dialogue": _dialogue_meta(settings)} if dialogue else {}),
        "settings": settings.to_json(),
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
    }
    # last: on remote storage its presence is what marks the dataset complete (is_prepared)
    (target / STATS).write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    return stats


def lexicon_block(corpus: CorpusInput, settings: PrepareSettings) -> pa.Table | None:
    """The pairs of `settings.lexicon` as one block to add to the `corpus` train split
    (None without a lexicon); "cedict" reads the corpus once to keep the words it uses."""
    if settings.lexicon is None:
        return None
    from pipeline.corpus.lexicon import lexicon_pairs

    options = ReadOptions(clean=True, skip_invalid_utf8=settings.skip_invalid_utf8)
    pairs = lexicon_pairs(
        settings.lexicon, settings.src_lang, settings.tgt_lang, kept_pairs(corpus, options)
    )
    return pairs_block(pairs, LEXICON_FIRST_INDEX, options)


def _dialogue_meta(settings: PrepareSettings) -> dict:
    """How a chat model's source is built (its meta.json keeps it, `nmt chat` follows it)."""
    return {"context_turns": settings.context_turns, "separator": SEPARATOR}


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - started


def _pieces(model: bytes) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model).get_piece_size()


# ---------------------------------------------------------------- sentencepiece


def sample_pairs(corpus: CorpusInput, options: ReadOptions, size: int, seed: int) -> list:
    """A uniform sample of up to `size` kept (src, tgt) pairs, read in one streaming pass
    (reservoir sampling: memory is bounded by `size`, not by the corpus)."""
    rng = random.Random(seed)
    reservoir: list[tuple[str, str]] = []
    for seen, pair in enumerate(kept_pairs(corpus, options), start=1):
        if len(reservoir) < size:
            reservoir.append(pair)
        elif (slot := rng.randrange(seen)) < size:
            reservoir[slot] = pair
    return reservoir


def train_vocab(corpus: CorpusInput, settings: PrepareSettings) -> tuple[bytes, bytes]:
    """(source, target) sentencepiece models trained on a sample of the cleaned train set;
    the same model twice when the vocabulary is joint. A word vocabulary (--tokenizer word)
    is stored as a sentencepiece model too (`pipeline.corpus.tokenizer.train_words`)."""
    from pipeline.corpus.tokenizer import train_sentencepiece

    options = ReadOptions(clean=True, skip_invalid_utf8=settings.skip_invalid_utf8)
    pairs = sample_pairs(corpus, options, settings.spm_sample, settings.seed)
    if not pairs:
        raise UserError(f"the training corpus {', '.join(corpus.paths)} has no usable pairs")

    # the turn separator stays one piece, never split or learnt from the text
    symbols = (SEPARATOR,) if corpus.kind == "dialogue" else ()

    def train(sentences: list[str]) -> bytes:
        try:
            return train_sentencepiece(
                sentences,
                settings.vocab_size,
                settings.character_coverage,
                model_type=settings.tokenizer,
                user_defined_symbols=symbols,
            )
        except RuntimeError as error:
            raise UserError(
                f"sentencepiece could not train a vocabulary ({error}): try a larger "
                "--vocab-size or a --character-coverage below 1.0"
            ) from None

    src, tgt = [s for s, _ in pairs], [t for _, t in pairs]
    if not settings.separate_vocab:
        joint = train(src + tgt)
        return joint, joint
    return train(src), train(tgt)


# ---------------------------------------------------------------- summary


def summary(stats: dict, out: str | Path, seconds: float) -> str:
    """The one-screen report printed at the end of `nmt prepare`."""
    vocab = stats["vocab_size"]
    kind = "joint" if stats["joint_vocab"] else "separate"
    tokenizer = stats.get("tokenizer", "unigram")
    asked = stats.get("settings", {}).get("vocab_size")
    # sentencepiece gives fewer pieces, and a word vocabulary fewer words, when there are no more
    fewer = asked is not None and min(vocab.values()) < asked
    lines = [
        f"\nPrepared {stats['src_lang']}->{stats['tgt_lang']} into {out} in {seconds:.1f}s",
        f"vocabulary: {tokenizer}, {kind}, {vocab['src']} source / {vocab['tgt']} target "
        f"pieces" + (f" (--vocab-size {asked}: the sample gave fewer)" if fewer else ""),
        f"{'split':<24}{'in':>10}{'kept':>10}  {'src len p50/p95/max':>20}  "
        f"{'tgt len p50/p95/max':>20}  {'unk src/tgt':>15}  dropped",
    ]
    for name, split in stats["splits"].items():
        dropped = ", ".join(f"{r} {n}" for r, n in split["dropped"].items()) or "-"
        lines.append(
            f"{name:<24}{split['in']:>10,}{split['kept']:>10,}  "
            f"{_lengths(split['src_len_pct']):>20}  {_lengths(split['tgt_len_pct']):>20}  "
            f"{_unknown(split.get('unk_rate')):>15}  {dropped}"
        )
    for name, split in stats["splits"].items():
        if found := split.get("dialogue"):
            turns = ", ".join(f"{r} {n}" for r, n in found["dropped_turns"].items()) or "none"
            lines.append(
                f"{name}: {found['conversations']:,} conversations, {found['pairs']:,} pairs, "
                f"dropped turns: {turns}"
            )
            lines.extend(f"  {example}" for example in found["examples"])
    return "\n".join(lines)


def _lengths(pct: dict) -> str:
    return f"{pct['p50']}/{pct['p95']}/{pct['max']}" if pct else "-"


def _unknown(rate: dict | None) -> str:
    return f"{rate['src']:.2%}/{rate['tgt']:.2%}" if rate else "-"
