"""The one retry policy and loop (rebuild/core/retry.py): pure rules, then the loop with a fake sleep."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from rebuild.core.retry import GaveUp, Retryable, RetryEvent, RetryPolicy, log_retries, parse_retry_after, retry


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0 and parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    for invalid in (None, "", "soon", "-5", "nan"):
        assert parse_retry_after(invalid) is None


def test_policy_needs_a_bound() -> None:
    with pytest.raises(ValueError, match="bound"):
        RetryPolicy(attempts=None, max_wait=None)
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)


def test_next_delay_rules() -> None:
    p = RetryPolicy(attempts=4, backoff_base=1.0, backoff_max=3.0, max_wait=10.0, retry_after_max=6.0)
    assert [p.next_delay(n)[0] for n in (1, 2, 3)] == [1.0, 2.0, 3.0]
    assert p.next_delay(4) == (None, "attempts")
    assert p.next_delay(1, retry_after=5.0) == (5.0, None)
    assert p.next_delay(1, retry_after=60.0) == (6.0, None)  # capped, then honoured
    assert p.next_delay(1, retry_after=0.0) == (1.0, None)  # 0 names no wait: backoff
    assert p.next_delay(1, retry_after=5.0, waited=6.0) == (None, "retry_after")  # beyond the budget: at once
    assert p.next_delay(3, waited=8.0) == (2.0, None)  # a backoff is shortened to what is left
    assert p.next_delay(2, waited=10.0) == (None, "budget")
    d = RetryPolicy(attempts=None, max_wait=None, deadline=5.0, backoff_base=0.5, backoff_max=0.5)
    assert d.next_delay(1000, elapsed=4.9)[0] == pytest.approx(0.1) and d.next_delay(1, elapsed=5.0) == (None, "budget")


def test_backoff_survives_thousands_of_failures() -> None:
    assert RetryPolicy(attempts=None, deadline=60.0, backoff_base=0.5, backoff_max=0.5).backoff(5000) == 0.5


def test_jitter_adds_at_most_its_fraction() -> None:
    p = RetryPolicy(backoff_base=1.0, jitter=0.5)
    assert all(1.0 <= p.backoff(1) <= 1.5 for _ in range(50))


def test_loop_retries_logs_one_line_per_retry_and_returns() -> None:
    sleeps: list[float] = []
    events: list[RetryEvent] = []

    def attempt(n: int) -> str:
        if n < 3:
            raise Retryable("HTTP 503", status=503)
        return "ok"

    policy = RetryPolicy(attempts=4, backoff_base=0.1, backoff_max=1.0)
    assert retry(attempt, policy, operation="GET /x", on_retry=events.append, sleep=sleeps.append) == "ok"
    assert sleeps == [0.1, 0.2]
    assert [e.line() for e in events] == [
        "Request attempt #1/4 failed; will retry: GET /x -> HTTP 503",
        "Request attempt #2/4 failed; will retry: GET /x -> HTTP 503",
    ]


def test_loop_gives_up_from_the_cause_and_passes_other_errors_through(caplog: pytest.LogCaptureFixture) -> None:
    def refused(n: int) -> None:
        try:
            raise ConnectionRefusedError("refused")
        except ConnectionRefusedError as exc:
            raise Retryable(f"{type(exc).__name__}: {exc}", result=n) from exc

    with caplog.at_level(logging.WARNING, logger="t"), pytest.raises(GaveUp) as info:
        retry(refused, RetryPolicy(attempts=3, backoff_base=0.0), operation="op", on_retry=log_retries(logging.getLogger("t")))
    gave = info.value
    assert gave.reason == "attempts" and gave.attempt == 3 and gave.result == 3
    assert isinstance(gave.__cause__, ConnectionRefusedError)
    assert len(caplog.records) == 2

    def bad(n: int) -> None:
        raise KeyError("bad input")

    with pytest.raises(KeyError):
        retry(bad, RetryPolicy(), operation="op", sleep=lambda s: None)


def test_throttled_failures_follow_their_own_rules_and_count_apart() -> None:
    sleeps: list[float] = []
    script = [Retryable("503", status=503)] * 2 + [Retryable("429", status=429, throttled=True, retry_after=1.0)] * 10
    policy = RetryPolicy(
        attempts=3, max_wait=None, backoff_base=0.1, throttled=RetryPolicy(attempts=None, max_wait=None, deadline=300.0)
    )

    def attempt(n: int) -> int:
        if n <= len(script):
            raise script[n - 1]
        return n

    assert retry(attempt, policy, operation="op", on_retry=lambda e: None, sleep=sleeps.append) == 13
    assert sleeps == [0.1, 0.2] + [1.0] * 10
