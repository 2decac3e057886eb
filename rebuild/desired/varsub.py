"""Flux's post-build variable substitution (``spec.postBuild.substitute`` / ``substituteFrom``).

kustomize-controller runs a bash-like substitution over the YAML text of each built object
before applying it, so rebuild must do the same to know the values that land in the cluster.
Supported, as Flux documents them: ``${var}``, ``${var:=default}``, ``${var:-default}``,
``${var=default}``, ``${var-default}``, ``${var:offset}``, ``${var:offset:length}``,
``${var/from/to}``, ``${var//from/to}``, and ``$${var}`` for a literal ``${var}``. Unset variables
become the empty string (Flux's default, non-strict mode). ``$var`` without braces is left
alone, which is what Flux tells people to write in scripts they do not want substituted. Objects
labelled or annotated ``kustomize.toolkit.fluxcd.io/substitute: disabled`` are skipped by the
caller. Pure: text in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

VAR_NAME = re.compile(r"^[_a-zA-Z][_a-zA-Z0-9]*$")
DISABLED_KEY = "kustomize.toolkit.fluxcd.io/substitute"
_EXPR = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_FORM = re.compile(r"^([_a-zA-Z][_a-zA-Z0-9]*)(?:(:?[-=])(.*)|:(-?\d+)(?::(\d+))?|(//?)([^/]*)/(.*))?$", re.S)


class SubstitutionError(ValueError):
    """A variable name Flux would refuse, or an expression it cannot read."""


def check_names(variables: Mapping[str, str]) -> None:
    for name in variables:
        if not VAR_NAME.match(name):
            raise SubstitutionError(f"{name!r} is not a valid variable name (must match {VAR_NAME.pattern})")


def _expand(expr: str, variables: Mapping[str, str]) -> str:
    m = _FORM.match(expr)
    if m is None:
        raise SubstitutionError(f"cannot read ${{{expr}}}")
    name, op, default, offset, length, slashes, old, new = m.groups()
    value = variables.get(name)
    if op is not None:
        unset = value is None or (op.startswith(":") and value == "")
        return default if unset else str(value)
    text = value or ""
    if offset is not None:
        start = int(offset)
        if start < 0:
            start = max(len(text) + start, 0)
        return text[start : start + int(length)] if length is not None else text[start:]
    if slashes is not None:
        return text.replace(old, new) if slashes == "//" else text.replace(old, new, 1)
    return text


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with every ``${...}`` expression replaced; raises SubstitutionError."""
    check_names(variables)

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        return _expand(m.group(1), variables)

    return _EXPR.sub(one, text)


def has_expression(value: str) -> bool:
    return bool(_EXPR.search(value))
