"""The JUnit XML report: CI systems show a failed phase or object as a red test without a plugin."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from typing import Any

from rebuild.core.results import RunResult, parse_time
from rebuild.drills.report.common import XML_INVALID, Result, fmt_seconds, next_command, objects_text, rpo_text, text_of


def _x(s: Any) -> str:
    """XML 1.0 forbids most control characters even when escaped; CI parsers reject the file."""
    return XML_INVALID.sub("\ufffd", text_of(s))


def _junit_timestamp(v: str) -> str:
    t = parse_time(v)
    # The common JUnit XSD types timestamp as xs:dateTime without a zone: write UTC.
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") if t else ""


def render_junit(result: Result) -> str:
    """One testsuite, one testcase per phase and per failed object; CI shows them natively."""
    v = RunResult.read(result)
    cases: list[ET.Element] = []
    failures = skipped = 0
    for p in v.phases:
        case = ET.Element("testcase", {"classname": "phases", "name": _x(p.name), "time": f"{p.seconds:.3f}"})
        if p.status == "failed":
            failures += 1
            el = ET.SubElement(case, "failure", {"message": _x(p.detail or f"phase {p.name} failed"), "type": "PhaseFailed"})
            el.text = _x(f"phase {p.name} failed after {p.seconds:.2f}s: {p.detail or '(no detail)'}")
        elif p.status == "skipped":
            skipped += 1
            ET.SubElement(case, "skipped", {"message": _x(p.detail or "skipped")})
        cases.append(case)
    for f in v.failures:
        case = ET.Element("testcase", {"classname": "objects", "name": _x(f.object or "?"), "time": "0.000"})
        where = f"{f.source}: " if f.source else ""
        el = ET.SubElement(case, "failure", {"message": _x(f"{where}{f.message}"), "type": "ObjectFailed"})
        el.text = _x(f"{f.object}\n  source: {f.source or '(unknown)'}\n  {f.message}")
        failures += 1
        cases.append(case)
    if not v.passed and failures == 0:
        # A failed run must never look green in CI, even when no phase or object says why.
        case = ET.Element("testcase", {"classname": "run", "name": "verdict", "time": "0.000"})
        el = ET.SubElement(
            case, "failure", {"message": _x(v.error.splitlines()[0] if v.error else "run failed"), "type": "RunFailed"}
        )
        el.text = _x(v.error or "the run did not pass")
        failures += 1
        cases.append(case)
    total_time = f"{sum(p.seconds for p in v.phases):.3f}"
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": str(skipped), "time": total_time}
    root = ET.Element("testsuites", {"name": "rebuild", **counts})
    suite_attrs = {"name": _x(f"rebuild {v.kind} {v.cluster}".strip()), **counts}
    ts = _junit_timestamp(v.started_at)
    if ts:
        suite_attrs["timestamp"] = ts
    suite = ET.SubElement(root, "testsuite", suite_attrs)
    props = ET.SubElement(suite, "properties")
    prop_values: list[tuple[str, str]] = [
        ("kind", v.kind),
        ("cluster", v.cluster),
        ("passed", "true" if v.passed else "false"),
        ("rto_seconds", f"{v.rto_seconds:.3f}"),
        ("rpo_revision_age_seconds", "" if v.revision_age_seconds is None else f"{v.revision_age_seconds:.0f}"),
        ("rpo_uncaptured_changes", "" if v.uncaptured_changes is None else str(v.uncaptured_changes)),
    ]
    prop_values += [(f"source.{text_of(s.get('name'))}.revision", text_of(s.get("revision"))) for s in v.sources]
    for name, value in prop_values:
        ET.SubElement(props, "property", {"name": _x(name), "value": _x(value)})
    suite.extend(cases)
    out = ET.SubElement(suite, "system-out")
    out.text = _x(
        f"{v.title}: {v.verdict}\nRTO {fmt_seconds(v.rto_seconds)}\nRPO {rpo_text(v)}\nobjects {objects_text(v)}\n"
        + (f"error: {v.error}\n" if v.error else "")
        + f"next: {next_command(result)}\n"
    )
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
