"""One line per difference for a person: what differs, where git declares it, who changed it live."""

from __future__ import annotations

import json
import re
from typing import Any

from rebuild.core.managedfields import (
    latest,
)
from rebuild.core.model import (
    ObjectRef,
)
from rebuild.recover.verify.results import FieldDiff, ObjectResult


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, str):
        if v.startswith("<redacted sha256:") or re.fullmatch(r"[\w.:/@+=-]+", v):
            return v
        return json.dumps(v)
    text = json.dumps(v, separators=(",", ":"), sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def message(diff: FieldDiff, ref: ObjectRef) -> str:
    """One line for a person: what differs, where git declares it, and who changed it live.

    ``Deployment/shop/cart: field spec.replicas is 5 live, 2 in git (apps/cart.yaml:14);
    changed by kubectl (Update, scale) at 2026-11-26T10:42:00Z``
    """
    p = diff.rendered
    if diff.change == "missing":
        text = f"{ref}: field {p} is missing live, {_fmt(diff.git)} in git ({diff.source})"
    elif diff.change == "added":
        text = f"{ref}: field {p} is {_fmt(diff.live)} live, not in git ({diff.source})"
    else:
        text = f"{ref}: field {p} is {_fmt(diff.live)} live, {_fmt(diff.git)} in git ({diff.source})"
    who = latest(diff.owners)
    if who is not None:
        text += f"; changed by {who.describe()}"
        others = sorted({o.manager for o in diff.owners if o != who})
        if others:
            text += f" (also owned by {', '.join(others)})"
    return text


def describe(result: ObjectResult) -> list[str]:
    """All messages for one object: a missing object is one line, else one line per diff."""
    if not result.present:
        where = f" (declared in {result.source})" if result.source else ""
        return [f"{result.ref}: not found in the cluster{where}"]
    return [message(d, result.ref) for d in result.diffs]
