"""Per-model metrics of the Serve application, on Ray's Prometheus endpoint.

Ray Serve's custom metrics (`ray.serve.metrics`) add the deployment, replica and application
tags themselves; these add `model`. Ray exports them prefixed `ray_` (a counter also gets
`_total`): `ray_nmt_requests_total{model="de-en",...}`, `ray_nmt_decode_seconds_bucket{...}`.
The ingress counts requests and failed requests, requests shed for load (503), past their
deadline (504) and sent again after their replica died, and the requests it refused before
knowing their model (by `reason`: an oversized body, a rate limit); the translator replicas
count sentences and time each model's searches.
"""

from __future__ import annotations

from ray.serve import metrics

# Seconds for one beam search over a batch: tens of milliseconds for a few short sentences
# on a GPU to seconds for a full batch of long ones on one CPU core.
DECODE_SECONDS_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
MODEL_TAG = "model"
REASON_TAG = "reason"
BODY_TOO_LARGE = "body_too_large"
RATE_LIMITED = "rate_limited"
OVERLOADED = "overloaded"  # refused unread while every model's replicas refuse


class ModelMetrics:
    """The metric objects of one replica, every one tagged with the model id."""

    def __init__(self) -> None:
        tags = (MODEL_TAG,)
        self.requests = metrics.Counter(
            "nmt_requests", description="translation requests per model", tag_keys=tags
        )
        self.errors = metrics.Counter(
            "nmt_errors", description="requests and searches that failed, per model", tag_keys=tags
        )
        self.sentences = metrics.Counter(
            "nmt_sentences", description="sentences translated per model", tag_keys=tags
        )
        self.shed_requests = metrics.Counter(
            "nmt_shed", description="requests refused for load (503), per model", tag_keys=tags
        )
        self.deadlines = metrics.Counter(
            "nmt_deadline_exceeded",
            description="requests past their deadline (504), per model",
            tag_keys=tags,
        )
        self.retries = metrics.Counter(
            "nmt_retries",
            description="requests sent again because their replica died, per model",
            tag_keys=tags,
        )
        self.refusals = metrics.Counter(
            "nmt_refused",
            description="requests refused before routing, by reason",
            tag_keys=(REASON_TAG,),
        )
        self.decode_seconds = metrics.Histogram(
            "nmt_decode_seconds",
            description="seconds per beam search (one batch of one model)",
            boundaries=DECODE_SECONDS_BOUNDARIES,
            tag_keys=tags,
        )

    def request(self, model_id: str) -> None:
        self.requests.inc(tags={MODEL_TAG: model_id})

    def error(self, model_id: str) -> None:
        self.errors.inc(tags={MODEL_TAG: model_id})

    def shed(self, model_id: str) -> None:
        self.shed_requests.inc(tags={MODEL_TAG: model_id})

    def deadline(self, model_id: str) -> None:
        self.deadlines.inc(tags={MODEL_TAG: model_id})

    def retried(self, model_id: str) -> None:
        self.retries.inc(tags={MODEL_TAG: model_id})

    def refused(self, reason: str) -> None:
        self.refusals.inc(tags={REASON_TAG: reason})

    def decoded(self, model_id: str, sentences: int, seconds: float) -> None:
        self.sentences.inc(sentences, tags={MODEL_TAG: model_id})
        self.decode_seconds.observe(seconds, tags={MODEL_TAG: model_id})
