"""Holding up under overload and failures: a bounded backlog per translator replica, a deadline
per request, and one more try for a request whose replica died.

Why the backlog lives in the replica: when every replica is at Ray Serve's
`max_ongoing_requests`, further requests wait in the caller's router, which hands them out
from a couple of routing tasks that probe the busy replica and back off up to half a second
between tries, so a replica drains faster than it is refilled and throughput falls as
clients are added. A replica that knows its own backlog (in sentences, whatever the requests
carry) refuses the excess at once instead, and Ray Serve's limits stay out of the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError

T = TypeVar("T")
# A replica that died or cannot be reached: the request never finished there, and
# translating again elsewhere gives the same result.
REPLICA_LOST = (ActorDiedError, ActorUnavailableError, RayActorError)


class Overloaded(Exception):
    """Refused for load: answered 503 with `Retry-After`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message, retry_after_s)
        self.message, self.retry_after_s = message, retry_after_s

    def __str__(self) -> str:
        return self.message


class DeadlineExceeded(Exception):
    """The request ran past its deadline: answered 504."""


@dataclass(frozen=True)
class Busy:
    """A replica's answer when its backlog has no room: returned rather than raised, so the
    refusal costs the replica no error log and no traceback; the caller raises
    `Overloaded`."""

    message: str
    retry_after_s: float

    def refusal(self) -> Overloaded:
        return Overloaded(self.message, self.retry_after_s)


@dataclass
class Backlog:
    """The sentences a replica holds (decoding and waiting to), bounded by `limit`, and by
    `max_wait_s` of expected waiting (a request that would wait longer would most likely
    miss its deadline, after taking a place in the queue).

    The expected wait is the searches the backlog needs (`batch_size` sentences each) times
    the time one search has been taking while sentences waited: a search costs about the
    same whether it holds one sentence or a full batch, so a rate in sentences per second,
    measured on the small batches a burst starts with, would overstate the wait many times.
    The hint a refusal carries is that wait for the backlog as it is, so clients that
    honour `Retry-After` come back when there is room instead of all at once.
    """

    limit: int
    min_retry_after_s: float
    max_wait_s: float | None = None
    batch_size: int = 1  # the most sentences one search decodes
    sentences: int = 0
    search_s: float = 0.0  # seconds one search takes while sentences wait, smoothed
    _last_done: float = 0.0
    _busy: bool = False  # sentences were waiting when the last search ended

    def refuses(self, count: int) -> Busy | None:
        """Why `count` more sentences find no room, or None (never when empty, so a request
        larger than the limit still runs, alone)."""
        if not self.sentences:
            return None
        wait_s = self.wait_s(count)
        if self.sentences + count <= self.limit and wait_s <= (self.max_wait_s or math.inf):
            return None
        return Busy(
            f"busy: {self.sentences} sentences are waiting on this replica (at most "
            f"{self.limit}, about {wait_s:.0f} s of work); retry later",
            self.retry_after_s(),
        )

    def wait_s(self, count: int = 0) -> float:
        """How long the backlog and `count` more sentences take to decode, by the searches
        they need; 0 before a search has been timed."""
        return math.ceil((self.sentences + count) / self.batch_size) * self.search_s

    @contextlib.contextmanager
    def hold(self, count: int) -> Iterator[None]:
        """Count `count` sentences in the backlog for the block."""
        self.sentences += count
        try:
            yield
        finally:
            self.sentences -= count

    def decoded(self, count: int, now: float | None = None) -> None:
        """Record a search of `count` sentences ending now. Searches run one after another,
        so while sentences wait the time between two ends is what one search takes, with
        everything around it."""
        now = time.monotonic() if now is None else now
        if self._busy and now > self._last_done:
            took = now - self._last_done
            self.search_s = 0.8 * self.search_s + 0.2 * took if self.search_s else took
        self._last_done, self._busy = now, self.sentences > count

    def retry_after_s(self) -> float:
        return max(self.min_retry_after_s, self.wait_s())


@dataclass
class RecentRefusals:
    """Models a replica refused lately, so the ingress refuses their next requests itself,
    without a call, until one of their calls completes (a replica made room) or `hold_s`
    passes: under overload most requests would be refused, and each refusal from a replica
    costs a round trip to it and its time."""

    hold_s: float = 0.5
    clock: Callable[[], float] = time.monotonic
    _refused: dict[str, tuple[float, Overloaded]] = field(default_factory=dict)

    def refusal(self, model_id: str) -> Overloaded | None:
        until, refusal = self._refused.get(model_id, (0.0, None))
        return refusal if self.clock() < until else None

    def refused(self, model_id: str, refusal: Overloaded) -> None:
        self._refused[model_id] = (self.clock() + self.hold_s, refusal)

    def completed(self, model_id: str) -> None:
        self._refused.pop(model_id, None)

    def every(self, model_ids: Iterable[str]) -> Overloaded | None:
        """A refusal when every one of `model_ids` is refused now: the request can be
        refused before its body is read, whichever model it asks for."""
        refusals = [self.refusal(model_id) for model_id in model_ids]
        if refusals and all(refusals):
            return max(refusals, key=lambda refusal: refusal.retry_after_s)
        return None


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    timeout_s: float | None,
    retries: int,
    on_retry: Callable[[BaseException], None],
) -> T:
    """`call()` within `timeout_s` (None: no deadline), sent again up to `retries` times
    when its replica was lost. A replica's `Busy` and Ray Serve's own refusal
    (`max_queued_requests`) become `Overloaded`; running out of time `DeadlineExceeded`
    (the pending call is cancelled)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for attempt in range(retries + 1):
        try:
            result = await _within(call, deadline)
        except REPLICA_LOST as error:
            if attempt == retries:
                raise
            on_retry(error)
            continue
        except BackPressureError as error:
            raise Overloaded(str(error), error.retry_after_s or 1.0) from None
        if isinstance(result, Busy):
            raise result.refusal()
        return result
    raise AssertionError("unreachable")


async def _within(call: Callable[[], Awaitable[T]], deadline: float | None) -> T:
    if deadline is None:
        return await call()
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded("the request ran past its deadline")
    response = call()
    try:
        return await asyncio.wait_for(_await(response), remaining)
    except TimeoutError:
        cancel = getattr(response, "cancel", None)
        if cancel is not None:  # a DeploymentResponse: stop the work on the replica too
            cancel()
        raise DeadlineExceeded("the request ran past its deadline") from None


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
