"""Plain values shared by stages and renderers: no I/O, no behaviour beyond (de)serialising."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PhaseStatus = Literal["ok", "failed", "skipped"]


@dataclass
class PhaseTiming:
    """One timed phase of a run (the unit of the recovery-time report)."""

    name: str
    seconds: float = 0.0
    status: PhaseStatus = "ok"
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass
class Phases:
    """An ordered list of phase timings with a context manager that records each one."""

    items: list[PhaseTiming] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[PhaseTiming]:
        p = PhaseTiming(name)
        self.items.append(p)
        t0 = time.monotonic()
        try:
            yield p
        except BaseException as exc:
            p.status = "failed"
            if not p.detail:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                p.detail = first[:300]
            raise
        finally:
            p.seconds = time.monotonic() - t0

    def skip(self, name: str, why: str) -> None:
        self.items.append(PhaseTiming(name, 0.0, "skipped", why))

    @property
    def total(self) -> float:
        return sum(p.seconds for p in self.items)

    def to_list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.items]

    def table(self) -> str:
        width = max((len(p.name) for p in self.items), default=5)
        rows = [f"  {p.name:<{width}}  {p.seconds:8.2f}s  {p.status}{'  ' + p.detail if p.detail else ''}" for p in self.items]
        rows.append(f"  {'total':<{width}}  {self.total:8.2f}s")
        return "\n".join(rows)
