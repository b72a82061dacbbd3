"""`nmt serve`: the command line of the HTTP translation endpoint (`pipeline.serve.app`)."""

from __future__ import annotations

import argparse
import os
import socket
import time
from dataclasses import fields, replace

from pipeline.errors import UserError
from pipeline.serve.options import (
    APP_NAME,
    PROXY_TIMEOUT_MARGIN_S,
    AccessSettings,
    LoadSettings,
    ServeOptions,
)
from pipeline.translate.settings import DecodeSettings

EXAMPLES = """examples:
  nmt serve --model runs/exp/de-en --port 8000          # then open http://127.0.0.1:8000/
  curl -s localhost:8000/translate -H 'Content-Type: application/json' \\
      -d '{"text": ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen."], "beam_size": 5}'
  nmt serve --model runs/exp/de-en --model en-de=runs/exp/en-de --models-per-replica 2
  nmt serve --models runs/exp/                           # every model dir or run dir in it
  curl -s localhost:8000/translate -d q='Ein Hund läuft.' -d source=auto -d target=en
  NMT_API_KEY=secret nmt serve --model runs/exp/de-en --api-key-env NMT_API_KEY \\
      --min-replicas 1 --max-replicas 4 --num-cpus 0.5
  nmt serve --model runs/exp/de-en --api-keys-file keys.txt --rate-limit 60
      # keys.txt: one key a line, optionally with its own limit: "KEY" or "KEY 600"

A bare --model PATH takes its id from the model's meta.json ({src_lang}-{tgt_lang}).
The same application under Ray's own tooling: `serve run serve_config.yaml` (edit args.model).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServeOptions()
    parser.add_argument(
        "--model",
        action="append",
        metavar="[ID=]PATH",
        help="a model dir or run dir (path or URI); repeat for several, the first is the default",
    )
    parser.add_argument("--models", metavar="DIR", help="a dir of model dirs or run dirs")
    parser.add_argument(
        "--models-per-replica",
        type=int,
        default=defaults.models_per_replica,
        help="models a translator replica holds at once, least recently used dropped "
        "(default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on all interfaces")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--min-replicas", type=int, default=defaults.min_replicas)
    parser.add_argument("--max-replicas", type=int, default=defaults.max_replicas)
    parser.add_argument(
        "--target-ongoing-requests",
        type=float,
        help="sentences in flight per replica that autoscaling aims for (default: batch size)",
    )
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--batch-wait-ms", type=float, default=defaults.batch_wait_ms)
    parser.add_argument("--num-cpus", type=float, default=defaults.num_cpus, help="per replica")
    parser.add_argument("--num-gpus", type=float, default=defaults.num_gpus, help="per replica")
    parser.add_argument("--max-beam-size", type=int, default=defaults.max_beam_size)
    # The search when a request does not say; requests choose beam size and n-best.
    DecodeSettings.add_arguments(parser, omit=("n_best", "batch_size"))
    parser.add_argument("--max-texts", type=int, default=defaults.max_texts, help="per request")
    parser.add_argument("--max-chars", type=int, default=defaults.max_chars, help="per text")
    add_access_arguments(parser)
    add_load_arguments(parser)


def add_access_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("access: API keys, rate limits, body size")
    group.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require 'Authorization: Bearer $VAR' (LibreTranslate clients: api_key=$VAR) "
        "on /translate, /detect, /models and /model",
    )
    group.add_argument(
        "--api-keys-file",
        metavar="FILE",
        help="accepted keys, one a line: 'KEY' or 'KEY REQUESTS_PER_MINUTE' (# comments)",
    )
    group.add_argument(
        "--rate-limit",
        type=float,
        metavar="PER_MINUTE",
        help="requests per minute per API key, or per client address without one; 429 with "
        "Retry-After past it (default: none)",
    )
    group.add_argument(
        "--max-body-bytes",
        type=int,
        help="larger request bodies are refused with 413 unread (default: from --max-texts "
        "x --max-chars)",
    )


# flag -> (LoadSettings field, type, help); defaults come from LoadSettings
LOAD_FLAGS = {
    "--backlog-batches": (
        "backlog_batches",
        float,
        "sentences a translator replica holds, in batches; requests past it get 503 with "
        "Retry-After",
    ),
    "--max-queued-requests": (
        "max_queued_requests",
        int,
        "requests held while no replica has room, as while replicas start (default: the backlog)",
    ),
    "--retry-after": ("retry_after_s", float, "the least Retry-After of a 503, in seconds"),
    "--request-timeout": (
        "request_timeout_s",
        float,
        "seconds a request may take; 504 past it, 0: none",
    ),
    "--retries": ("retries", int, "times a request whose replica died is sent again"),
}


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = LoadSettings()
    group = parser.add_argument_group("load: shedding, deadlines, retries")
    for flag, (name, kind, help_text) in LOAD_FLAGS.items():
        group.add_argument(
            flag,
            dest=name,
            type=kind,
            default=getattr(defaults, name),
            help=f"{help_text} (default: %(default)s)",
        )


def options_from_args(args: argparse.Namespace) -> ServeOptions:
    given = {k: v for k, v in vars(args).items() if v is not None}
    nested = {"load": LoadSettings, "access": AccessSettings}
    settings = {name: kind(**_fields_of(kind, given)) for name, kind in nested.items()}
    top = _fields_of(ServeOptions, given)
    top.pop("models", None)
    return ServeOptions(decoding=DecodeSettings.from_args(args), **settings, **top)


def _fields_of(kind: type, given: dict) -> dict:
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in given.items() if k in names}


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    variable = options.access.api_key_env
    if variable and not os.environ.get(variable):
        raise UserError(f"--api-key-env names {variable}, which is not set; export it")
    from pipeline.serve.app import build_app
    from pipeline.translate.catalog import load_models, resolve_models

    # Load each once here so a broken model dir is one clear error, not failing replicas.
    models = load_models(resolve_models(args.model or [], args.models))
    _require_free_port(args.host, args.port)
    app = build_app(options=replace(options, models=tuple(models)))

    import ray
    from ray import serve

    ray.init(ignore_reinit_error=True)
    serve.start(http_options=http_options(args.host, args.port, options.load))
    serve.run(app, name=APP_NAME, route_prefix="/")
    url = f"http://{args.host}:{args.port}"
    names = ", ".join(entry.describe() for entry in models)
    print(f"Serving {names} at {url}/ (API: {url}/translate, {url}/docs). Ctrl-C stops it.")
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
    return 0


def http_options(host: str, port: int, load: LoadSettings) -> dict:
    """The HTTP proxy's options: its own timeout a margin past the ingress's deadline."""
    options: dict = {"host": host, "port": port}
    if load.request_timeout_s:
        options["request_timeout_s"] = load.request_timeout_s + PROXY_TIMEOUT_MARGIN_S
    return options


def _require_free_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"cannot listen on {host}:{port} ({error}); pick --port") from None
