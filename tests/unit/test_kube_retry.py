"""The Kubernetes transport's retry policy: 429s are retried as the server asks for as long as
THROTTLE_BUDGET allows (sustained throttling is not an outage), while connection errors and
5xx keep their attempt limit. The policy is a pure function; the loop around it is driven
through an httpx MockTransport with a fake clock, so these tests take no real time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import httpx2 as httpx
import pytest

from rebuild.adapters.kube import (
    BACKOFF_MAX,
    MAX_ATTEMPTS,
    RETRY_AFTER_MAX,
    THROTTLE_BUDGET,
    THROTTLED,
    Kube,
    next_delay,
)
from rebuild.core.errors import ClusterError, KubeError

SERVER = "https://127.0.0.1:6443"


# --------------------------------------------------------------------------- pure policy


def test_5xx_and_connection_errors_keep_the_attempt_limit() -> None:
    delays = [next_delay(503, failures=n, throttles=0, elapsed=0, retry_after=None) for n in range(1, MAX_ATTEMPTS + 1)]
    assert delays[:-1] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0] and delays[-1] is None
    assert next_delay(None, failures=MAX_ATTEMPTS - 1, throttles=0, elapsed=0, retry_after=None) == 5.0
    assert next_delay(None, failures=MAX_ATTEMPTS, throttles=0, elapsed=0, retry_after=None) is None
    assert next_delay(502, failures=2, throttles=0, elapsed=0, retry_after=7.0) == 7.0  # a 503's Retry-After too


def test_429_is_retried_past_the_attempt_limit_until_the_time_budget() -> None:
    # Far more 429s than MAX_ATTEMPTS: still retried, each as long as Retry-After says.
    assert next_delay(THROTTLED, failures=0, throttles=50, elapsed=60, retry_after=1.0) == 1.0
    assert next_delay(THROTTLED, failures=MAX_ATTEMPTS - 1, throttles=500, elapsed=10, retry_after=2.0) == 2.0
    # Without Retry-After: exponential backoff, capped.
    assert next_delay(THROTTLED, failures=0, throttles=1, elapsed=0, retry_after=None) == 0.2
    assert next_delay(THROTTLED, failures=0, throttles=40, elapsed=0, retry_after=None) == BACKOFF_MAX
    # The budget: a wait that would end past it is not started.
    assert next_delay(THROTTLED, failures=0, throttles=9, elapsed=THROTTLE_BUDGET - 1, retry_after=1.0) == 1.0
    assert next_delay(THROTTLED, failures=0, throttles=9, elapsed=THROTTLE_BUDGET - 1, retry_after=2.0) is None
    assert next_delay(THROTTLED, failures=0, throttles=9, elapsed=THROTTLE_BUDGET + 1, retry_after=None) is None


# --------------------------------------------------------------------------- the loop, on a mock transport


class Clock:
    """time.monotonic/time.sleep for the retry loop: sleeping advances the clock at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(time, "monotonic", c.monotonic)
    monkeypatch.setattr(time, "sleep", c.sleep)
    return c


Answer = tuple[int, dict[str, str]]


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Answer]], tuple[Kube, list[str]]]]:
    """A Kube whose server answers from a script (status, headers), then 200; records request paths."""
    made: list[Kube] = []

    def make(script: list[Answer]) -> tuple[Kube, list[str]]:
        seen: list[str] = []
        answers = iter(script)

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.path)
            status, headers = next(answers, (200, {}))
            body = {"kind": "Status", "message": "too many requests"} if status >= 400 else {"kind": "ConfigMapList"}
            return httpx.Response(status, headers=headers, json=body)

        k = Kube(httpx.Client(transport=httpx.MockTransport(handler), base_url=SERVER), SERVER)
        made.append(k)
        return k, seen

    yield make
    for k in made:
        k.close()


def test_sustained_429s_are_honoured_then_the_request_succeeds(
    clock: Clock, scripted: Callable[[list[Answer]], tuple[Kube, list[str]]], caplog: pytest.LogCaptureFixture
) -> None:
    throttled = [(429, {"Retry-After": "1"})] * 25 + [(429, {"Retry-After": "3"})] * 5
    k, seen = scripted(throttled)
    with caplog.at_level(logging.WARNING, logger="rebuild.kube"):
        resp = k.request("GET", "/api/v1/configmaps")
    assert resp.status_code == 200
    assert len(seen) == 31  # 30 answers of 429, far past MAX_ATTEMPTS, then the real one
    assert clock.sleeps == [1.0] * 25 + [3.0] * 5  # exactly what the server asked for
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 30
    assert lines[0] == (
        "Request attempt #1 failed; will retry in 1.0s (throttled, 0s of 300s): "
        "GET /api/v1/configmaps -> HTTP 429: too many requests"
    )
    assert lines[-1].startswith("Request attempt #30 failed; will retry in 3.0s (throttled, 37s of 300s): GET ")


def test_429_gives_up_when_the_time_budget_is_spent(
    clock: Clock, scripted: Callable[[list[Answer]], tuple[Kube, list[str]]]
) -> None:
    k, seen = scripted([(429, {"Retry-After": "30"})] * 100)
    with pytest.raises(ClusterError) as err:
        k.request("GET", "/api/v1/configmaps", what="list ConfigMap")
    assert clock.sleeps == [30.0] * 10 and sum(clock.sleeps) <= THROTTLE_BUDGET
    assert len(seen) == 11
    assert err.value.message.startswith(
        "GET /api/v1/configmaps (list ConfigMap) was still throttled after 300s (11 HTTP 429 answers): HTTP 429"
    )
    assert err.value.fix and "priority" in err.value.fix


def test_retry_after_is_capped(clock: Clock, scripted: Callable[[list[Answer]], tuple[Kube, list[str]]]) -> None:
    k, _ = scripted([(429, {"Retry-After": "3600"}), (429, {"Retry-After": "soon"})])
    assert k.request("GET", "/api").status_code == 200
    assert clock.sleeps == [RETRY_AFTER_MAX, 0.4]  # an unreadable Retry-After: backoff (2nd 429)


def test_5xx_still_fails_after_max_attempts(
    clock: Clock, scripted: Callable[[list[Answer]], tuple[Kube, list[str]]], caplog: pytest.LogCaptureFixture
) -> None:
    k, seen = scripted([(503, {})] * 10)
    with caplog.at_level(logging.WARNING, logger="rebuild.kube"), pytest.raises(ClusterError) as err:
        k.request("GET", "/api/v1/namespaces")
    assert len(seen) == MAX_ATTEMPTS
    assert clock.sleeps == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    assert err.value.message == "GET /api/v1/namespaces failed after 8 attempts: HTTP 503: too many requests"
    assert [r.getMessage() for r in caplog.records][:2] == [
        "Request attempt #1/8 failed; will retry: GET /api/v1/namespaces -> HTTP 503: too many requests",
        "Request attempt #2/8 failed; will retry: GET /api/v1/namespaces -> HTTP 503: too many requests",
    ]


def test_429s_do_not_use_up_the_attempts_of_5xx(clock: Clock, scripted: Callable[[list[Answer]], tuple[Kube, list[str]]]) -> None:
    script: list[Answer] = [(503, {})] * (MAX_ATTEMPTS - 1) + [(429, {"Retry-After": "1"})] * 20
    k, seen = scripted(script)
    assert k.request("GET", "/api/v1/pods").status_code == 200
    assert len(seen) == MAX_ATTEMPTS - 1 + 20 + 1


def test_other_errors_are_not_retried(clock: Clock, scripted: Callable[[list[Answer]], tuple[Kube, list[str]]]) -> None:
    k, seen = scripted([(403, {})])
    with pytest.raises(KubeError) as err:
        k.request("GET", "/api/v1/secrets")
    assert err.value.status == 403 and len(seen) == 1 and clock.sleeps == []
