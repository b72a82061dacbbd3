"""The Ray Data pipeline of `nmt prepare`, one split at a time:

  read_datasource(ParallelCorpusDatasource)        one streaming read task per input
    -> map_batches(TokenizePairs, pyarrow)          actor pool: sentencepiece loads once per actor
    -> write_datasink(PreparedSplitSink)            Parquet shards + counts/histograms

Blocks stream through with Ray Data's backpressure, so memory does not grow with the corpus.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pyarrow as pa
import ray

from pipeline.corpus.readers import CorpusInput, ParallelCorpusDatasource, ReadOptions
from pipeline.errors import UserError
from pipeline.prepare.settings import PrepareSettings
from pipeline.prepare.stages import LengthFilter, PreparedSplitSink, TokenizePairs
from pipeline.storage import Location

# Reading and writing are light next to sentencepiece, so they get small CPU shares and the
# tokenizer actors a whole CPU each; the OS shares the cores out by actual use.
READ_CPUS = 0.25
WRITE_CPUS = 0.25
TOKENIZER_CPUS = 1.0
BATCH_ROWS = 8192
ROWS_PER_FILE = 200_000
TARGET_BLOCK_BYTES = 4 << 20


def start_ray() -> None:
    """Connect to the cluster (RAY_ADDRESS, or the one a Ray job runs in), or start a local
    one; a process that already called ray.init() keeps its own."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level="WARNING")
    else:  # a cluster that lives as long as this command: no dashboard to start
        ray.init(logging_level="WARNING", include_dashboard=False)


def tokenizer_actors(requested: int | None) -> int:
    """`requested`, or as many actors as whole CPUs remain after the read/write shares."""
    if requested is not None:
        if requested < 1:
            raise UserError(f"--workers must be at least 1, not {requested}")
        return requested
    cpus = ray.cluster_resources().get("CPU", 1)
    return max(1, int((cpus - READ_CPUS - WRITE_CPUS) // TOKENIZER_CPUS) or 1)


def run_split(
    corpus: CorpusInput,
    directory: Location,
    src_model: bytes,
    tgt_model: bytes,
    settings: PrepareSettings,
    is_train: bool,
    extra: pa.Table | None = None,
) -> dict:
    """Read, tokenize and write one split into `directory` (local or remote), with the
    READ_SCHEMA pairs of `extra` (a lexicon's) added; returns its stats.json entry."""
    options = ReadOptions(
        clean=is_train,
        dedup=is_train and settings.dedup,
        skip_invalid_utf8=settings.skip_invalid_utf8,
        block_rows=BATCH_ROWS,
    )
    length_filter = LengthFilter(settings.max_len, settings.max_ratio) if is_train else None
    sink = PreparedSplitSink(directory, ROWS_PER_FILE)
    try:
        with _block_size(TARGET_BLOCK_BYTES):  # a Dataset copies the context it is made in
            dataset = _tokenized(
                ParallelCorpusDatasource(corpus, options),
                extra,
                src_model,
                tgt_model,
                length_filter,
                is_train,
                settings.workers,
            )
            dataset.write_datasink(sink, ray_remote_args={"num_cpus": WRITE_CPUS})
    except Exception as error:
        raise _as_user_error(error) from None
    _check_not_empty(corpus, sink, is_train)
    return sink.stats.to_json()


def _tokenized(
    source: ParallelCorpusDatasource,
    extra: pa.Table | None,
    src_model: bytes,
    tgt_model: bytes,
    length_filter: LengthFilter | None,
    is_train: bool,
    workers: int | None,
) -> ray.data.Dataset:
    dataset = ray.data.read_datasource(
        source,
        num_cpus=READ_CPUS,
        # one output stream per read task: Ray Data would otherwise split every block it
        # reads into many small ones to reach its default parallelism
        override_num_blocks=source.num_read_tasks(),
    )
    if extra is not None:
        dataset = dataset.union(ray.data.from_arrow(extra))
    return dataset.map_batches(
        TokenizePairs,
        fn_constructor_args=(src_model, tgt_model, length_filter, not is_train),
        batch_format="pyarrow",
        batch_size=BATCH_ROWS,
        compute=ray.data.ActorPoolStrategy(size=tokenizer_actors(workers)),
        num_cpus=TOKENIZER_CPUS,
        udf_modifying_row_count=False,
    )


@contextlib.contextmanager
def _block_size(target_bytes: int) -> Iterator[None]:
    """Ray Data merges the blocks a task yields up to `target_max_block_size` (128 MiB by
    default), which would turn a text corpus into one block: read at once, tokenized by one
    actor. Small blocks stream and spread over the actor pool."""
    context = ray.data.DataContext.get_current()
    previous, context.target_max_block_size = context.target_max_block_size, target_bytes
    try:
        yield
    finally:
        context.target_max_block_size = previous


def _as_user_error(error: BaseException) -> BaseException:
    """The UserError (bad input found in a Ray task) behind `error`, or `error` itself.

    Ray wraps task errors (RayTaskError, Ray Data's UserCodeException); the cause chain
    leads back to what the reader raised."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)  # RayTaskError: the exception the task raised
        for candidate in (cause, current):
            if isinstance(candidate, UserError) and not hasattr(candidate, "cause"):
                # Ray Data appends its retry advice to the message: keep our one line
                return UserError(str(candidate.args[0]).splitlines()[0])
        current = cause or current.__cause__ or current.__context__
    return error


def _check_not_empty(corpus: CorpusInput, sink: PreparedSplitSink, is_train: bool) -> None:
    where = ", ".join(corpus.paths)
    if sink.stats.rows_in == 0:
        raise UserError(f"{where} has no sentence pairs: check the path")
    if is_train and sink.stats.kept == 0:
        raise UserError(
            f"every pair of {where} was dropped ({dict(sink.stats.dropped)}): check the "
            "languages and columns, or loosen --max-len/--max-ratio"
        )
