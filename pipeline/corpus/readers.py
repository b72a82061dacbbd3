"""Parallel corpora on disk: finding the files behind `--train/--valid/--test`, and reading
them as a stream of Arrow blocks of (index, src_text, tgt_text, drop) that Ray Data turns
into a dataset.

Three input forms:
- a prefix P with P.<lang> or P.<lang>.gz text files, aligned line by line;
- a .tsv file, source and target in the columns `--src-col/--tgt-col` (0-based);
- Parquet (a file, a directory or a glob) with the columns named by `--src-col/--tgt-col`;
and conversations (`pipeline.corpus.dialogue`: chatterbot-corpus YAML, JSONL), read as
(context -> reply) pairs.

`index` is the 0-based line (row) of the pair in its input, so every prepared pair can be
traced back. `drop` names why the reader dropped a pair (null when kept); dropped pairs still
flow downstream so that every pair read is counted exactly once.
"""

from __future__ import annotations

import functools
import glob
import gzip
import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pipeline.corpus.dialogue import dialogue_rows, is_dialogue_spec, resolve_dialogue
from pipeline.errors import UserError
from pipeline.storage import Location, glob_files, is_uri

BLOCK_ROWS = 8192
REMOTE_READ_BUFFER = 1 << 20  # an object store answers each read with a request: read big
LANG_CODE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]+)*$")
READ_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("src_text", pa.string()),
        ("tgt_text", pa.string()),
        ("drop", pa.string()),
    ]
)


class CorpusError(UserError):
    """Bad input found while reading (raised inside Ray tasks, shown as one line)."""


@dataclass(frozen=True)
class CorpusInput:
    """One resolved `--train/--valid/--test` argument."""

    kind: str  # "text" | "tsv" | "parquet" | "dialogue"
    # text: (src file, tgt file); tsv: (file,); parquet: sorted files. Local paths or URIs.
    paths: tuple[str, ...]
    name: str  # the split name for tests: basename without language/extension
    src_col: str | int | None = None
    tgt_col: str | int | None = None
    row_counts: tuple[int, ...] = field(default=(), compare=False)  # parquet rows per file
    context_turns: int = 1  # dialogue: the turns before a reply that are its source
    part: str | None = None  # dialogue: the held-out part read ("train", ...); None: all


@dataclass(frozen=True)
class ReadOptions:
    """How a reader cleans: `clean` (train only) normalises and drops empty/duplicate pairs."""

    clean: bool = False
    dedup: bool = False
    skip_invalid_utf8: bool = False
    block_rows: int = BLOCK_ROWS


def check_lang(code: str) -> str:
    if not LANG_CODE.match(code):
        raise UserError(f"'{code}' is not a language code: use ISO codes such as de, en, zh, pt-BR")
    return code


def resolve_input(
    spec: str,
    src_lang: str,
    tgt_lang: str,
    src_col: str | None,
    tgt_col: str | None,
    context_turns: int = 1,
) -> CorpusInput:
    """What `spec` (a local path or a URI) names: a text prefix, a .tsv file, Parquet or
    conversations; a UserError otherwise."""
    if is_dialogue_spec(spec):
        files, name, part = resolve_dialogue(spec)
        return CorpusInput("dialogue", files, name, context_turns=context_turns, part=part)
    base = _without_query(spec)
    if base.endswith((".tsv", ".tsv.gz")):
        return _tsv_input(spec, src_col, tgt_col)
    if base.endswith(".parquet") or _has_wildcard(spec) or Location.of(spec).is_dir():
        return _parquet_input(spec, src_col, tgt_col)
    return _text_input(spec, src_lang, tgt_lang)


def _without_query(spec: str) -> str:
    """`spec` without a URI's "?query" (in a local path, "?" is just a character)."""
    return spec.partition("?")[0] if is_uri(spec) else spec


def _with_suffix(spec: str, suffix: str) -> str:
    """`spec` + `suffix`, put before a URI's query: s3://b/p?x=1 -> s3://b/p.de?x=1."""
    base, mark, query = spec.partition("?") if is_uri(spec) else (spec, "", "")
    return f"{base}{suffix}{mark}{query}"


def _has_wildcard(spec: str) -> bool:
    # in a URI "?" starts the query, so only "*" and "[" are wildcards (as in glob_files)
    return any(c in _without_query(spec) for c in "*[") if is_uri(spec) else glob.has_magic(spec)


def _name(spec: str) -> str:
    return PurePosixPath(_without_query(spec)).name


def _text_input(prefix: str, src_lang: str, tgt_lang: str) -> CorpusInput:
    files = tuple(_language_file(prefix, lang) for lang in (src_lang, tgt_lang))
    return CorpusInput("text", files, _name(prefix))


def _language_file(prefix: str, lang: str) -> str:
    for candidate in (_with_suffix(prefix, f".{lang}"), _with_suffix(prefix, f".{lang}.gz")):
        if Location.of(candidate).is_file():
            return candidate
    found = sorted(
        {name[len(_name(prefix)) + 1 :].removesuffix(".gz") for name in _siblings(prefix)}
    )
    shown = _without_query(prefix)
    if found:
        raise UserError(
            f"no {shown}.{lang}[.gz]; that prefix has languages {', '.join(found)}: "
            "check --src-lang/--tgt-lang"
        )
    raise UserError(
        f"no {shown}.{lang}[.gz]: give a prefix P with files P.<lang>[.gz], "
        "a .tsv file (with --src-col/--tgt-col) or Parquet"
    )


def _siblings(prefix: str) -> list[str]:
    """Names of the files P.* beside the prefix P."""
    location = Location.of(prefix)
    if not location.parent.is_dir():
        return []
    named = [c for c in location.parent.children() if c.name.startswith(f"{location.name}.")]
    return [c.name for c in named if c.is_file()]


def _tsv_input(path: str, src_col: str | None, tgt_col: str | None) -> CorpusInput:
    if not Location.of(path).is_file():
        raise UserError(f"{path} does not exist")
    try:
        columns = int(src_col), int(tgt_col)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(
            f"{path} is a .tsv file: give --src-col and --tgt-col as 0-based column numbers"
        ) from None
    name = _name(path).removesuffix(".gz").removesuffix(".tsv")
    return CorpusInput("tsv", (path,), name, *columns)


def _parquet_input(spec: str, src_col: str | None, tgt_col: str | None) -> CorpusInput:
    files = _parquet_files(spec)
    path, wildcard = PurePosixPath(_without_query(spec)), _has_wildcard(spec)
    if not wildcard and Location.of(spec).is_dir():
        name = path.name
    else:
        name = path.name.removesuffix(".parquet") if not wildcard else ""
        name = name or path.parent.name
    if not files:
        raise UserError(f"no Parquet files at {spec}")
    if not src_col or not tgt_col:
        raise UserError(f"{spec} is Parquet: give --src-col and --tgt-col as column names")
    counts = tuple(_check_parquet_file(f, (src_col, tgt_col)) for f in files)
    return CorpusInput("parquet", tuple(files), name, src_col, tgt_col, counts)


def _parquet_files(spec: str) -> list[str]:
    """The sorted *.parquet files below a directory, or those a file path or glob names."""
    if not is_uri(spec):
        if Path(spec).is_dir():
            return sorted(str(p) for p in Path(spec).rglob("*.parquet"))
        return sorted(glob.glob(spec))
    if not _has_wildcard(spec) and Location.of(spec).is_dir():
        return [f.uri for f in Location.of(spec).files() if f.name.endswith(".parquet")]
    return glob_files(spec)


def _parquet_file(path: str) -> pq.ParquetFile:
    location = Location.of(path)
    return pq.ParquetFile(location.path, filesystem=location.filesystem)


def _check_parquet_file(path: str, columns: tuple[str, str]) -> int:
    """Rows in `path`, after checking it has `columns` (metadata only, no data read)."""
    try:
        file = _parquet_file(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise UserError(f"cannot read {path} as Parquet: {error}") from None
    missing = [c for c in columns if c not in file.schema_arrow.names]
    if missing:
        raise UserError(
            f"{path} has no column {', '.join(missing)}; its columns are "
            f"{', '.join(file.schema_arrow.names)}: check --src-col/--tgt-col"
        )
    return file.metadata.num_rows


# ---------------------------------------------------------------- reading


def read_blocks(corpus: CorpusInput, options: ReadOptions) -> Iterator[pa.Table]:
    """All pairs of `corpus` as Arrow blocks of READ_SCHEMA, in input order."""
    yield from _cleaned(_raw_blocks(corpus, range(len(corpus.paths)), options), options)


def kept_pairs(corpus: CorpusInput, options: ReadOptions) -> Iterator[tuple[str, str]]:
    """The (src, tgt) texts of the pairs of `corpus` its reading keeps, in input order."""
    for block in read_blocks(corpus, options):
        live = block.filter(block["drop"].is_null())
        yield from zip(live["src_text"].to_pylist(), live["tgt_text"].to_pylist(), strict=True)


def pairs_block(pairs: list[tuple[str, str]], start: int, options: ReadOptions) -> pa.Table:
    """In-memory (src, tgt) pairs as one READ_SCHEMA block, cleaned as a read would, its
    index counting from `start`."""
    src, tgt = zip(*pairs, strict=True) if pairs else ((), ())
    return next(_cleaned(iter([_block(start, list(src), list(tgt))]), options))


def _raw_blocks(corpus: CorpusInput, files: range, options: ReadOptions) -> Iterator[pa.Table]:
    if corpus.kind == "text":
        return _text_pair_blocks(*corpus.paths, options)
    if corpus.kind == "tsv":
        return _tsv_blocks(corpus.paths[0], int(corpus.src_col), int(corpus.tgt_col), options)
    if corpus.kind == "dialogue":
        return _dialogue_blocks(corpus, options)
    return _parquet_blocks(corpus, files, options)


def _dialogue_blocks(corpus: CorpusInput, options: ReadOptions) -> Iterator[pa.Table]:
    rows = dialogue_rows(corpus.paths, corpus.context_turns, corpus.part)
    while chunk := list(itertools.islice(rows, options.block_rows)):
        index, src, tgt, drop = zip(*chunk, strict=True)
        arrays = [pa.array(index, pa.int64()), src, tgt, pa.array(drop, pa.string())]
        yield pa.Table.from_arrays(arrays, schema=READ_SCHEMA)


def _open_binary(path: str) -> BinaryIO:
    if is_uri(path):  # through pyarrow's filesystem layer, gunzipped by pyarrow
        location = Location.of(path)
        stream = location.filesystem.open_input_stream(
            location.path,
            compression="gzip" if location.path.endswith(".gz") else None,
            buffer_size=REMOTE_READ_BUFFER,
        )
        return io.BufferedReader(stream, REMOTE_READ_BUFFER)  # NativeFile has no line iterator
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _line_chunks(path: str, size: int) -> Iterator[list[bytes]]:
    with _open_binary(path) as handle:
        try:
            while chunk := list(itertools.islice(handle, size)):
                yield chunk
        except (gzip.BadGzipFile, EOFError, OSError) as error:
            raise CorpusError(f"cannot read {path}: {error}") from None


def _decode(lines: list[bytes], path: str, first_line: int, skip: bool) -> list[str | None]:
    """UTF-8 text of each line (None where invalid and `skip`); `first_line` is 0-based."""
    try:
        return [line.rstrip(b"\r\n").decode() for line in lines]
    except UnicodeDecodeError:
        pass
    decoded: list[str | None] = []
    for number, line in enumerate(lines, start=first_line + 1):
        try:
            decoded.append(line.rstrip(b"\r\n").decode())
        except UnicodeDecodeError as error:
            if not skip:
                raise CorpusError(
                    f"{path} line {number} is not valid UTF-8 ({error.reason} at byte "
                    f"{error.start}): fix the file or pass --skip-invalid-utf8"
                ) from None
            decoded.append(None)
    return decoded


def _text_pair_blocks(src_path: str, tgt_path: str, options: ReadOptions) -> Iterator[pa.Table]:
    size = options.block_rows
    start = 0
    for src_lines, tgt_lines in itertools.zip_longest(
        _line_chunks(src_path, size), _line_chunks(tgt_path, size), fillvalue=[]
    ):
        if len(src_lines) != len(tgt_lines):
            _raise_misaligned(src_path, tgt_path)
        src = _decode(src_lines, src_path, start, options.skip_invalid_utf8)
        tgt = _decode(tgt_lines, tgt_path, start, options.skip_invalid_utf8)
        yield _block(start, src, tgt)
        start += len(src_lines)


def _raise_misaligned(src_path: str, tgt_path: str) -> None:
    counts = [sum(len(c) for c in _line_chunks(p, 1 << 16)) for p in (src_path, tgt_path)]
    raise CorpusError(
        f"{src_path} has {counts[0]} lines but {tgt_path} has {counts[1]}: "
        "the two files must be aligned line by line"
    )


def _tsv_blocks(path: str, src_col: int, tgt_col: int, options: ReadOptions) -> Iterator[pa.Table]:
    start = 0
    for lines in _line_chunks(path, options.block_rows):
        rows = _decode(lines, path, start, options.skip_invalid_utf8)
        src, tgt = [], []
        for number, row in enumerate(rows, start=start + 1):
            fields = row.split("\t") if row is not None else None
            if fields is not None and len(fields) <= max(src_col, tgt_col):
                raise CorpusError(
                    f"{path} line {number} has {len(fields)} tab-separated columns, "
                    f"so no column {max(src_col, tgt_col)}: check --src-col/--tgt-col"
                )
            src.append(fields[src_col] if fields else None)
            tgt.append(fields[tgt_col] if fields else None)
        yield _block(start, src, tgt)
        start += len(lines)


def _parquet_blocks(corpus: CorpusInput, files: range, options: ReadOptions) -> Iterator[pa.Table]:
    columns = [corpus.src_col, corpus.tgt_col]
    for file_number in files:
        start = sum(corpus.row_counts[:file_number])
        parquet = _parquet_file(corpus.paths[file_number])
        for batch in parquet.iter_batches(batch_size=options.block_rows, columns=columns):
            src, tgt = (batch.column(c).cast(pa.string()) for c in columns)
            yield _block(start, src, tgt)
            start += batch.num_rows


def _block(start: int, src, tgt) -> pa.Table:
    """A READ_SCHEMA block; a pair with a missing (undecodable or null) side is dropped."""
    src, tgt = pa.array(src, pa.string()), pa.array(tgt, pa.string())
    invalid = pc.or_(pc.is_null(src), pc.is_null(tgt))
    drop = pc.if_else(invalid, pa.scalar("invalid_utf8"), pa.scalar(None, pa.string()))
    index = pa.array(np.arange(start, start + len(src), dtype=np.int64))
    return pa.Table.from_arrays(
        [index, pc.fill_null(src, ""), pc.fill_null(tgt, ""), drop], schema=READ_SCHEMA
    )


# ---------------------------------------------------------------- cleaning (train only)


def _cleaned(blocks: Iterator[pa.Table], options: ReadOptions) -> Iterator[pa.Table]:
    seen: set[int] = set()
    for block in blocks:
        if options.clean:
            block = _normalise(block)
            block = _mark(block, _empty_mask(block), "empty")
        if options.dedup:
            block = _mark(block, _duplicate_mask(block, seen), "duplicate")
        yield block


# What the regex \s (RE2: [\t\n\f\r ]) can change: a run of spaces or any other of them.
WHITESPACE_TO_COLLAPSE = ("  ", "\t", "\n", "\f", "\r")


def normalise_text(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """NFKC (full-width forms, ligatures) and single spaces; the same as sentencepiece's
    own normalisation, done up front so that duplicates and empty sides are found.

    Each costly step runs only on the strings it can change (NFKC leaves ASCII alone; the
    whitespace regex only matters where there is a run or a tab, newline, ...): about twice
    as fast on Multi30K German, four times on English, with the same result."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    not_ascii = pc.invert(pc.string_is_ascii(texts))
    texts = _apply_where(not_ascii, texts, lambda t: pc.utf8_normalize(t, form="NFKC"))
    spaces = [pc.match_substring(texts, pattern) for pattern in WHITESPACE_TO_COLLAPSE]
    collapse = functools.reduce(pc.or_, spaces)
    texts = _apply_where(
        collapse, texts, lambda t: pc.replace_substring_regex(t, pattern=r"\s+", replacement=" ")
    )
    return pc.utf8_trim_whitespace(texts)


def _apply_where(mask: pa.Array, texts: pa.Array, function) -> pa.Array:
    """`texts` with `function` applied to the rows where `mask` holds (only to those)."""
    if not pc.any(mask).as_py():
        return texts
    return pc.replace_with_mask(texts, mask, function(pc.filter(texts, mask)))


def _normalise(block: pa.Table) -> pa.Table:
    for column in ("src_text", "tgt_text"):
        position = block.schema.get_field_index(column)
        block = block.set_column(position, column, normalise_text(block[column]))
    return block


def _empty_mask(block: pa.Table) -> pa.ChunkedArray:
    return pc.or_(
        pc.equal(pc.utf8_length(block["src_text"]), 0),
        pc.equal(pc.utf8_length(block["tgt_text"]), 0),
    )


def _duplicate_mask(block: pa.Table, seen: set[int]) -> np.ndarray:
    """True for a pair whose exact (src, tgt) text came earlier; `seen` holds 64-bit hashes
    (a stable siphash, the same in every process) of the pairs kept so far."""
    keys = pc.binary_join_element_wise(block["src_text"], block["tgt_text"], "\x00")
    hashes = pd.util.hash_array(np.asarray(keys.to_numpy(zero_copy_only=False), dtype=object))
    live = pc.is_null(block["drop"]).to_numpy(zero_copy_only=False)
    duplicate = np.zeros(len(hashes), dtype=bool)
    for row, value in enumerate(hashes.tolist()):
        if live[row]:
            duplicate[row] = value in seen
            seen.add(value)
    return duplicate


def _mark(block: pa.Table, mask, reason: str) -> pa.Table:
    """Set `drop` to `reason` where `mask` holds and no earlier reason was given."""
    drop = block["drop"]
    new = pc.if_else(pc.and_(mask, pc.is_null(drop)), pa.scalar(reason), drop)
    return block.set_column(block.schema.get_field_index("drop"), "drop", new)


# ---------------------------------------------------------------- Ray Data source


class ParallelCorpusDatasource(Datasource):
    """A Ray Data source for one corpus input. Text and TSV inputs are one read task (a
    gzip stream cannot be split, and line alignment needs both files read together);
    Parquet is one task per file, or one in all when deduplicating (the seen-set must see
    every pair in order, so the first occurrence is the one kept)."""

    def __init__(self, corpus: CorpusInput, options: ReadOptions) -> None:
        super().__init__()
        self.corpus = corpus
        self.options = options

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def _file_groups(self) -> list[range]:
        if self.corpus.kind == "parquet" and not self.options.dedup:
            return [range(i, i + 1) for i in range(len(self.corpus.paths))]
        return [range(len(self.corpus.paths))]

    def num_read_tasks(self) -> int:
        return len(self._file_groups())

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
        return [self._task(files) for files in self._file_groups()]

    def _task(self, files: range) -> ReadTask:
        corpus, options = self.corpus, self.options
        rows = sum(corpus.row_counts[files.start : files.stop]) if corpus.row_counts else None
        metadata = BlockMetadata(
            num_rows=rows,
            size_bytes=None,
            input_files=[corpus.paths[i] for i in files],
            exec_stats=None,
        )

        def read() -> Iterator[pa.Table]:
            return _cleaned(_raw_blocks(corpus, files, options), options)

        return ReadTask(read, metadata, schema=READ_SCHEMA)
