"""Desired (git) versus live: did the cluster converge to exactly what git declares?

The package's public API; :mod:`.comparison` holds it while the module is split along its seams.
"""

from rebuild.recover.verify.comparison import (
    LAST_APPLIED,
    LIST_KEYS,
    FieldDiff,
    IgnoreRule,
    ObjectResult,
    Suppressed,
    compare,
    describe,
    message,
    parse_quantity,
    redact,
)

__all__ = [
    "LAST_APPLIED",
    "LIST_KEYS",
    "FieldDiff",
    "IgnoreRule",
    "ObjectResult",
    "Suppressed",
    "compare",
    "describe",
    "message",
    "parse_quantity",
    "redact",
]
