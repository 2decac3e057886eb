"""What a comparison finds: the differing fields of one object, with their owners and git source.

Apart from the comparison so the renderers (messages, reports, drift) read these types without the
walk that produces them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rebuild.core.managedfields import (
    Owner,
    latest,
)
from rebuild.core.model import (
    FieldPath,
    ObjectRef,
    Source,
    render_path,
)

Change = Literal["changed", "missing", "added"]


@dataclass
class FieldDiff:
    """One field that differs. ``git``/``live`` are None when that side lacks the field."""

    path: FieldPath
    git: Any
    live: Any
    source: Source
    owners: list[Owner] = field(default_factory=list)
    change: Change = "changed"

    @property
    def rendered(self) -> str:
        return render_path(self.path)

    @property
    def changed_by(self) -> Owner | None:
        """The most recent owner of the live value, if any."""
        return latest(self.owners)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.rendered,
            "change": self.change,
            "git": self.git,
            "live": self.live,
            "source": str(self.source),
            "owners": [
                {"manager": o.manager, "operation": o.operation, "subresource": o.subresource, "time": o.time}
                for o in self.owners
            ],
        }


@dataclass
class Suppressed:
    """A difference that was found and deliberately not reported, and why (no silent skips)."""

    diff: FieldDiff
    reason: str


@dataclass
class ObjectResult:
    ref: ObjectRef
    present: bool
    diffs: list[FieldDiff] = field(default_factory=list)
    suppressed: list[Suppressed] = field(default_factory=list)
    source: Source | None = None

    @property
    def ok(self) -> bool:
        return self.present and not self.diffs

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": str(self.ref),
            "present": self.present,
            "ok": self.ok,
            "source": str(self.source) if self.source else None,
            "diffs": [d.to_dict() for d in self.diffs],
            "suppressed": [{**s.diff.to_dict(), "reason": s.reason} for s in self.suppressed],
        }
