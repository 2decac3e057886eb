"""When two values are equal the way Kubernetes treats them: quantities, IntOrString, numbers, zero values.

Everything else is compared strictly; these rules are the only normalisation verify does.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from rebuild.core.model import (
    FieldPath,
)

# Maps whose values are resource quantities (resources.limits/requests, ResourceQuota hard,
# LimitRange min/max/default..., pod overhead) and scalar quantity fields.
QUANTITY_MAPS = {"limits", "requests", "hard", "min", "max", "default", "defaultRequest", "maxLimitRequestRatio", "overhead"}
QUANTITY_FIELDS = {"sizeLimit"}
INT_OR_STRING_FIELDS = {"targetPort", "port", "maxSurge", "maxUnavailable", "minAvailable"}


def is_zero(v: Any) -> bool:
    return v in ({}, [], "") or v is False or (type(v) is int and v == 0)


_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_SUFFIX: dict[str, Fraction] = {
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}


def parse_quantity(v: Any) -> Fraction | None:
    """A Kubernetes resource quantity as an exact number (None when it is not one)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return Fraction(v)
    if isinstance(v, float):
        return Fraction(str(v))
    if not isinstance(v, str):
        return None
    m = _QUANTITY.match(v.strip())
    if not m:
        return None
    number = Fraction(m.group(1))
    if m.group(2) is not None:
        return number * Fraction(10) ** int(m.group(2))
    if m.group(3):
        return number * _SUFFIX[m.group(3)]
    return number


def _is_quantity_path(path: FieldPath) -> bool:
    if path and path[-1] in QUANTITY_FIELDS:
        return True
    return len(path) >= 2 and isinstance(path[-2], str) and path[-2] in QUANTITY_MAPS


def _number(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return None


def equal(path: FieldPath, g: Any, lv: Any) -> bool:
    if isinstance(g, bool) or isinstance(lv, bool):
        return isinstance(g, bool) and isinstance(lv, bool) and g == lv
    if _is_quantity_path(path):
        a, b = parse_quantity(g), parse_quantity(lv)
        if a is not None and b is not None:
            return a == b
    last = path[-1] if path else None
    if last in INT_OR_STRING_FIELDS:
        a2, b2 = _number(g), _number(lv)
        if a2 is not None and b2 is not None:
            return a2 == b2
    if isinstance(g, int | float) and isinstance(lv, int | float):
        return g == lv
    return type(g) is type(lv) and bool(g == lv)
