"""`nmt bulk-translate`: the command line of bulk translation (`pipeline.bulk.job`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from pipeline.bulk.job import BulkOptions, IncompleteOutput, JobFailed, bulk_translate
from pipeline.bulk.store import MANIFEST_FILE
from pipeline.errors import UserError
from pipeline.serve.options import APP_NAME
from pipeline.storage import Location
from pipeline.translate.settings import DecodeSettings

EXAMPLES = """examples:
  nmt bulk-translate --model runs/exp/de-en --input 'store/*.parquet' --output out/ \\
      --text-column text --id-column id
  nmt bulk-translate ... --resume      # after a killed job: keep finished outputs, do the rest
  nmt bulk-translate ... --via-serve   # send sentences to the running `nmt serve` deployment
  nmt bulk-translate --model runs/exp/de-en --model runs/exp/zh-en --source-lang-column lang \\
      --target-lang en --input 'store/*.parquet' --output out/ --text-column text
  nmt bulk-translate --model de-en=runs/exp/de-en --model runs/exp/zh-en --detect-source ...
  nmt bulk-translate ... --glossary-column terms   # per-row map<string,string>: source -> target
  nmt bulk-translate ... --signals      # add mean_log_prob, coverage, repetition, length_ratio
  nmt bulk-translate --model runs/exp/de-en --input 'store/*.parquet' --output scored/ \
      --text-column text --score-column translation   # log_prob, mean_log_prob per row
  nmt bulk-translate --model s3://bucket/runs/de-en --input 's3://bucket/store/*.parquet' \
      --output s3://bucket/translated/ --text-column text   # remote storage (pyarrow URIs)

Output: one Parquet file per input fragment under --output, with every input column, the
translation column and an `error` column (null when the row translated); `_SUCCESS` holds
the counts and is written last. Exit status 1 if the job stops part-way (rerun with
--resume) or rows in != rows out. With --via-serve the deployment's models translate and
--model is not needed. Routed rows whose language no model translates get an error.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        metavar="[ID=]PATH",
        help="model dir, or training run dir holding model/ (path or URI); repeat for "
        "several and route the rows with --source-lang-column or --detect-source",
    )
    parser.add_argument(
        "--input", required=True, help="Parquet files: a quoted glob, or a dir (path or URI)"
    )
    parser.add_argument(
        "--output", required=True, help="dir for the translated Parquet files (path or URI)"
    )
    parser.add_argument("--text-column", required=True, help="the column of documents")
    parser.add_argument("--id-column", help="row ids: checked to come out once each, in order")
    parser.add_argument("--target-column", default="translation", help="default: %(default)s")
    DecodeSettings.add_arguments(parser, omit=("n_best",))
    parser.add_argument("--workers", type=int, help="actors (default: one per CPU, or per GPU)")
    parser.add_argument("--cpus-per-worker", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument(
        "--via-serve", action="store_true", help="use the running `nmt serve` deployment"
    )
    parser.add_argument(
        "--serve-app", default=APP_NAME, help="Serve application for --via-serve (%(default)s)"
    )
    parser.add_argument("--resume", action="store_true", help="finish the job in --output")
    parser.add_argument(
        "--rows-per-fragment", type=int, default=1000, help="rows per output file (%(default)s)"
    )
    parser.add_argument(
        "--max-chars", type=int, default=20_000, help="longer documents get an error"
    )
    parser.add_argument(
        "--source-lang-column", help="route each row to the model for its language in COLUMN"
    )
    parser.add_argument(
        "--detect-source",
        action="store_true",
        help="route each row to the model for its detected language",
    )
    parser.add_argument(
        "--target-lang", help="the language routed rows go into (needed when models differ)"
    )
    parser.add_argument(
        "--glossary-column",
        help="per-row glossaries (map<string,string> or JSON object): lexical constraints",
    )
    parser.add_argument(
        "--score-column",
        help="score each row's text against its translation in COLUMN instead of translating",
    )
    parser.add_argument(
        "--signals", action="store_true", help="add the quality-signal columns per document"
    )


def run(args: argparse.Namespace) -> int:
    for name in ("workers", "cpus_per_worker", "rows_per_fragment"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    decoding = DecodeSettings.from_args(args)
    names = {f.name for f in fields(BulkOptions)} - {"decoding"}
    options = BulkOptions(decoding=decoding, **{k: v for k, v in vars(args).items() if k in names})
    try:
        manifest = bulk_translate(args.model, args.input, args.output, options)
    except JobFailed as error:
        print(error.__cause__, file=sys.stderr)  # the failure's traceback, as text
        print(f"nmt bulk-translate: {error}", file=sys.stderr)
        return 1
    except IncompleteOutput as error:
        print(f"nmt bulk-translate: {error}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in manifest.items() if k != "job"}, indent=2))
    print(f"wrote {Location.of(args.output) / MANIFEST_FILE}")
    return 0
