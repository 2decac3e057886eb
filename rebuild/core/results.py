"""The run result (schema ``rebuild.run/v1``): its fields, its one ``to_dict``, its reading and its check.

Why one module: a run result is produced by a drill and by a runbook's report step, written as
result.json, rendered as Markdown, JUnit and HTML, summarised in the drill history, posted to a
webhook and printed by the CLI. Its schema lives here once, so a field is added in one place and
every reader sees it.

Two ways in: producers build a :class:`RunResult` from what they measured and call
``to_dict()``/``to_json()`` (the only place the dict is built); consumers that hold a dict (a
result.json, a runbook step's output, a test's sample) call :meth:`RunResult.read`, which is
lenient (a missing or mistyped key falls back to an empty value, so a run that failed before
any phase still renders). :func:`validate_run` is the strict check of the schema
(docs/reports.md) for producers and tests.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rebuild.core.model import Phases

RUN_SCHEMA = "rebuild.run/v1"
RUN_KINDS = ("drill", "up")
PHASE_STATUSES = ("ok", "failed", "skipped")
COUNTS = ("objects", "verified", "missing", "drifted", "unhealthy")


def utc_stamp() -> str:
    """Now, as the run result writes its times: ISO 8601 UTC to the second."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(v: Any) -> dt.datetime | None:
    """An ISO 8601 time (``Z`` or an offset; none means UTC), or None."""
    if not isinstance(v, str) or not v:
        return None
    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class RunPhase:
    name: str
    seconds: float
    status: str = "ok"
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seconds": round(self.seconds, 3), "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class Failure:
    """One object (or file) that kept the run from passing, with where it is declared."""

    object: str
    source: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"object": self.object, "source": self.source, "message": self.message}


@dataclass(frozen=True)
class ObjectCounts:
    objects: int = 0
    verified: int = 0
    missing: int = 0
    drifted: int = 0
    unhealthy: int = 0

    @classmethod
    def of(cls, summary: Mapping[str, Any]) -> ObjectCounts:
        """From a verify summary (``VerifyReport.summary()``); lenient about missing keys."""
        return cls(**{k: int(_num(summary.get(k))) for k in COUNTS})

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in COUNTS}


@dataclass
class RunResult:
    """A drill or a recovery as one record: verdict, times (RTO), recovery point (RPO), failures."""

    kind: str  # drill | up
    cluster: str
    started_at: str
    finished_at: str
    passed: bool
    rto_seconds: float
    revision_age_seconds: float | None = None
    uncaptured_changes: int | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)  # SourceState.to_dict() of each source
    phases: list[RunPhase] = field(default_factory=list)
    objects: ObjectCounts = field(default_factory=ObjectCounts)
    failures: list[Failure] = field(default_factory=list)
    error: str = ""

    @property
    def verdict(self) -> str:
        return "PASSED" if self.passed else "FAILED"

    @property
    def title(self) -> str:
        return f"rebuild {self.kind} {self.cluster}".strip()

    def to_dict(self) -> dict[str, Any]:
        """The result in schema rebuild.run/v1: the only place its dict is built."""
        return {
            "schema": RUN_SCHEMA,
            "kind": self.kind,
            "cluster": self.cluster,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "passed": self.passed,
            "rto_seconds": round(self.rto_seconds, 3),
            "rpo": {"revision_age_seconds": self.revision_age_seconds, "uncaptured_changes": self.uncaptured_changes},
            "sources": self.sources,
            "phases": [p.to_dict() for p in self.phases],
            "objects": self.objects.to_dict(),
            "failures": [f.to_dict() for f in self.failures],
            "error": self.error,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n"

    @staticmethod
    def phases_of(phases: Phases) -> list[RunPhase]:
        return [RunPhase(p.name, p.seconds, p.status, p.detail) for p in phases.items]

    @classmethod
    def read(cls, result: RunResult | Mapping[str, Any]) -> RunResult:
        """A result with every field present and typed, whatever the producer left out (lenient)."""
        data = result.to_dict() if isinstance(result, RunResult) else result
        rpo = data.get("rpo") if isinstance(data.get("rpo"), Mapping) else {}
        assert isinstance(rpo, Mapping)
        age = rpo.get("revision_age_seconds")
        unc = rpo.get("uncaptured_changes")
        phases: list[RunPhase] = []
        for p in data.get("phases") or []:
            if not isinstance(p, Mapping):
                continue
            status = _text(p.get("status")) or "ok"
            phases.append(
                RunPhase(
                    _text(p.get("name")) or "?",
                    max(0.0, _num(p.get("seconds"))),
                    status if status in PHASE_STATUSES else "failed",
                    _text(p.get("detail")),
                )
            )
        objects = data.get("objects") if isinstance(data.get("objects"), Mapping) else {}
        assert isinstance(objects, Mapping)
        failures = [
            Failure(_text(f.get("object")), _text(f.get("source")), _text(f.get("message")))
            for f in data.get("failures") or []
            if isinstance(f, Mapping)
        ]
        rto = data.get("rto_seconds")
        return cls(
            kind=_text(data.get("kind")) or "drill",
            cluster=_text(data.get("cluster")),
            started_at=_text(data.get("started_at")),
            finished_at=_text(data.get("finished_at")),
            passed=data.get("passed") is True,
            rto_seconds=_num(rto) if rto is not None else sum(p.seconds for p in phases),
            revision_age_seconds=None if age is None else max(0.0, _num(age)),
            uncaptured_changes=unc if isinstance(unc, int) and not isinstance(unc, bool) else None,
            sources=[dict(s) for s in data.get("sources") or [] if isinstance(s, Mapping)],
            phases=phases,
            objects=ObjectCounts.of(objects),
            failures=failures,
            error=_text(data.get("error")),
        )


def as_dict(result: RunResult | Mapping[str, Any]) -> dict[str, Any]:
    """The dict of a result as it is written: a RunResult's ``to_dict()``, a dict as it came."""
    return result.to_dict() if isinstance(result, RunResult) else dict(result)


def _num(v: Any, default: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or math.isinf(v):
        return default
    return float(v)


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def validate_run(result: Any) -> list[str]:
    """Every way ``result`` departs from schema rebuild.run/v1 (empty list: it conforms)."""
    problems: list[str] = []
    if not isinstance(result, dict):
        return [f"the result must be a JSON object, not {type(result).__name__}"]

    def need(obj: dict[str, Any], key: str, types: tuple[type, ...], where: str, nullable: bool = False) -> Any:
        if key not in obj:
            problems.append(f"{where}{key} is missing")
            return None
        v = obj[key]
        if v is None and nullable:
            return None
        if (isinstance(v, bool) and bool not in types) or not isinstance(v, types):
            problems.append(f"{where}{key} must be {' or '.join(t.__name__ for t in types)}, not {type(v).__name__}")
            return None
        return v

    if result.get("schema") != RUN_SCHEMA:
        problems.append(f"schema must be {RUN_SCHEMA!r}, not {result.get('schema')!r}")
    kind = need(result, "kind", (str,), "")
    if kind is not None and kind not in RUN_KINDS:
        problems.append(f"kind must be 'drill' or 'up', not {kind!r}")
    need(result, "cluster", (str,), "")
    for key in ("started_at", "finished_at"):
        v = need(result, key, (str,), "")
        if v is not None and parse_time(v) is None:
            problems.append(f"{key} {v!r} is not an ISO 8601 time")
    need(result, "passed", (bool,), "")
    need(result, "rto_seconds", (int, float), "")
    need(result, "error", (str,), "")
    rpo = need(result, "rpo", (dict,), "")
    if rpo is not None:
        need(rpo, "revision_age_seconds", (int, float), "rpo.", nullable=True)
        need(rpo, "uncaptured_changes", (int,), "rpo.", nullable=True)
    sources = need(result, "sources", (list,), "")
    for i, s in enumerate(sources or []):
        w = f"sources[{i}]."
        if not isinstance(s, dict):
            problems.append(f"sources[{i}] must be an object")
            continue
        for key in ("name", "url", "branch", "path", "revision"):
            need(s, key, (str,), w)
        need(s, "committed_at", (int, float), w, nullable=True)
        need(s, "objects", (int,), w)
    phases = need(result, "phases", (list,), "")
    for i, p in enumerate(phases or []):
        w = f"phases[{i}]."
        if not isinstance(p, dict):
            problems.append(f"phases[{i}] must be an object")
            continue
        need(p, "name", (str,), w)
        need(p, "seconds", (int, float), w)
        need(p, "detail", (str,), w)
        st = need(p, "status", (str,), w)
        if st is not None and st not in PHASE_STATUSES:
            problems.append(f"{w}status must be one of {', '.join(PHASE_STATUSES)}, not {st!r}")
    objects = need(result, "objects", (dict,), "")
    if objects is not None:
        for key in COUNTS:
            need(objects, key, (int,), "objects.")
    failures = need(result, "failures", (list,), "")
    for i, f in enumerate(failures or []):
        if not isinstance(f, dict):
            problems.append(f"failures[{i}] must be an object")
            continue
        for key in ("object", "source", "message"):
            need(f, key, (str,), f"failures[{i}].")
    return problems
