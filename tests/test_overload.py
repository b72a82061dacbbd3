"""The pieces of `nmt serve` that hold it up under load, without a cluster: the keys file, the
rate limiter, a replica's backlog, deadlines and retries around a call, and their settings
(flags, serve_config.yaml args). tests/test_serve.py checks them over HTTP; the replica
kill under load is in tests/test_drills.py."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest
from ray.exceptions import ActorDiedError
from ray.serve.exceptions import BackPressureError

from pipeline.errors import UserError
from pipeline.serve import cli
from pipeline.serve.keys import KeyRing, digest, read_keys_file
from pipeline.serve.options import LoadSettings, ServeOptions
from pipeline.serve.overload import (
    Backlog,
    Busy,
    DeadlineExceeded,
    Overloaded,
    call_with_retries,
)
from pipeline.serve.ratelimit import RateLimiter, retry_after_header


def test_keys_file_keys_are_kept_as_digests_with_their_limits(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# team keys\nalpha 120\n\n  beta  \n")
    keys = read_keys_file(path)
    assert [(k.digest, k.rate_limit) for k in keys] == [
        (digest("alpha"), 120),
        (digest("beta"), None),
    ]
    assert "alpha" not in repr(keys), "no key in the clear"
    ring = KeyRing(keys)
    assert ring.find(None, "wrong", "beta").digest == digest("beta")
    assert ring.find("", None) is None and not KeyRing([])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a 10 extra\n", "keys.txt:1: expected 'KEY' or 'KEY REQUESTS_PER_MINUTE'"),
        ("a\nb many\n", "keys.txt:2: the rate limit must be a positive number"),
        ("a -3\n", "keys.txt:1: the rate limit must be a positive number"),
        ("# nothing\n\n", "holds no key"),
    ],
)
def test_a_bad_keys_file_is_one_line_naming_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_keys_file(path)
    with pytest.raises(UserError, match="cannot be read"):
        read_keys_file(tmp_path / "missing.txt")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_allows_a_minutes_burst_then_the_pace() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.take("a", 6) for _ in range(6)] == [None] * 6
    wait = limiter.take("a", 6)
    assert wait == pytest.approx(10.0), "6 a minute: one every 10 s"
    assert retry_after_header(wait) == "10" and retry_after_header(0.2) == "1"
    assert limiter.take("b", 6) is None, "each client has its own bucket"
    clock.now += 4
    assert limiter.take("a", 6) == pytest.approx(6.0)
    clock.now += 6
    assert limiter.take("a", 6) is None and limiter.take("a", 6) is not None


def test_rate_limiter_forgets_full_buckets_past_its_bound(monkeypatch) -> None:
    from pipeline.serve import ratelimit

    monkeypatch.setattr(ratelimit, "MAX_BUCKETS", 10)
    clock = Clock()
    limiter = RateLimiter(clock)
    for client in range(11):
        limiter.take(f"c{client}", 60)
    clock.now += 60  # every bucket has refilled
    limiter.take("new", 60)
    assert len(limiter.buckets) <= 10 and "new" in limiter.buckets


def test_backlog_refuses_past_its_limit_and_says_when_to_come_back() -> None:
    backlog = Backlog(limit=4, min_retry_after_s=1.0, batch_size=2)
    assert backlog.refuses(10) is None, "an empty replica takes any request, alone"
    with backlog.hold(3):
        busy = backlog.refuses(2)
        assert isinstance(busy, Busy) and "3 sentences are waiting" in busy.message
        assert busy.retry_after_s == 1.0, "no search timed yet: the least wait"
        assert backlog.refuses(1) is None
        backlog.decoded(1, now=10.0)  # sentences still wait after this search
        backlog.decoded(2, now=11.5)  # so this one took 1.5 s
        assert backlog.search_s == pytest.approx(1.5)
        with backlog.hold(1):
            # 4 sentences in batches of 2: two searches of 1.5 s
            assert backlog.refuses(1).retry_after_s == pytest.approx(3.0)
    assert backlog.sentences == 0


def test_backlog_refuses_what_would_wait_past_its_longest_wait() -> None:
    backlog = Backlog(limit=100, min_retry_after_s=1.0, max_wait_s=2.0, batch_size=2, search_s=0.5)
    with backlog.hold(6):
        assert backlog.refuses(2) is None  # 8 sentences: 4 searches of 0.5 s
        busy = backlog.refuses(3)  # 9: 5 searches
        assert busy is not None and "about 2 s of work" in busy.message


def test_a_search_of_one_sentence_does_not_inflate_the_wait() -> None:
    """A burst starts with a small batch; a search of one sentence takes about what a full
    one does, so the wait of a full backlog is its searches, not its sentences."""
    backlog = Backlog(limit=64, min_retry_after_s=0.1, max_wait_s=1.0, batch_size=16)
    with backlog.hold(32):
        backlog.decoded(1, now=5.0)
        backlog.decoded(1, now=5.2)  # a one-sentence search of 0.2 s
        assert backlog.refuses(16) is None  # 48 sentences: 3 searches, 0.6 s


class Pending:
    """A stand-in for a DeploymentResponse that never finishes."""

    cancelled = False

    def __await__(self):
        return asyncio.sleep(60).__await__()

    def cancel(self) -> None:
        self.cancelled = True


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_call_whose_replica_died_is_sent_again_once() -> None:
    attempts, retried = [], []

    async def call():
        attempts.append(1)
        if len(attempts) < 3:
            raise ActorDiedError()
        return "done"

    assert run(call_with_retries(call, None, 2, retried.append)) == "done"
    assert len(attempts) == 3 and len(retried) == 2
    attempts.clear()
    with pytest.raises(ActorDiedError):
        run(call_with_retries(call, None, 1, retried.append))
    assert len(attempts) == 2


def test_a_call_past_its_deadline_is_cancelled() -> None:
    pending = Pending()
    with pytest.raises(DeadlineExceeded):
        run(call_with_retries(lambda: pending, 0.05, 1, print))
    assert pending.cancelled


def test_refusals_become_overloaded_with_their_wait() -> None:
    async def busy():
        return Busy("busy: full", 3.0)

    async def backpressure():
        raise BackPressureError(num_queued_requests=5, max_queued_requests=5, retry_after_s=2)

    with pytest.raises(Overloaded) as refused:
        run(call_with_retries(busy, 1.0, 1, print))
    assert (refused.value.message, refused.value.retry_after_s) == ("busy: full", 3.0)
    with pytest.raises(Overloaded) as refused:
        run(call_with_retries(backpressure, 1.0, 1, print))
    assert refused.value.retry_after_s == 2 and "backpressure" in str(refused.value)


def test_limits_derive_from_the_batch_and_request_sizes() -> None:
    options = ServeOptions(max_batch_size=8, max_texts=10, max_chars=100)
    assert options.backlog_sentences == 4 * 8 and options.max_queued_requests == 4 * 8
    assert options.max_body_bytes == 10 * 100 * 9 + 64 * 1024
    assert options.max_wait_s == 15.0
    given = ServeOptions.from_flat(
        {"backlog_batches": 2, "max_body_bytes": 500, "max_batch_size": 8}
    )
    assert (given.backlog_sentences, given.max_body_bytes) == (16, 500)
    assert ServeOptions.from_flat({"request_timeout_s": 0}).max_wait_s is None
    with pytest.raises(UserError, match="retries must be >= 0"):
        LoadSettings(retries=-1)
    with pytest.raises(UserError, match="--rate-limit must be a positive"):
        ServeOptions.from_flat({"rate_limit": 0})


def test_serve_flags_fill_the_settings_and_the_proxy_timeout() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["--model", "m", "--rate-limit", "30", "--api-keys-file", "k.txt", "--request-timeout",
         "12", "--backlog-batches", "2", "--retries", "0", "--max-body-bytes", "4096"]
    )  # fmt: skip
    options = cli.options_from_args(args)
    assert (options.access.rate_limit, options.access.api_keys_file) == (30, "k.txt")
    assert (options.load.request_timeout_s, options.load.retries) == (12, 0)
    assert options.backlog_sentences == 64 and options.max_body_bytes == 4096
    assert cli.http_options("127.0.0.1", 8000, options.load)["request_timeout_s"] == 17
    assert "request_timeout_s" not in cli.http_options("h", 1, LoadSettings(request_timeout_s=0))
