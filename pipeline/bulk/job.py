"""Bulk translation: translate a Parquet document store offline, exactly once, resumably.

    bulk_translate("runs/exp/de-en", "store/*.parquet", "out/", BulkOptions("text"))
    bulk_translate(["runs/exp/de-en", "zh-en=runs/exp/zh-en"], ..., BulkOptions(
        "text", source_lang_column="lang", target_lang="en"))   # rows routed by language

The store is cut into fragments (row-group slices, see `pipeline.bulk.store`), and Ray Data
streams them through a fixed pool of actors: each actor loads the model once, then reads a
fragment, translates its documents sentence by sentence, and writes its output file under a
temporary name, renamed when whole. With `via_serve` the actors hold no model and send the
sentences to the running Serve deployment instead. Only fragment counts come back to the
driver, so memory stays bounded by one fragment per actor however large the store is.

Finishing means: every input row is in exactly one output file (checked from the footers,
and by id when an id column is given), then the `_SUCCESS` manifest is written. A killed
job leaves only whole outputs; `resume` skips them and translates the rest.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from tqdm import tqdm

from pipeline.bulk.routing import RowRouting, plan_routing
from pipeline.bulk.store import (
    Fragment,
    count_outputs,
    find_inputs,
    finished_outputs,
    plan_fragments,
    prepare_output_dir,
    read_schema,
    repeated_ids,
    write_manifest,
)
from pipeline.bulk.worker import (
    ServeWorker,
    TranslatorWorker,
    WorkerSettings,
    fail_injection_from_env,
)
from pipeline.errors import UserError
from pipeline.serve.options import APP_NAME, TRANSLATOR_DEPLOYMENT
from pipeline.storage import Location
from pipeline.translate.catalog import ModelEntry
from pipeline.translate.settings import SAMPLING_FIELDS, DecodeSettings

ERROR_COLUMN = "error"
# The decoding settings a job file records: --resume refuses to mix outputs that differ in them.
RECORDED_DECODING = (
    "beam_size",
    "alpha",
    "beam_prune",
    "precision",
    "max_len_a",
    "max_len_b",
    "candidates_frequent",
    "candidates_per_source",
) + SAMPLING_FIELDS


class IncompleteOutput(RuntimeError):
    """The outputs do not hold every input row exactly once."""


class JobFailed(RuntimeError):
    """Translation stopped part-way; finished outputs are kept. The cause chained to it
    carries the failure's traceback as text."""


@dataclass(frozen=True)
class BulkOptions:
    text_column: str
    id_column: str | None = None
    target_column: str = "translation"
    decoding: DecodeSettings = DecodeSettings()  # its n_best is ignored: one text per row
    workers: int | None = None  # default: one per GPU with gpu, else one per cpus_per_worker
    cpus_per_worker: int = 1
    gpu: bool = False
    via_serve: bool = False
    serve_app: str = APP_NAME  # the application `nmt serve` runs
    resume: bool = False
    rows_per_fragment: int = 1000  # documents per output file: the unit of work and resume
    max_chars: int = 20_000  # longer documents get an error instead of a translation
    # Routing rows among several models: by a column of language codes, or by detection,
    # into target_lang (None: the one language every model translates into).
    source_lang_column: str | None = None
    detect_source: bool = False
    target_lang: str | None = None
    show_progress: bool = True
    # A column of per-row glossaries (map<string, string>, or a JSON object as a string):
    # each sentence's translation contains the target terms of the source terms it holds.
    glossary_column: str | None = None
    # Score each row's (text, translation in this column) instead of translating it.
    score_column: str | None = None
    signals: bool = False  # add the quality-signal columns

    def __post_init__(self) -> None:
        if self.via_serve and (self.glossary_column or self.score_column or self.signals):
            raise UserError(
                "--glossary-column, --score-column and --signals need the job's own models: "
                "drop --via-serve"
            )
        if self.score_column and (self.glossary_column or self.signals):
            raise UserError("--score-column scores; it takes no --glossary-column or --signals")

    @property
    def added_columns(self) -> list[str]:
        """The columns the output adds to the input's."""
        from pipeline.bulk.worker import SCORE_COLUMNS, SIGNAL_COLUMNS

        added = list(SCORE_COLUMNS) if self.score_column else [self.target_column]
        return [*added, *(SIGNAL_COLUMNS if self.signals else ()), ERROR_COLUMN]


def bulk_translate(
    model: str | Sequence[str] | None, input: str, output: str, options: BulkOptions
) -> dict:
    """Translate every document of the Parquet files `input` (a glob or a dir) into `output`.

    `model` is one model dir or run dir (path or URI), or several (`ID=PATH` or bare paths,
    routed by `options`), or None with `via_serve`. Returns the manifest (counts, settings,
    seconds). Raises `UserError` for bad input and `IncompleteOutput` when the outputs do
    not match the inputs row for row.
    """
    started = time.perf_counter()
    files = find_inputs(input)
    check_columns(files, options)
    if options.id_column:
        check_unique_ids(files, options.id_column)
    models = _models(model, options)
    routing = plan_routing(
        models, options.source_lang_column, options.detect_source, options.target_lang
    )
    fragments = plan_fragments(files, options.rows_per_fragment)
    output_dir = Location.of(output)
    job = _job_description(files, models, options)
    prepare_output_dir(output_dir, job, options.resume)
    finished = finished_outputs(output_dir)
    pending = [
        (index, fragment)
        for index, fragment in enumerate(fragments)
        if fragment.output_name not in finished
    ]
    failure, run = None, PoolRun()
    try:
        if pending:
            run = run_fragments(pending, output_dir, models, routing, options)
    except UserError:
        raise
    except Exception as error:  # Ray reports a failed actor as RayTaskError, ActorDiedError...
        # Keep the text, not the exception: its frames hold Ray Data's actor pool, whose
        # CPUs a rerun in this process (--resume from Python) would wait for forever.
        failure = (type(error).__name__, "".join(traceback.format_exception(error)))
    if failure:
        finished = finished_outputs(output_dir)
        left = sum(f.output_name not in finished for _, f in pending)
        raise JobFailed(
            f"{left} of {len(fragments)} fragments are not translated ({failure[0]}); "
            "the finished ones are kept: rerun with --resume to translate the rest"
        ) from RuntimeError(failure[1])
    if run.unreadable:
        more = f" (and {len(run.unreadable) - 1} more)" if len(run.unreadable) > 1 else ""
        raise UserError(
            f"cannot read {run.unreadable[0]}{more}; replace the file, then rerun with "
            "--resume (the other fragments are kept)"
        )
    counts, problems = count_outputs(fragments, output_dir, ERROR_COLUMN, options.id_column)
    manifest = {
        **asdict(counts),
        "seconds": round(time.perf_counter() - started, 3),
        "fragments": len(fragments),
        "fragments_translated": len(pending),
        "workers": run.workers,
        "worker_peak_rss_mib": run.peak_rss_mib,
        "job": job,
    }
    if problems:
        raise IncompleteOutput("outputs do not match the inputs:\n  " + "\n  ".join(problems))
    write_manifest(output_dir, manifest)
    return manifest


def check_columns(files: list[str], options: BulkOptions) -> None:
    """Every input has the text (and id, and language) column, and none has the columns we
    add."""
    for path in files:
        names = read_schema(path).names
        for role, column in (
            ("--text-column", options.text_column),
            ("--id-column", options.id_column),
            ("--source-lang-column", options.source_lang_column),
            ("--glossary-column", options.glossary_column),
            ("--score-column", options.score_column),
        ):
            if column and column not in names:
                raise UserError(f"{path} has no column {column!r} ({role}); it has {names}")
        for column in options.added_columns:
            if column in names:
                raise UserError(
                    f"{path} already has a column {column!r}; choose another --target-column "
                    f"or rename it (the output adds {', '.join(map(repr, options.added_columns))})"
                )


def check_unique_ids(files: list[str], id_column: str) -> None:
    """Ids name rows for the exactly-once check: refuse a store where some repeat, with how
    many, before anything is written."""
    repeated = repeated_ids(files, id_column)
    if repeated:
        examples = ", ".join(repr(value) for value, _ in repeated[:3])
        extra = sum(count - 1 for _, count in repeated)
        raise UserError(
            f"--id-column {id_column!r}: {len(repeated)} ids appear more than once in the "
            f"input ({extra} rows more than ids), e.g. {examples}; ids must be unique"
        )


def _models(model: str | Sequence[str] | None, options: BulkOptions) -> list[ModelEntry]:
    """The models, each as an absolute path or a URI (actors do not share our working dir,
    and on another node fetch a remote model themselves). With via_serve the deployment's
    models translate: listed only when rows are routed among them."""
    from pipeline.translate.catalog import resolve_models

    if options.via_serve:
        routed = options.source_lang_column or options.detect_source
        return _serve_models(options.serve_app) if routed else []
    if model is None:
        raise UserError("--model is required (unless --via-serve uses the deployment's models)")
    return resolve_models([model] if isinstance(model, str) else model)


def _serve_models(app_name: str) -> list[ModelEntry]:
    from ray import serve

    _connect()
    _check_serve_app(app_name)
    handle = serve.get_deployment_handle(TRANSLATOR_DEPLOYMENT, app_name=app_name)
    return handle.models.remote().result()


def _job_description(files: list[str], models: list[ModelEntry], options: BulkOptions) -> dict:
    """What makes two runs the same job: `--resume` refuses to mix outputs of different ones.
    One model is recorded by its dir (as before several could be given), several by id."""
    if options.via_serve:
        recorded_models: str | dict[str, str] = f"serve:{options.serve_app}"
    elif len(models) == 1:
        recorded_models = models[0].uri
    else:
        recorded_models = {entry.id: entry.uri for entry in models}
    return {
        "inputs": files,
        "model": recorded_models,
        "via_serve": options.via_serve,
        **{
            key: getattr(options, key)
            for key in (
                "text_column",
                "id_column",
                "target_column",
                "rows_per_fragment",
                "max_chars",
                "source_lang_column",
                "detect_source",
                "target_lang",
                "glossary_column",
                "score_column",
                "signals",
            )
        },
        # what changes the translations (batch size does not: padding never does)
        **{key: getattr(options.decoding, key) for key in RECORDED_DECODING},
    }


@dataclass
class PoolRun:
    """What the actor pool reports back: its size, the largest peak RSS an actor reported,
    and the fragments that could not be read (where, and why)."""

    workers: int = 0
    peak_rss_mib: float | None = None
    unreadable: list[str] = field(default_factory=list)


def run_fragments(
    pending: list[tuple[int, Fragment]],
    output_dir: Location,
    models: list[ModelEntry],
    routing: RowRouting | None,
    options: BulkOptions,
) -> PoolRun:
    """Stream the pending fragments through an actor pool."""
    import ray

    _connect()
    worker_class, constructor, resources = _worker(models, routing, output_dir, options)
    workers = min(options.workers or _default_workers(options), len(pending))
    items = [{**asdict(fragment), "index": index} for index, fragment in pending]
    counts = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        worker_class,
        fn_constructor_kwargs=constructor,
        batch_size=1,
        batch_format="pyarrow",
        # Two fragments in flight per actor, so the next one waits at the actor instead of
        # the actor idling until Ray Data's scheduling loop hands it over; the cost is at
        # most one queued fragment per actor at the very end of a job.
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
        **resources,
    )
    total = sum(fragment.num_rows for _, fragment in pending)
    run = PoolRun(workers, 0.0)
    with tqdm(total=total, unit="doc", disable=not options.show_progress) as progress:
        for row in counts.iter_rows():
            progress.update(row["rows"])
            run.peak_rss_mib = max(run.peak_rss_mib or 0.0, row["peak_rss_mib"])
            if row["unreadable"]:
                run.unreadable.append(row["unreadable"])
    return run


def _worker(
    models: list[ModelEntry],
    routing: RowRouting | None,
    output_dir: Location,
    options: BulkOptions,
) -> tuple[type, dict, dict]:
    """The actor class, its constructor arguments, and the resources each actor holds."""
    settings = WorkerSettings(
        output_dir=output_dir.uri,
        text_column=options.text_column,
        target_column=options.target_column,
        error_column=ERROR_COLUMN,
        max_chars=options.max_chars,
        # signals only for their columns: they cost the beam its attention bookkeeping
        decoding=replace(options.decoding, n_best=1, signals=options.signals),
        models=tuple(models),
        routing=routing,
        fail_from_fragment=fail_injection_from_env(),
        glossary_column=options.glossary_column,
        score_column=options.score_column,
        signals=options.signals,
    )
    if options.via_serve:
        _check_serve_app(options.serve_app)
        constructor = {"app_name": options.serve_app, "deployment": TRANSLATOR_DEPLOYMENT}
        # reading, splitting and writing are light: leave the CPUs to the Serve replicas
        return ServeWorker, {"settings": settings, **constructor}, {"num_cpus": 0.1}
    device = "cuda" if options.gpu else "cpu"
    constructor = {"device": device, "threads": options.cpus_per_worker}
    resources = {"num_cpus": options.cpus_per_worker, "num_gpus": 1 if options.gpu else 0}
    return TranslatorWorker, {"settings": settings, **constructor}, resources


def _connect() -> None:
    import ray

    if not ray.is_initialized():
        ray.init()  # joins the cluster of RAY_ADDRESS or a running local one, else starts one


def _check_serve_app(app_name: str) -> None:
    from ray import serve

    running = serve.status().applications
    if app_name not in running:
        raise UserError(
            f"no Serve application {app_name!r} runs on this Ray cluster (running: "
            f"{sorted(running)}); start one with `nmt serve --model ...`, or drop --via-serve"
        )


def _default_workers(options: BulkOptions) -> int:
    """Fill what is free now (Serve replicas may hold part of the cluster)."""
    import ray

    if options.via_serve:
        return 2  # enough to keep the deployment's queue full while one actor reads or writes
    resources = ray.available_resources()
    if options.gpu:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1) // options.cpus_per_worker))
