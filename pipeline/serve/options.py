"""What shapes the Serve application: its names and `ServeOptions`, the models among them.

Plain values only, so the command line, the bulk job (`--via-serve`) and the deployments
share them without importing Ray Serve or torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from pipeline.errors import UserError
from pipeline.translate.catalog import ModelEntry
from pipeline.translate.settings import DecodeSettings

APP_NAME = "nmt"
TRANSLATOR_DEPLOYMENT = "Translator"
API_DEPLOYMENT = "TranslationApi"


@dataclass(frozen=True)
class ServeOptions:
    """Everything that shapes the Serve application; `build_app` keywords.

    `models` is filled in by `build_app` (the first is the default model). None for the
    autoscaling delays and look-back keeps Ray Serve's defaults.
    """

    models: tuple[ModelEntry, ...] = ()
    # Models one translator replica holds at once; the least recently used is dropped
    # when another is asked for (Ray Serve's multiplexing LRU).
    models_per_replica: int = 3

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
    # The search; a request may change its beam size and n-best (a `replace` of it).
    decoding: DecodeSettings = DecodeSettings()
    max_beam_size: int = 16
    max_texts: int = 64  # per request
    max_chars: int = 1000  # per text
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise UserError("need 0 <= --min-replicas <= --max-replicas and --max-replicas >= 1")
        for name in (
            "max_batch_size",
            "max_beam_size",
            "max_texts",
            "max_chars",
            "models_per_replica",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1")
        if self.decoding.beam_size > self.max_beam_size:
            raise UserError(f"beam_size must be between 1 and max_beam_size ({self.max_beam_size})")
        if self.batch_wait_ms < 0 or self.num_cpus < 0 or self.num_gpus < 0:
            raise UserError("batch wait, CPUs and GPUs per replica cannot be negative")

    @classmethod
    def from_flat(cls, options: Mapping[str, Any]) -> ServeOptions:
        """From one flat mapping of option names (`build_app` keywords, serve_config.yaml's
        args): the `DecodeSettings` fields among them (or a `decoding` mapping) make up
        `decoding`."""
        options = dict(options)
        decoding = options.pop("decoding", None) or DecodeSettings()
        if isinstance(decoding, Mapping):
            decoding = DecodeSettings(**decoding)
        names = {f.name for f in fields(DecodeSettings)}
        flat_decoding = {k: options.pop(k) for k in list(options) if k in names}
        known = {f.name for f in fields(cls)} | names
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"unknown serve options {unknown}; known: {sorted(known)}")
        if "models" in options:
            options["models"] = tuple(options["models"])
        return cls(decoding=replace(decoding, **flat_decoding), **options)

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
