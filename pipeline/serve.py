"""`nmt serve`: the autoscaled HTTP translation endpoint (Ray Serve).

Interface for other code (bulk translation's `--via-serve` among it):

    from pipeline.serve import APP_NAME, TRANSLATOR_DEPLOYMENT, build_app

    app = build_app("runs/exp/de-en", max_batch_size=32, num_cpus=0.25)  # a serve.Application
    serve.run(app, name=APP_NAME, route_prefix="/")
    handle = serve.get_deployment_handle(TRANSLATOR_DEPLOYMENT, app_name=APP_NAME)
    texts = await handle.translate_batch.remote(["Ein Hund läuft."], beam_size=5)  # list[str]

Deployments (names are module constants):
- TRANSLATOR_DEPLOYMENT ("Translator"): wraps `pipeline.translator.Translator`, autoscaled.
  - `async translate_batch(texts: list[str], beam_size: int | None = None) -> list[str]`:
    one call, one list in input order; for callers that already hold a batch.
  - `async translate_one(text: str, options: dict) -> dict`: the `@serve.batch` path the
    HTTP ingress uses, so sentences from concurrent requests share one beam search.
  - `info() -> dict`: the Translator's `info()`.
- API_DEPLOYMENT ("TranslationApi"): the FastAPI ingress (`POST /translate`, `GET /health`,
  `GET /model`, `/docs`).

`build_app(model_path, **options)` takes the fields of `ServeOptions` as keywords;
`app_builder(args)` is the same for `serve run` / `serve deploy` (see serve_config.yaml).
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.translate import (
    DEFAULT_BEAM_PRUNE,
    DEFAULT_PRECISION,
    add_beam_prune_argument,
    add_precision_argument,
    check_beam_prune,
    check_precision,
)

APP_NAME = "nmt"
TRANSLATOR_DEPLOYMENT = "Translator"
API_DEPLOYMENT = "TranslationApi"

EXAMPLES = """examples:
  nmt serve --model runs/exp/de-en --port 8000
  curl -s localhost:8000/translate -H 'Content-Type: application/json' \\
      -d '{"text": ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen."], "beam_size": 5}'
  NMT_API_KEY=secret nmt serve --model runs/exp/de-en --api-key-env NMT_API_KEY \\
      --min-replicas 1 --max-replicas 4 --num-cpus 0.5

The same application under Ray's own tooling: `serve run serve_config.yaml` (edit args.model).
"""


@dataclass(frozen=True)
class ServeOptions:
    """Everything that shapes the Serve application besides the model; `build_app` keywords.

    None for the autoscaling delays and look-back keeps Ray Serve's defaults.
    """

    min_replicas: int = 1
    max_replicas: int = 4
    target_ongoing_requests: float | None = None  # per replica; None: max_batch_size
    upscale_delay_s: float | None = None
    downscale_delay_s: float | None = None
    look_back_period_s: float | None = None
    max_batch_size: int = 32  # sentences decoded together in one beam search
    batch_wait_ms: float = 10.0  # how long a batch waits to fill before decoding
    num_cpus: float = 1.0  # per translator replica; fractions let several share a core
    num_gpus: float = 0.0
    ingress_replicas: int = 1
    beam_size: int = 5  # default when a request gives none
    beam_prune: float = DEFAULT_BEAM_PRUNE
    precision: str = DEFAULT_PRECISION  # of the matrix products: fp32 or bf16
    max_beam_size: int = 16
    max_texts: int = 64  # per request
    max_chars: int = 1000  # per text
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise UserError("need 0 <= --min-replicas <= --max-replicas and --max-replicas >= 1")
        for name in ("max_batch_size", "max_beam_size", "max_texts", "max_chars"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1")
        if not 1 <= self.beam_size <= self.max_beam_size:
            raise UserError(f"beam_size must be between 1 and max_beam_size ({self.max_beam_size})")
        check_beam_prune(self.beam_prune)
        check_precision(self.precision)
        if self.batch_wait_ms < 0 or self.num_cpus < 0 or self.num_gpus < 0:
            raise UserError("batch wait, CPUs and GPUs per replica cannot be negative")

    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus > 0 else "cpu"

    @property
    def autoscaling_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            # A replica is busy once a full batch is waiting behind the one decoding.
            "target_ongoing_requests": self.target_ongoing_requests or self.max_batch_size,
        }
        for name in ("upscale_delay_s", "downscale_delay_s", "look_back_period_s"):
            if getattr(self, name) is not None:
                config[name] = getattr(self, name)
        return config


def build_app(model_path: str | Path, **options: Any):
    """The Serve application (a `ray.serve.Application`) for a model dir or run dir.

    `options` are `ServeOptions` fields. A model path is made absolute here, because
    replicas do not run in the caller's working directory; a URI is passed on as it is.
    """
    from pipeline.serve_app import bind_application
    from pipeline.translator import find_model_dir

    known = {f.name for f in fields(ServeOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"unknown serve options {unknown}; known: {sorted(known)}")
    # a URI stays a URI: each replica fetches the model on its own node
    return bind_application(find_model_dir(model_path).uri, ServeOptions(**options))


def app_builder(args: dict[str, Any]):
    """Application builder for `serve run` / `serve deploy`: `args` holds `model` and any
    `ServeOptions` fields (as in serve_config.yaml, or `key=value` after the import path)."""
    args = dict(args)
    if "model" not in args:
        raise UserError("serve config args need `model` (a model dir or run dir)")
    model = args.pop("model")
    types = {f.name: f.type for f in fields(ServeOptions)}
    # `serve run pipeline.serve:app_builder key=value` passes every value as a string.
    converted = {name: _convert(value, types.get(name, "str")) for name, value in args.items()}
    return build_app(model, **converted)


def _convert(value: Any, type_name: str) -> Any:
    if not isinstance(value, str) or type_name.startswith("str"):
        return value
    if type_name.startswith("int"):
        return int(value)
    return float(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServeOptions()
    parser.add_argument("--model", required=True, help="model dir, or a run dir holding model/")
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
    parser.add_argument("--beam-size", type=int, default=defaults.beam_size, help="default beam")
    parser.add_argument("--max-beam-size", type=int, default=defaults.max_beam_size)
    add_beam_prune_argument(parser)
    add_precision_argument(parser)
    parser.add_argument("--max-texts", type=int, default=defaults.max_texts, help="per request")
    parser.add_argument("--max-chars", type=int, default=defaults.max_chars, help="per text")
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require 'Authorization: Bearer $VAR' on /translate and /model",
    )


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in fields(ServeOptions)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def run(args: argparse.Namespace) -> int:
    options = ServeOptions(**options_from_args(args))
    if options.api_key_env and not os.environ.get(options.api_key_env):
        raise UserError(f"--api-key-env names {options.api_key_env}, which is not set; export it")
    from pipeline.translator import Translator

    # Load once here so a broken model dir is one clear error, not failing replicas.
    name = Translator(args.model).name
    _require_free_port(args.host, args.port)
    app = build_app(args.model, **asdict(options))

    import ray
    from ray import serve

    ray.init(ignore_reinit_error=True)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(app, name=APP_NAME, route_prefix="/")
    url = f"http://{args.host}:{args.port}"
    print(f"Serving {name} at {url}/translate (API docs: {url}/docs). Ctrl-C stops it.")
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
    return 0


def _require_free_port(host: str, port: int) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"cannot listen on {host}:{port} ({error}); pick --port") from None
