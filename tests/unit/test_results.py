"""The run result (rebuild.run/v1) is built in one place: RunResult.to_dict, read back leniently by RunResult.read."""

from __future__ import annotations

from typing import Any

from rebuild.core.results import RUN_SCHEMA, Failure, ObjectCounts, RunPhase, RunResult, validate_run
from rebuild.drills.stages import assemble_run
from tests.unit.test_report import sample_result

KEYS = ["schema", "kind", "cluster", "started_at", "finished_at", "passed", "rto_seconds", "rpo", "sources", "phases"]


def test_to_dict_follows_the_schema_in_its_documented_order() -> None:
    run = RunResult(
        kind="drill",
        cluster="drill-x",
        started_at="2026-01-02T03:04:05Z",
        finished_at="2026-01-02T03:05:05Z",
        passed=False,
        rto_seconds=12.34567,
        revision_age_seconds=60.0,
        phases=[RunPhase("cluster", 1.23456), RunPhase("verify", 2.0, "failed", "1 object not converged")],
        objects=ObjectCounts(objects=2, verified=1, missing=1),
        failures=[Failure("ConfigMap/a/b", "apps/cm.yaml:3", "missing")],
        error="verify: 1 object not converged",
    )
    data = run.to_dict()
    assert validate_run(data) == []
    assert list(data)[: len(KEYS)] == KEYS and list(data)[len(KEYS) :] == ["objects", "failures", "error"]
    assert data["schema"] == RUN_SCHEMA and data["rto_seconds"] == 12.346 and data["phases"][0]["seconds"] == 1.235
    assert data["rpo"] == {"revision_age_seconds": 60.0, "uncaptured_changes": None}
    assert data["failures"] == [{"object": "ConfigMap/a/b", "source": "apps/cm.yaml:3", "message": "missing"}]


def test_read_of_a_conforming_dict_gives_it_back() -> None:
    for result in (sample_result(), sample_result(passed=False)):
        assert RunResult.read(result).to_dict() == result
        assert RunResult.read(RunResult.read(result)).to_dict() == result


def test_read_is_lenient() -> None:
    run = RunResult.read({"phases": [{"name": "x", "seconds": 2, "status": "weird"}, "junk"], "rpo": "no"})
    assert run.kind == "drill" and run.cluster == "" and not run.passed
    assert run.phases == [RunPhase("x", 2.0, "failed", "")] and run.rto_seconds == 2.0
    assert run.revision_age_seconds is None and run.objects == ObjectCounts()


def test_a_run_assembled_from_phase_steps() -> None:
    src = {"name": "demo", "url": "u", "branch": "main", "path": ".", "revision": "abc", "committed_at": None, "objects": 2}
    outputs: dict[str, Any] = {
        "c": {"ok": True, "phase": "cluster", "seconds": 1.5, "changes": {}, "sources": [src], "cluster": "prod"},
        "p": {"ok": True, "phase": "platform", "seconds": 2.25, "changes": {}, "sources": [src], "cluster": "prod"},
        "v": {
            "ok": False,
            "converged": False,
            "seconds": 3.0,
            "attempts": 2,
            "summary": {"objects": 2, "verified": 1, "missing": 1, "drifted": 0, "unhealthy": 0},
            "objects": [
                {"ref": "ConfigMap/a/b", "source": "cm.yaml:1", "ok": False, "problems": ["missing", "really"]},
                {"ref": "ConfigMap/a/c", "source": "cm.yaml:9", "ok": True, "problems": []},
            ],
        },
    }
    data = assemble_run(outputs, ["c", "p", "v", "absent"]).to_dict()
    assert validate_run(data) == []
    assert data["kind"] == "up" and data["cluster"] == "prod" and data["passed"] is False and data["sources"] == [src]
    assert [(p["name"], p["seconds"], p["status"]) for p in data["phases"]] == [
        ("cluster", 1.5, "ok"),
        ("platform", 2.25, "ok"),
        ("verify", 3.0, "failed"),
    ]
    assert data["rto_seconds"] == 6.75 and data["started_at"] == data["finished_at"]
    assert data["objects"] == outputs["v"]["summary"]
    assert data["failures"] == [
        {"object": "ConfigMap/a/b", "source": "cm.yaml:1", "message": "missing"},
        {"object": "ConfigMap/a/b", "source": "cm.yaml:1", "message": "really"},
    ]
