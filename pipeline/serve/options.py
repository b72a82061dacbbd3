"""What shapes the Serve application: its names and `ServeOptions`, the models among them.

Plain values only, so the command line, the bulk job (`--via-serve`) and the deployments
share them without importing Ray Serve or torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from pipeline.errors import UserError
from pipeline.serve.keys import ApiKey
from pipeline.translate.catalog import ModelEntry
from pipeline.translate.settings import DecodeSettings

APP_NAME = "nmt"
TRANSLATOR_DEPLOYMENT = "Translator"
API_DEPLOYMENT = "TranslationApi"
# Bytes of a request body per character of text at worst: a CJK character form-encoded is
# three UTF-8 bytes, each written %XX.
BODY_BYTES_PER_CHAR = 9
BODY_OVERHEAD_BYTES = 64 * 1024  # the other fields, JSON punctuation, form names
# The HTTP proxy gives up this long after the ingress's own deadline, so a request the
# ingress times out gets its 504 and the proxy's 408 only catches what never reached it.
PROXY_TIMEOUT_MARGIN_S = 5.0
MAX_WAIT_SHARE = 0.5  # of the deadline, the longest a replica lets a request expect to wait


@dataclass(frozen=True)
class LoadSettings:
    """How the service holds up under overload and failures: a translator replica holds a
    bounded backlog and refuses more with 503 and `Retry-After` (queueing past it only
    lengthens every wait), a request has a deadline (504), and a request whose replica died
    is sent again (translation is idempotent)."""

    # Sentences a translator replica holds, decoding and waiting, in batches of
    # max_batch_size; a request that would go past it is refused.
    backlog_batches: float = 4.0
    # Requests the ingress holds for the translators while none has room (as while replicas
    # start or are replaced); past it Ray Serve refuses them. None: one replica's backlog,
    # so losing a replica sheds nothing its backlog would have taken.
    max_queued_requests: int | None = None
    retry_after_s: float = 2.0  # the least Retry-After a refused request is told
    request_timeout_s: float = 30.0  # from the ingress; 0: none
    retries: int = 1  # times a request whose replica died mid-decode is sent again

    def __post_init__(self) -> None:
        if self.backlog_batches <= 0 or self.retry_after_s < 0 or self.request_timeout_s < 0:
            raise UserError("backlog batches must be positive, retry-after and timeout >= 0")
        if self.retries < 0 or (self.max_queued_requests or 1) < 1:
            raise UserError("retries must be >= 0 and max_queued_requests >= 1")


@dataclass(frozen=True)
class AccessSettings:
    """Who may call the service and how much: API keys, rate limits, body size."""

    api_key_env: str | None = None  # a variable holding one key, read in the replicas
    api_keys_file: str | None = None  # keys (and per-key limits), read by build_app
    keys: tuple[ApiKey, ...] = ()  # the file's keys as digests, filled in by build_app
    # Requests per minute per API key, or per client address without one; None: no limit.
    rate_limit: float | None = None
    max_body_bytes: int | None = None  # None: from max_texts x max_chars

    def __post_init__(self) -> None:
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise UserError("--rate-limit must be a positive number of requests per minute")
        if self.max_body_bytes is not None and self.max_body_bytes < 1:
            raise UserError("--max-body-bytes must be at least 1")

    @property
    def requires_key(self) -> bool:
        return bool(self.api_key_env or self.api_keys_file or self.keys)


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
    load: LoadSettings = LoadSettings()
    access: AccessSettings = AccessSettings()

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
        args): the fields of each nested settings class among them (or a mapping under its
        name, such as `decoding`) make up that settings object."""
        options = dict(options)
        nested = {name: _nested(kind, options.pop(name, None), options) for name, kind in NESTED}
        known = {f.name for f in fields(cls)} | flat_names()
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"unknown serve options {unknown}; known: {sorted(known)}")
        if "models" in options:
            options["models"] = tuple(options["models"])
        return cls(**nested, **options)

    @property
    def backlog_sentences(self) -> int:
        """Sentences one translator replica holds before it refuses a request."""
        return max(1, round(self.load.backlog_batches * self.max_batch_size))

    @property
    def max_wait_s(self) -> float | None:
        """The longest expected wait a replica lets a request in for: half the deadline, so
        what it admits has time to decode."""
        return self.load.request_timeout_s * MAX_WAIT_SHARE or None

    @property
    def max_queued_requests(self) -> int:
        return self.load.max_queued_requests or self.backlog_sentences

    @property
    def max_body_bytes(self) -> int:
        """The largest request body the ingress reads; longer ones are 413 unread."""
        derived = self.max_texts * self.max_chars * BODY_BYTES_PER_CHAR + BODY_OVERHEAD_BYTES
        return self.access.max_body_bytes or derived

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


NESTED = (("decoding", DecodeSettings), ("load", LoadSettings), ("access", AccessSettings))


def flat_names() -> set[str]:
    """The field names of the nested settings, which flat options may use directly."""
    return {f.name for _, kind in NESTED for f in fields(kind)}


def _nested(kind: type, given: Any, flat: dict[str, Any]) -> Any:
    """`kind` from a given object or mapping, updated by its fields popped from `flat`."""
    base = kind(**given) if isinstance(given, Mapping) else (given or kind())
    names = {f.name for f in fields(kind)}
    updates = {name: flat.pop(name) for name in list(flat) if name in names}
    if "keys" in updates:
        updates["keys"] = tuple(updates["keys"])
    return replace(base, **updates)
