"""Drill history: append-only JSON lines, concurrent appenders, corrupt lines skipped and reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rebuild.drills import history
from tests.conftest import REPO
from tests.unit.test_report import sample_history, sample_result


def test_ten_appends_ten_entries_oldest_first(tmp_path: Path) -> None:
    path = history.default_path(tmp_path)
    assert path == tmp_path / "drills" / "history.jsonl"
    drills = sample_history(10)
    for r in drills:
        history.append(path, r)
    entries = history.load(path)
    assert len(entries) == 10
    assert [e["cluster"] for e in entries] == [r["cluster"] for r in drills]
    assert [e["passed"] for e in entries] == [r["passed"] for r in drills]
    assert len(path.read_text().splitlines()) == 10


def test_summary_keeps_the_trend_facts_not_the_failure_list() -> None:
    r = sample_result(passed=False)
    e = history.summarize(r)
    assert e["history"] == history.HISTORY_SCHEMA and e["schema"] == "rebuild.run/v1"
    assert e["rto_seconds"] == r["rto_seconds"] and e["started_at"] == r["started_at"] and e["passed"] is False
    assert e["failure_count"] == 2 and "failures" not in e
    assert e["phases"][4] == {"name": "verify", "seconds": 30.0, "status": "failed"}
    assert e["sources"] == [{"name": "demo", "revision": r["sources"][0]["revision"], "committed_at": 1764150000}]


def test_limit_keeps_the_most_recent(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    for r in sample_history(12):
        history.append(path, r)
    last = history.load(path, limit=5)
    assert [e["cluster"] for e in last] == [f"drill-{i:06x}" for i in range(7, 12)]


def test_missing_history_is_empty(tmp_path: Path) -> None:
    assert history.load(tmp_path / "none.jsonl") == []


def test_corrupt_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    history.append(path, sample_result(cluster="drill-000001"))
    with path.open("ab") as f:
        f.write(b"{not json\n")
        f.write(b"[1, 2]\n")
        f.write(b"\xff\xfe\n")
        f.write(b'{"cluster": "torn", "rto')  # a writer killed mid-line: no newline
    history.append(path, sample_result(cluster="drill-000002"))
    warnings: list[str] = []
    entries = history.load(path, warn=warnings.append)
    assert [e["cluster"] for e in entries] == ["drill-000001", "drill-000002"]
    assert len(warnings) == 4
    assert warnings[0].startswith(f"{path}:2: skipped a corrupt line")
    assert any(w.startswith(f"{path}:3:") and "not a JSON object" in w for w in warnings)
    assert any(w.startswith(f"{path}:5:") for w in warnings)  # the torn line stays on its own line


def test_concurrent_appends_from_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    script = (
        "import sys\nfrom pathlib import Path\nfrom rebuild.drills import history\n"
        "from tests.unit.test_report import sample_result\n"
        "r = sample_result(cluster='drill-' + sys.argv[2])\n"
        "r['error'] = 'x' * 5000\n"  # long lines make interleaving likely without the lock
        "for i in range(20):\n"
        "    r['started_at'] = f'2026-11-26T12:00:{i:02d}Z'\n"
        "    assert history.append(Path(sys.argv[1]), r)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), f"{n:06d}"], cwd=REPO, stderr=subprocess.PIPE)
        for n in range(10)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    warnings: list[str] = []
    entries = history.load(path, limit=1000, warn=warnings.append)
    assert warnings == [] and len(entries) == 200
    assert sorted({e["cluster"] for e in entries}) == [f"drill-{n:06d}" for n in range(10)]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_the_same_run_is_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    r = sample_result()
    assert history.append(path, r) is True
    assert history.append(path, r) is False  # reported again (resumed runbook, retried job)
    r2 = dict(r, started_at="2026-11-27T12:00:00Z")
    assert history.append(path, r2) is True
    assert len(history.load(path)) == 2


def test_unwritable_history_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(history.HistoryError, match="cannot be written"):
        history.append(blocker / "history.jsonl", sample_result())
