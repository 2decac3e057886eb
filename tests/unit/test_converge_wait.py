"""wait_converged: a poll on the one retry loop; an API outage is waited out within the timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

import pytest

from rebuild.core.config import VerifySpec
from rebuild.core.errors import ClusterError
from rebuild.recover import converge


class FakeReport(converge.VerifyReport):
    def __init__(self, ok: bool) -> None:
        super().__init__()
        self.ok = ok

    @property
    def converged(self) -> bool:
        return self.ok

    def summary(self) -> dict[str, int]:
        return {"objects": 1, "verified": int(self.ok), "missing": 0, "drifted": 0, "unhealthy": int(not self.ok)}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(converge, "_refuse_unknown_fields", lambda *a: None)
    return sleeps


def script(monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> None:
    it: Iterator[Any] = iter(answers)

    def check(*_a: Any, **_k: Any) -> converge.VerifyReport:
        answer = next(it)
        if isinstance(answer, BaseException):
            raise answer
        return cast(converge.VerifyReport, answer)

    monkeypatch.setattr(converge, "check", check)


def test_polls_through_an_outage_until_converged(clock: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    script(monkeypatch, [FakeReport(False), ClusterError("GET /api failed after 8 attempts: refused"), FakeReport(True)])
    notes: list[str] = []
    report = converge.wait_converged(cast(Any, None), [], VerifySpec(timeout=10), progress=notes.append)
    assert report.converged and report.attempts == 3 and clock == [0.5, 0.5]
    assert notes == [
        "verify: 0/1 verified, 0 missing, 0 drifted, 1 not healthy yet",
        "verify: the API server is not answering (GET /api failed after 8 attempts: refused); still waiting",
    ]


def test_the_timeout_returns_the_last_report_or_the_outage(clock: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    script(monkeypatch, [FakeReport(False)] * 10)
    report = converge.wait_converged(cast(Any, None), [], VerifySpec(timeout=1.0))
    assert not report.converged and report.attempts == 3 and sum(clock) == 1.0
    script(monkeypatch, [ClusterError("down")] * 10)
    with pytest.raises(ClusterError, match="down"):
        converge.wait_converged(cast(Any, None), [], VerifySpec(timeout=0))
