"""Reports from a run result: JSON as is, Markdown, JUnit XML a CI parser accepts, a self-contained HTML page."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import junitparser
import pytest

from rebuild.drills import report

HOSTILE = "<script>alert('x')</script> | `tick` & \x07bell"


def sample_result(*, passed: bool = True, cluster: str = "drill-ab12cd", started: str = "2026-11-26T12:00:00Z") -> dict[str, Any]:
    """A drill result in schema rebuild.run/v1; failing variant has a failed verify phase and failed objects."""
    phases: list[dict[str, Any]] = [
        {"name": "desired", "seconds": 2.1, "status": "ok", "detail": ""},
        {"name": "cluster", "seconds": 14.3, "status": "ok", "detail": ""},
        {"name": "platform", "seconds": 9.8, "status": "ok", "detail": ""},
        {"name": "reconciler", "seconds": 6.2, "status": "ok", "detail": ""},
        {"name": "verify", "seconds": 8.1, "status": "ok", "detail": ""},
        {"name": "teardown", "seconds": 3.4, "status": "ok", "detail": ""},
    ]
    failures: list[dict[str, str]] = []
    objects = {"objects": 56, "verified": 56, "missing": 0, "drifted": 0, "unhealthy": 0}
    error = ""
    if not passed:
        phases[4] = {"name": "verify", "seconds": 30.0, "status": "failed", "detail": "2 objects not converged"}
        phases.insert(5, {"name": "smoke", "seconds": 0.0, "status": "skipped", "detail": "verify failed"})
        failures = [
            {
                "object": "Deployment/shop/cart",
                "source": "apps/base/cart/deployment.yaml:12",
                "message": "image nginx:does-not-exist cannot be pulled",
            },
            {"object": "ConfigMap/shop/settings", "source": "apps/base/cart/configmap.yaml:3", "message": HOSTILE},
        ]
        objects = {"objects": 56, "verified": 54, "missing": 1, "drifted": 0, "unhealthy": 1}
        error = "verify: 2 objects not converged after 30s"
    total = round(sum(float(p["seconds"]) for p in phases), 3)
    start = dt.datetime.fromisoformat(started.replace("Z", "+00:00"))
    return {
        "schema": "rebuild.run/v1",
        "kind": "drill",
        "cluster": cluster,
        "started_at": started,
        "finished_at": (start + dt.timedelta(seconds=total)).isoformat().replace("+00:00", "Z"),
        "passed": passed,
        "rto_seconds": total,
        "rpo": {"revision_age_seconds": 3600.0, "uncaptured_changes": None},
        "sources": [
            {
                "name": "demo",
                "url": "https://git.example.com/platform/gitops.git",
                "branch": "main",
                "path": "clusters/demo",
                "revision": "0123456789abcdef0123456789abcdef01234567",
                "committed_at": 1764150000,
                "objects": 56,
            }
        ],
        "phases": phases,
        "objects": objects,
        "failures": failures,
        "error": error,
    }


def sample_history(n: int = 10) -> list[dict[str, Any]]:
    """n earlier drills, one a day, RTO drifting upwards, two of them failed."""
    out = []
    base = dt.datetime(2026, 11, 10, 3, 0, tzinfo=dt.UTC)
    for i in range(n):
        r = sample_result(
            passed=i not in (3, 7),
            cluster=f"drill-{i:06x}",
            started=(base + dt.timedelta(days=i)).isoformat().replace("+00:00", "Z"),
        )
        r["rto_seconds"] = round(r["rto_seconds"] * (0.8 + 0.05 * i), 1)
        out.append(r)
    return out


# --------------------------------------------------------------------------- schema


def test_sample_conforms_to_the_schema() -> None:
    assert report.validate_result(sample_result()) == []
    assert report.validate_result(sample_result(passed=False)) == []


def test_schema_violations_are_named() -> None:
    bad = sample_result()
    bad["schema"] = "other"
    bad["passed"] = "yes"
    bad["phases"][0]["status"] = "great"
    del bad["rpo"]["uncaptured_changes"]
    bad["failures"] = [{"object": "x"}]
    problems = report.validate_result(bad)
    assert "schema must be 'rebuild.run/v1', not 'other'" in problems
    assert "passed must be bool, not str" in problems
    assert "phases[0].status must be one of ok, failed, skipped, not 'great'" in problems
    assert "rpo.uncaptured_changes is missing" in problems
    assert "failures[0].source is missing" in problems
    assert report.validate_result([]) == ["the result must be a JSON object, not list"]


# --------------------------------------------------------------------------- files


def test_write_reports_writes_four_files_atomically(tmp_path: Path) -> None:
    result = sample_result(passed=False)
    paths = report.write_reports(result, tmp_path / "out", history=sample_history())
    assert set(paths) == {"json", "markdown", "junit", "html"}
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"result.json", "report.md", "junit.xml", "report.html"}
    assert json.loads(paths["json"].read_text()) == result
    # rewriting replaces, never appends, and leaves no temporary file behind
    report.write_reports(sample_result(), tmp_path / "out", history=[])
    assert json.loads(paths["json"].read_text())["passed"] is True
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_partial_result_still_gives_readable_reports(tmp_path: Path) -> None:
    paths = report.write_reports(
        {"kind": "drill", "cluster": "x", "error": "cluster phase: pulumi not found"}, tmp_path, history=[]
    )
    md = paths["markdown"].read_text()
    assert "FAILED" in md and "No phase ran." in md and "pulumi not found" in md
    suite = junitparser.JUnitXml.fromfile(str(paths["junit"]))
    cases = [c for s in suite for c in s]
    assert len(cases) == 1 and cases[0].name == "verdict" and not cases[0].is_passed
    assert "No phase ran." in paths["html"].read_text()


def test_fmt_seconds() -> None:
    assert report.fmt_seconds(41.23) == "41.2 s"
    assert report.fmt_seconds(185) == "3 m 05 s"
    assert report.fmt_seconds(3600) == "1 h 00 m"
    assert report.fmt_seconds(86400 * 3) == "3.0 days"
    assert report.fmt_seconds(None) == "unknown"


# --------------------------------------------------------------------------- Markdown


def test_markdown_passed() -> None:
    md = report.render_markdown(sample_result())
    assert md.startswith("# rebuild drill drill-ab12cd: PASSED")
    assert "| RTO | **43.9 s** (43.90 s) |" in md
    assert "| cluster | 14.30 | 33% | ok |  |" in md
    assert "| **total** | **43.90** | 100% | | |" in md
    assert "revision age 1 h 00 m; uncaptured manual changes: not measured" in md
    assert "`0123456789ab`" in md and "2025-11-26 09:40 UTC" in md
    assert "## Failures (0)" in md and "None." in md
    assert "rebuild drill   #" in md


def test_markdown_failed_names_objects_with_file_and_line_and_escapes() -> None:
    md = report.render_markdown(sample_result(passed=False))
    assert "FAILED" in md.splitlines()[0]
    assert "| Deployment/shop/cart | apps/base/cart/deployment.yaml:12 | image nginx:does-not-exist cannot be pulled |" in md
    assert "| verify | 30.00 |" in md and "failed | 2 objects not converged |" in md
    assert "<script>" not in md and "&lt;script&gt;" in md
    row = next(line for line in md.splitlines() if "ConfigMap/shop/settings" in line)
    assert row.count(" | ") == 2 and "\\|" in row and "\\`tick\\`" in row
    assert "rebuild drill --keep --revision 0123456789abcdef0123456789abcdef01234567" in md


def test_next_command_for_broken_desired_state() -> None:
    r = sample_result(passed=False)
    r["phases"] = [{"name": "desired", "seconds": 1.0, "status": "failed", "detail": "3 problems"}]
    assert report.next_command(r).startswith("rebuild plan --revision 0123456789abcdef")


# --------------------------------------------------------------------------- JUnit


def test_junit_is_accepted_by_a_junit_parser(tmp_path: Path) -> None:
    result = sample_result(passed=False)
    path = tmp_path / "junit.xml"
    path.write_text(report.render_junit(result))
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    assert suite.name == "rebuild drill drill-ab12cd"
    cases = list(suite)
    phases = [c for c in cases if c.classname == "phases"]
    objects = [c for c in cases if c.classname == "objects"]
    assert [c.name for c in phases] == [p["name"] for p in result["phases"]]
    assert [c.name for c in objects] == ["Deployment/shop/cart", "ConfigMap/shop/settings"]
    assert suite.tests == len(cases) == 9
    assert suite.failures == 3 and suite.errors == 0 and suite.skipped == 1
    verify = next(c for c in phases if c.name == "verify")
    assert verify.time == pytest.approx(30.0) and not verify.is_passed
    assert isinstance(verify.result[0], junitparser.Failure) and verify.result[0].message == "2 objects not converged"
    smoke = next(c for c in phases if c.name == "smoke")
    assert smoke.is_skipped
    cart = objects[0]
    assert "apps/base/cart/deployment.yaml:12" in cart.result[0].message
    assert "cannot be pulled" in cart.result[0].message
    assert suite.time == pytest.approx(sum(p["seconds"] for p in result["phases"]), abs=0.01)
    props = {p.name: p.value for p in suite.properties()}  # type: ignore[no-untyped-call]
    assert props["rto_seconds"] == f"{result['rto_seconds']:.3f}" and props["source.demo.revision"].startswith("0123")


def test_junit_follows_the_common_schema(tmp_path: Path) -> None:
    """Attribute names and counts as the Jenkins/Ant JUnit schema expects (what GitLab, GitHub and Jenkins read)."""
    for result in (sample_result(), sample_result(passed=False)):
        root = ET.fromstring(report.render_junit(result).encode())
        assert root.tag == "testsuites"
        (suite,) = root.findall("testsuite")
        for el in (root, suite):
            for attr in ("tests", "failures", "errors", "skipped", "time"):
                assert re.fullmatch(r"\d+(\.\d+)?", el.get(attr, "")), (el.tag, attr)
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "")) == len(cases)
        assert int(suite.get("failures", "")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("skipped", "")) == sum(1 for c in cases if c.find("skipped") is not None)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp", ""))
        for c in cases:
            assert c.get("name") and c.get("classname") and re.fullmatch(r"\d+\.\d{3}", c.get("time", ""))
            fail = c.find("failure")
            if fail is not None:
                assert fail.get("message") and fail.get("type")
        # order inside a testsuite per the schema: properties, testcase*, system-out
        tags = [child.tag for child in suite]
        assert tags[0] == "properties" and tags[-1] == "system-out" and set(tags[1:-1]) == {"testcase"}


def test_junit_failed_run_is_never_green() -> None:
    r = sample_result()
    r["passed"] = False
    r["error"] = "teardown: pulumi destroy failed"
    root = ET.fromstring(report.render_junit(r).encode())
    assert root.get("failures") == "1"
    verdict = root.find("testsuite/testcase[@name='verdict']")
    assert verdict is not None and "teardown" in (verdict.find("failure").get("message") or "")  # type: ignore[union-attr]


def test_junit_survives_control_characters() -> None:
    r = sample_result(passed=False)
    r["failures"][0]["message"] = "bad \x00\x01\x1b[31m bytes"
    ET.fromstring(report.render_junit(r).encode())  # must parse


# --------------------------------------------------------------------------- HTML


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(text: str) -> _Collect:
    p = _Collect()
    p.feed(text)
    p.close()
    return p


def test_html_is_self_contained_and_escaped() -> None:
    page = report.render_html(sample_result(passed=False), sample_history())
    p = parse_html(page)
    tags = [t for t, _ in p.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags and "iframe" not in tags
    for _, attrs in p.tags:
        for name, value in attrs.items():
            assert name not in ("src", "href") and not name.startswith("on"), (name, value)
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page
    assert HOSTILE.split(" |")[0] not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "https://git.example.com/platform/gitops.git" in "".join(p.text)  # shown as text, never linked


def test_html_timeline_has_one_segment_per_phase_and_failed_is_red() -> None:
    result = sample_result(passed=False)
    page = report.render_html(result, [])
    timeline = page[page.index('id="timeline"') : page.index('id="rpo-section"')]
    rects = re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"[^>]*><title>([^<]*)</title>', timeline)
    names = [p["name"] for p in result["phases"]]
    assert len(rects) == 2 * len(names)  # the stacked bar and the Gantt rows
    verify = [fill for fill, title in rects if title.startswith("verify:")]
    assert verify == [report.RED, report.RED]
    skipped = [fill for fill, title in rects if title.startswith("smoke:")]
    assert skipped == [report.GREY, report.GREY]
    for name in names:
        assert f">{name}</text>" in timeline
    assert "30.0s failed" in timeline
    assert "FAILED" in page[: page.index("<main>")] and 'class="verdict fail"' in page


def test_html_trend_has_a_bar_per_drill_with_dates() -> None:
    history = sample_history(10)
    page = report.render_html(sample_result(), history)
    trend = page[page.index('id="trend"') : page.index('id="next"')]
    bars = re.findall(r'<rect [^>]*class="bar (pass|fail)"', trend)
    assert len(bars) == 11  # ten earlier drills and this run
    assert bars.count("fail") == 2 and bars[-1] == "pass"
    assert ">11-10</text>" in trend and ">this run</text>" in trend
    assert "11 runs, 9 passed" in trend


def test_current_run_already_in_history_is_not_counted_twice() -> None:
    history = sample_history(3)
    current = copy.deepcopy(history[-1])
    page = report.render_html(current, history)
    trend = page[page.index('id="trend"') : page.index('id="next"')]
    assert len(re.findall(r'class="bar ', trend)) == 3 and trend.count(">this run</text>") == 1


def test_html_trend_with_fifty_drills_keeps_labels_apart() -> None:
    history = sample_history(50)
    page = report.render_html(sample_result(), history)
    trend = page[page.index('id="trend"') : page.index('id="next"')]
    xs = [
        float(x)
        for x in re.findall(r'<text x="([\d.]+)" y="\d+" class="tick(?: strong)?" text-anchor="middle">\d\d-\d\d<', trend)
    ]
    assert len(xs) < 30 and all(b - a >= 40 for a, b in itertools.pairwise(xs))


def test_docs_describe_every_field_of_the_schema() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "reports.md").read_text()
    assert report.SCHEMA in doc
    fields = set(sample_result()) | {f"rpo.{k}" for k in sample_result()["rpo"]}
    for name in fields:
        assert f"`{name}`" in doc or f"`{name}[]`" in doc, name
    for key in list(sample_result()["sources"][0]) + list(sample_result()["objects"]) + ["object", "source", "message"]:
        assert f"`{key}`" in doc or f'"{key}"' in doc, key
