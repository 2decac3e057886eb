"""The one retry policy, the one Retry-After parser and the one retry loop.

Why one: the Kubernetes client, the forge clients, the git fetch, the webhook notifier, the
converge poll and a runbook's ``retry:`` each used to carry their own loop, backoff and
Retry-After parsing, with small differences nobody had chosen. Here the policy is data
(:class:`RetryPolicy`: how many attempts, how long in total, which backoff, which HTTP statuses
heal, how much of a server's Retry-After is honoured), and :func:`retry` is the only loop.

What heals is the caller's call, made once per failure: an attempt raises :class:`Retryable`
for a failure that can heal (a connection error, a status in ``policy.statuses``, a transient
git error) and any other exception for one that cannot (bad input: never retried). The loop
decides whether and how long to wait, logs one line per retry naming the attempt, the
operation and the error (kopf's ``Request attempt #2/4 failed; will retry: GET ... -> 503``),
and ends with :class:`GaveUp`, which the caller turns into its own error message.

The rules, the same for every user:

- the wait after a failure is the server's Retry-After when it names a positive one (capped at
  ``retry_after_max``), else exponential backoff ``backoff_base * 2**(n-1)`` capped at
  ``backoff_max`` (plus up to ``jitter`` of it at random);
- a Retry-After longer than what is left of the budget fails at once (a doomed wait helps
  nobody); a backoff longer than what is left is shortened to it; nothing left: give up;
- the budget is ``max_wait`` (seconds spent waiting) and/or ``deadline`` (seconds since the
  first attempt); ``attempts`` bounds the failures (None: only the budget bounds them);
- throttling may follow its own rules (``throttled``: the Kubernetes API server's 429s are
  retried for minutes, not for a number of attempts), counted apart from other failures.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import tenacity

T = TypeVar("T")

# 501 (Not Implemented) and 505 will not heal by waiting; the others are what proxies,
# overloaded servers and API priority and fairness answer while they recover.
HEALING_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
THROTTLED = 429

StopReason = Literal["attempts", "budget", "retry_after"]

# The log line of a retry: fields are those of RetryEvent.
REQUEST_LINE = "Request attempt #{failures}/{attempts} failed; will retry: {operation} -> {error}"


@dataclass(frozen=True)
class RetryPolicy:
    """What is retried and for how long, as data a reader (and a test) can see.

    The defaults are the project's policy for one HTTP request to a service (a forge, a
    webhook): 5 attempts, 0.5 s doubling to 8 s, at most 20 s of waiting in all, a Retry-After
    honoured in full (or, beyond the budget, answered with an error at once); ``timeout`` is
    per attempt, for the clients that set one.
    """

    attempts: int | None = 5
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    jitter: float = 0.0  # up to this fraction of a backoff is added at random
    max_wait: float | None = 20.0  # seconds of waiting in all, between the attempts
    deadline: float | None = None  # seconds since the first attempt
    retry_after_max: float | None = None  # the longest Retry-After honoured (longer ones are capped)
    timeout: float = 30.0  # per attempt, for the clients that set one (forges, webhooks)
    statuses: frozenset[int] = field(default=HEALING_STATUSES)
    throttled: RetryPolicy | None = None  # the rules for throttled failures (429), if they differ

    def __post_init__(self) -> None:
        if self.attempts is None and self.max_wait is None and self.deadline is None:
            raise ValueError("a retry policy needs a bound: attempts, max_wait or deadline")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {self.attempts}")

    def heals(self, status: int) -> bool:
        """Whether an answer with this HTTP status may succeed when sent again."""
        return status in self.statuses

    def backoff(self, failures: int) -> float:
        """The wait after the ``failures``-th failure when the server names none: base, 2*base, ... capped."""
        # the exponent stops growing long before a float would overflow (a poll may fail thousands of times)
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** min(failures - 1, 64))
        if self.jitter:
            delay += random.uniform(0.0, self.jitter * delay)
        return float(delay)

    @property
    def budget(self) -> float | None:
        """The time bound, for messages: ``deadline`` or ``max_wait``."""
        return self.deadline if self.deadline is not None else self.max_wait

    def remaining(self, *, elapsed: float, waited: float) -> float:
        left = math.inf
        if self.max_wait is not None:
            left = min(left, self.max_wait - waited)
        if self.deadline is not None:
            left = min(left, self.deadline - elapsed)
        return left

    def next_delay(
        self, failures: int, *, retry_after: float | None = None, elapsed: float = 0.0, waited: float = 0.0
    ) -> tuple[float | None, StopReason | None]:
        """(seconds to wait, None) before the next attempt, or (None, why) to give up.

        ``failures`` counts the failures so far, this one included; ``elapsed`` is the time
        since the first attempt, ``waited`` the time spent waiting between attempts.
        """
        if retry_after is not None and self.retry_after_max is not None:
            retry_after = min(retry_after, self.retry_after_max)
        remaining = self.remaining(elapsed=elapsed, waited=waited)
        if retry_after and retry_after > remaining:
            return None, "retry_after"
        if self.attempts is not None and failures >= self.attempts:
            return None, "attempts"
        if remaining <= 0:
            return None, "budget"
        # A Retry-After of 0 names no wait: back off rather than call a struggling server in a loop.
        delay = retry_after if retry_after else self.backoff(failures)
        return min(delay, remaining), None


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date, RFC 9110 10.2.3); None if absent/invalid."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if seconds >= 0 and not math.isnan(seconds) else None


class Retryable(Exception):
    """Raised by an attempt for a failure that can heal; raise it ``from`` the transport error.

    ``error`` is what the log line and the final message quote (already free of secrets);
    ``result`` is what the attempt produced anyway (a poll's last answer), kept for the caller.
    """

    def __init__(
        self,
        error: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        throttled: bool = False,
        result: Any = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.retry_after = retry_after
        self.throttled = throttled
        self.result = result


class GaveUp(Exception):
    """The retries are over: ``reason`` says which bound ended them; the rest describes the last failure.

    Raised ``from`` the last failure's cause (the transport error), so callers can re-raise or
    wrap it; ``failures`` counts the failures of the last one's kind (throttled or not).
    """

    def __init__(
        self,
        reason: StopReason,
        *,
        operation: str,
        attempt: int,
        failures: int,
        policy: RetryPolicy,
        elapsed: float,
        waited: float,
        last: Retryable,
    ) -> None:
        super().__init__(f"{operation}: gave up after {attempt} attempts ({reason}): {last.error}")
        self.reason = reason
        self.operation = operation
        self.attempt = attempt
        self.failures = failures
        self.policy = policy
        self.elapsed = elapsed
        self.waited = waited
        self.error = last.error
        self.status = last.status
        self.throttled = last.throttled
        self.retry_after = last.retry_after
        self.result = last.result


@dataclass(frozen=True)
class RetryEvent:
    """One retry about to happen: what the log line (and a progress callback) says."""

    operation: str
    attempt: int  # attempts made so far
    failures: int  # failures of this kind so far (what ``attempts`` bounds)
    attempts: int | None  # the bound, None when only the budget bounds
    delay: float
    elapsed: float
    waited: float
    budget: float | None
    error: str
    status: int | None
    throttled: bool
    cause: BaseException | None

    def line(self, template: str = REQUEST_LINE) -> str:
        """The log line, from a template over this event's fields."""
        return template.format(**{f.name: getattr(self, f.name) for f in fields(self)})


def log_retries(
    logger: logging.Logger, template: str = REQUEST_LINE, throttled: str | None = None
) -> Callable[[RetryEvent], None]:
    """An ``on_retry`` that logs one warning per retry (``throttled``: the template for throttled failures)."""

    def on_retry(event: RetryEvent) -> None:
        logger.warning("%s", event.line(throttled if event.throttled and throttled else template))

    return on_retry


_log = logging.getLogger("rebuild.retry")


def retry(
    attempt: Callable[[int], T],
    policy: RetryPolicy,
    *,
    operation: str,
    on_retry: Callable[[RetryEvent], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Call ``attempt(n)`` (n = 1, 2, ...) until it returns, under ``policy``; the only retry loop.

    ``attempt`` raises :class:`Retryable` for a failure that can heal; any other exception ends
    the loop at once, unchanged. Before each retry ``on_retry`` gets the event (default: one
    warning in the ``rebuild.retry`` log). When a bound is reached, :class:`GaveUp` is raised.

    The loop is tenacity's ``Retrying``. Its ``wait`` (which tenacity runs before ``stop``) asks
    the policy, in one place, whether to go on and how long to wait (a server's Retry-After, or
    backoff, within the budget): that decision needs the failure itself and the time already
    spent waiting; ``stop`` then reads it.
    """
    report = on_retry or log_retries(_log)
    start = time.monotonic()
    waited = 0.0
    counts = [0, 0]  # failures not throttled, throttled
    pending: list[RetryEvent] = []  # the retry stop() decided on, for before_sleep to report
    gave_up: list[GaveUp] = []

    def decide(state: tenacity.RetryCallState) -> float:
        """tenacity's ``wait``, run before its ``stop``: the policy's decision for this failure."""
        failure = state.outcome.exception() if state.outcome is not None else None
        assert isinstance(failure, Retryable)  # retry= lets only these through
        apart = failure.throttled and policy.throttled is not None
        rules = policy.throttled if apart and policy.throttled is not None else policy
        counts[apart] += 1
        elapsed = time.monotonic() - start
        delay, reason = rules.next_delay(counts[apart], retry_after=failure.retry_after, elapsed=elapsed, waited=waited)
        if delay is None or reason is not None:
            gave_up.append(
                GaveUp(
                    reason or "attempts",
                    operation=operation,
                    attempt=state.attempt_number,
                    failures=counts[apart],
                    policy=rules,
                    elapsed=elapsed,
                    waited=waited,
                    last=failure,
                )
            )
            return 0.0
        pending.append(
            RetryEvent(
                operation=operation,
                attempt=state.attempt_number,
                failures=counts[apart],
                attempts=rules.attempts,
                delay=delay,
                elapsed=elapsed,
                waited=waited,
                budget=rules.budget,
                error=failure.error,
                status=failure.status,
                throttled=failure.throttled,
                cause=failure.__cause__,
            )
        )
        return delay

    def announce(_state: tenacity.RetryCallState) -> None:
        report(pending[-1])

    def pause(seconds: float) -> None:
        nonlocal waited
        (sleep or time.sleep)(seconds)
        waited += seconds

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Retryable),
        wait=decide,
        stop=lambda _state: bool(gave_up),
        before_sleep=announce,
        sleep=pause,
        reraise=True,
    )
    try:
        for try_ in retrying:
            with try_:
                return attempt(try_.retry_state.attempt_number)
    except Retryable as failure:
        if gave_up:
            raise gave_up[-1] from failure.__cause__
        raise
    raise AssertionError("tenacity ended without an outcome")  # pragma: no cover
