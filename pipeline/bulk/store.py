"""The files of a bulk translation job: work units, atomic outputs, resume and the manifest.

An input store is cut into fragments: runs of at most `rows_per_fragment` rows inside one
row group of one input file. Each fragment becomes exactly one output file, named after
its input file, row group and first row, so a retried or resumed fragment overwrites its
own output and nothing else. Outputs are written under a `_tmp.` name (which Parquet
readers skip, like every name starting with `_` or `.`) and renamed when complete; the
rename is atomic, so a file with the final name is a whole fragment (on object stores the
"rename" is a copy of one object, which is atomic too). The job's settings are written to
`_job.json` first, the `_SUCCESS` manifest last.

Inputs and outputs are local paths or filesystem URIs (`pipeline.storage`): a file is named
by its path or URI everywhere, so actors on any node can open it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import UserError
from pipeline.storage import Location, glob_files

JOB_FILE = "_job.json"
MANIFEST_FILE = "_SUCCESS"
TEMP_PREFIX = "_tmp."
# Job settings that later versions added to the job file, with the value that a job written
# before them ran with: it resumes with that value, and is refused with another.
SETTINGS_BEFORE_RECORDED = {
    "beam_prune": 0.0,
    "precision": "fp32",
    "alpha": 0.6,
    "max_len_a": 1.5,
    "max_len_b": 10,
    "source_lang_column": None,
    "detect_source": False,
    "target_lang": None,
    # before sampling existed, every job ran beam (or greedy) search without n-gram bans
    "sample": False,
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "seed": None,
    "no_repeat_ngram": 0,
    "glossary_column": None,
    "score_column": None,
    "signals": False,
    "candidates_frequent": 0,  # before candidate lists, the whole vocabulary
    "candidates_per_source": 0,
}
SENTENCES_KEY = b"nmt.sentences"  # Parquet footer metadata: sentences in the fragment


@dataclass(frozen=True)
class Fragment:
    """Rows [start, start + num_rows) of row group `row_group` of `path`."""

    path: str  # a local path or a URI
    row_group: int
    start: int
    num_rows: int
    output_name: str


def find_inputs(pattern: str) -> list[str]:
    """The Parquet files a glob (or a directory, or one file) names, sorted."""
    files = glob_files(pattern)
    if not files:
        raise UserError(
            f"--input {pattern!r} matches no files (quote a glob so that the shell passes it on)"
        )
    return files


def plan_fragments(files: list[str], rows_per_fragment: int) -> list[Fragment]:
    """Cut every input file into fragments, reading only the Parquet footers."""
    fragments = []
    for path in files:
        stem = Location.of(path).name.removesuffix(".parquet")
        prefix = f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"
        metadata = read_metadata(path)
        for group in range(metadata.num_row_groups):
            group_rows = metadata.row_group(group).num_rows
            for start in range(0, group_rows, rows_per_fragment):
                count = min(rows_per_fragment, group_rows - start)
                name = f"{prefix}-g{group:05d}-r{start:010d}.parquet"
                fragments.append(Fragment(path, group, start, count, name))
    return fragments


def read_metadata(path: str | Location) -> pq.FileMetaData:
    location = Location.of(path)
    try:
        return pq.read_metadata(location.path, filesystem=location.filesystem)
    except (OSError, pa.ArrowInvalid) as error:
        raise UserError(f"{location} is not a readable Parquet file: {error}") from None


def read_column(path: str | Location, column: str) -> pa.ChunkedArray:
    location = Location.of(path)
    try:
        table = pq.read_table(location.path, columns=[column], filesystem=location.filesystem)
    except (OSError, pa.ArrowException) as error:
        first_line = (str(error).strip() or repr(error)).splitlines()[0]
        raise UserError(f"cannot read column {column!r} of {location}: {first_line}") from None
    return table[column]


def read_schema(path: str) -> pa.Schema:
    return read_metadata(path).schema.to_arrow_schema()


def read_fragment(fragment: Fragment) -> pa.Table:
    """The fragment's rows, streaming through its row group rather than loading it whole."""
    location = Location.of(fragment.path)
    parquet_file = pq.ParquetFile(location.filesystem.open_input_file(location.path))
    end = fragment.start + fragment.num_rows
    pieces, offset = [], 0
    for batch in parquet_file.iter_batches(
        batch_size=fragment.num_rows, row_groups=[fragment.row_group]
    ):
        low, high = max(fragment.start - offset, 0), min(end - offset, batch.num_rows)
        if low < high:
            pieces.append(batch.slice(low, high - low))
        offset += batch.num_rows
        if offset >= end:
            break
    return pa.Table.from_batches(pieces, parquet_file.schema_arrow)


class InjectedFailure(RuntimeError):
    """Raised on purpose by tests: a writer dying between writing and renaming."""


def write_atomically(
    table: pa.Table, path: Location, sentences: int, fail_before_rename: bool = False
) -> None:
    """Write `table` to `path` through a temporary name, so `path` exists only when whole."""
    metadata = {**(table.schema.metadata or {}), SENTENCES_KEY: str(sentences).encode()}
    temp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}.{path.name}.tmp"
    pq.write_table(table.replace_schema_metadata(metadata), temp.path, filesystem=temp.filesystem)
    if fail_before_rename:
        raise InjectedFailure(f"injected failure before renaming {temp.name}")
    temp.move_to(path)


def finished_outputs(output_dir: str | Path | Location) -> set[str]:
    """Names of the whole output files in `output_dir` (one listing, not a request each)."""
    output_dir = Location.of(output_dir)
    return {f.name for f in output_dir.files(recursive=False) if f.name.endswith(".parquet")}


def remove_temporary_files(output_dir: str | Path | Location) -> int:
    """Delete what killed writers left behind; returns how many."""
    output_dir = Location.of(output_dir)
    leftovers = [f for f in output_dir.files(recursive=False) if f.name.startswith(TEMP_PREFIX)]
    for leftover in leftovers:
        leftover.delete()
    return len(leftovers)


def prepare_output_dir(output_dir: str | Path | Location, job: dict, resume: bool) -> None:
    """Claim `output_dir` for `job`, or check that `--resume` continues the same job."""
    output_dir = Location.of(output_dir)
    existing = [p.name for p in output_dir.children()]
    if existing and not resume:
        raise UserError(
            f"output dir {output_dir} already holds {len(existing)} files (another job's "
            "results?); pass --resume to finish the job that wrote them, or choose an empty dir"
        )
    job_file = output_dir / JOB_FILE
    if existing and not job_file.is_file():
        raise UserError(f"{output_dir} was not written by nmt bulk-translate (no {JOB_FILE})")
    if existing:
        previous = {**SETTINGS_BEFORE_RECORDED, **json.loads(job_file.read_text())}
        changed = sorted(k for k in job.keys() | previous.keys() if job.get(k) != previous.get(k))
        if changed:
            raise UserError(
                f"{output_dir} holds another job's results ({', '.join(changed)} differ); "
                "rerun with that job's settings, or choose an empty output dir"
            )
        (output_dir / MANIFEST_FILE).delete()  # finished again below
        remove_temporary_files(output_dir)
        return
    output_dir.mkdir()
    job_file.write_text(json.dumps(job, indent=2))


@dataclass
class Counts:
    rows_in: int = 0
    rows_out: int = 0
    rows_with_errors: int = 0
    sentences: int = 0


def count_outputs(
    fragments: list[Fragment],
    output_dir: str | Path | Location,
    error_column: str,
    id_column: str | None,
) -> tuple[Counts, list[str]]:
    """Counts over the finished outputs (footers only, plus ids when given), and a line for
    each input file whose outputs do not hold exactly its rows."""
    output_dir = Location.of(output_dir)
    counts, problems = Counts(), []
    by_input: dict[str, list[Fragment]] = {}
    for fragment in fragments:
        by_input.setdefault(fragment.path, []).append(fragment)
    finished = finished_outputs(output_dir)
    for path, parts in by_input.items():
        rows_in = sum(f.num_rows for f in parts)
        outputs = [output_dir / f.output_name for f in parts]
        present = [p for p in outputs if p.name in finished]
        rows_out = 0
        for output in present:
            metadata = read_metadata(output)
            rows_out += metadata.num_rows
            counts.sentences += int((metadata.metadata or {}).get(SENTENCES_KEY, b"0"))
            column = read_column(output, error_column)
            counts.rows_with_errors += len(column) - column.null_count
        counts.rows_in += rows_in
        counts.rows_out += rows_out
        if rows_out != rows_in:
            missing = len(outputs) - len(present)
            problems.append(
                f"{path}: {rows_in} rows in, {rows_out} out ({missing} fragments missing)"
            )
        elif id_column and (problem := _id_problem(path, present, id_column)):
            problems.append(problem)
    return counts, problems


def _id_problem(path: str, outputs: list[Location], id_column: str) -> str | None:
    """How the outputs' ids differ from the input's (in the input's order, each once), or
    None when they do not."""
    ids_in = read_column(path, id_column).combine_chunks()
    ids_out = (
        pa.concat_arrays([chunk for out in outputs for chunk in read_column(out, id_column).chunks])
        if outputs
        else pa.array([], ids_in.type)
    )
    if ids_in.equals(ids_out):
        return None
    counts_in, counts_out = dict(value_counts(ids_in)), dict(value_counts(ids_out))
    missing = sum(max(0, n - counts_out.get(v, 0)) for v, n in counts_in.items())
    extra = sum(max(0, n - counts_in.get(v, 0)) for v, n in counts_out.items())
    order = " (in another order)" if not (missing or extra) else ""
    return (
        f"{path}: the {id_column!r} values of the outputs differ from the input{order}: "
        f"{missing} missing, {extra} extra"
    )


def value_counts(values: pa.Array | pa.ChunkedArray) -> list[tuple[object, int]]:
    """(value, count) of each distinct value, first seen first."""
    counted = pc.value_counts(values)
    values_, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
    return list(zip(values_, counts, strict=True))


def repeated_ids(files: list[str], id_column: str) -> list[tuple[object, int]]:
    """The ids that appear more than once across `files`, with their counts (first seen
    first); one column of every file, read in turn."""
    chunks = [chunk for path in files for chunk in read_column(path, id_column).chunks]
    ids = pa.chunked_array(chunks, read_schema(files[0]).field(id_column).type)
    return [(value, count) for value, count in value_counts(ids) if count > 1]


def write_manifest(output_dir: str | Path | Location, manifest: dict) -> None:
    """The `_SUCCESS` manifest, written last and atomically: its presence means done."""
    output_dir = Location.of(output_dir)
    temp = output_dir / f"{TEMP_PREFIX}{MANIFEST_FILE}"
    temp.write_text(json.dumps(manifest, indent=2) + "\n")
    temp.move_to(output_dir / MANIFEST_FILE)
