"""A drill whose age key cannot decrypt the repository's SOPS files (issue 13): a failed drill, not
an error. The real CLI, sops and age-keygen; the repository of tests/integration/test_sops_verify.py
(a ``.sops.yaml`` with an age recipient, two Secrets encrypted by the real sops).

``rebuild drill`` with a wrong key, and with no key configured, must:

- exit 1 (a failed drill, as docs/cli.md says), within seconds, with ``passed: false``;
- carry one failure naming the Secret, its file:line, the key file (or the setting) and the fix,
  in the JSON result, the Markdown and JUnit reports and the history line (its error);
- create nothing: no cluster folder, no drill backend, the teardown phase skipped as "nothing was
  created", no process of the run left (the git server it started for the local folder stopped).
"""

from __future__ import annotations

import json
import secrets
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters import gitserver
from rebuild.toolchain.tools import Toolchain
from tests.integration.test_sops_cli import age_keygen
from tests.integration.test_sops_verify import API_FILE, assert_no_plaintext, rebuild, write_config, write_repo
from tests.procs import processes_naming

pytestmark = pytest.mark.integration


def drill(config: Path, state: Path, history: Path) -> tuple[dict[str, Any], float, str]:
    t0 = time.monotonic()
    r = rebuild(["-o", "json", "--config", str(config), "drill", "--history", str(history)], state, timeout=120)
    took = time.monotonic() - t0
    assert r.returncode == 1, f"exit {r.returncode}: " + r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(r.stdout), took, r.stdout + r.stderr


def assert_failed_before_anything(res: dict[str, Any], state: Path) -> None:
    assert res["passed"] is False and res["schema"] == "rebuild.run/v1"
    assert [(p["name"], p["status"]) for p in res["phases"]] == [("desired", "failed"), ("teardown", "skipped")], res["phases"]
    teardown = res["phases"][-1]
    assert teardown["detail"] == "nothing was created: the drill stopped before its cluster phase"
    assert list((state / "clusters").glob("*")) == [], "a cluster was created"
    assert not (state / "drills" / "backends").exists(), "a drill backend was created"
    assert Path(res["reports"]["json"]).parent.name.endswith(res["cluster"])


def test_a_drill_with_a_wrong_or_missing_age_key_is_a_failed_drill_that_created_nothing(tmp_path: Path, toolchain: Any) -> None:
    tools: Toolchain = toolchain
    work = tmp_path / "work"
    (work / "keys").mkdir(parents=True)
    public = age_keygen(tools, work / "keys" / "age.agekey")
    wrong = work / "keys" / "wrong.agekey"
    wrong_public = age_keygen(tools, wrong)
    values = {k: f"{k}-{secrets.token_hex(12)}" for k in ("password", "token", "key")}
    write_repo(work / "repo", tools, public, values)
    state = tmp_path / "state"
    history = state / "drills" / "history.jsonl"
    bad = write_config(work, "rebuild-wrong-key.yaml", "sopsdrill", "keys/wrong.agekey")
    keyless = write_config(work, "rebuild-no-key.yaml", "sopsdrill", None)
    outputs: list[str] = []
    try:
        # -- a wrong key
        res, took, out = drill(bad, state, history)
        first = res
        outputs.append(out)
        assert took < 30, took
        assert_failed_before_anything(res, state)
        (failure,) = res["failures"]
        # api-secret.yaml is the first encrypted file of the repository (by path), so it is the one named
        assert (failure["object"], failure["source"]) == ("Secret/shop/api", f"{API_FILE}:1")
        msg = failure["message"]
        assert msg.startswith(f"cannot decrypt {API_FILE}:1: the age key in {wrong} ({wrong_public}) is not a recipient"), msg
        assert public in msg and f"(fix: the age key in {wrong} is not a recipient" in msg
        assert f"it is set at {bad}:" in msg  # where rebuild.yaml names the key file
        print(f"\ndrill with a wrong age key: exit 1 after {took:.1f}s\n  {failure['source']}: {msg}")

        reports = {k: Path(v) for k, v in res["reports"].items()}
        md = reports["markdown"].read_text()
        assert "| Verdict | **FAILED** |" in md, md[:300]
        assert f"{API_FILE}:1" in md and str(wrong) in md and "rebuild plan" in md
        suite = ET.parse(reports["junit"]).getroot()
        failed = {c.get("name"): f.get("message") or "" for c in suite.iter("testcase") if (f := c.find("failure")) is not None}
        assert failed["Secret/shop/api"].startswith(f"{API_FILE}:1: cannot decrypt {API_FILE}:1"), failed
        (line,) = [json.loads(x) for x in history.read_text().splitlines()]
        assert line["passed"] is False and line["failure_count"] == 1
        assert f"cannot decrypt {API_FILE}:1" in line["error"] and str(wrong) in line["error"]

        # -- no key configured: the first encrypted document, and the setting to add
        res, took, out = drill(keyless, state, history)
        outputs.append(out)
        assert took < 30, took
        assert_failed_before_anything(res, state)
        (failure,) = res["failures"]
        assert failure["source"] == f"{API_FILE}:1"
        assert failure["message"].startswith(f"{API_FILE}:1: Secret/shop/api is encrypted with SOPS and")
        assert f"(fix: set reconciler.sops_age_key_file in {keyless}" in failure["message"]
        assert [json.loads(x)["passed"] for x in history.read_text().splitlines()] == [False, False]
        # in the drills folder: the history and one report folder per drill, nothing else
        reported = {Path(r).parent.name for r in (first["reports"]["json"], res["reports"]["json"])}
        assert {p.name for p in (state / "drills").iterdir()} == {"history.jsonl", *reported}
    finally:
        gitserver.stop_server(state / "gitserver")
    for i, text in enumerate(outputs):
        assert_no_plaintext(text, list(values.values()), f"output {i} of the CLI")
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"


def test_drill_live_whose_capture_meets_a_wrong_key_fails_before_its_cluster(tmp_path: Path, toolchain: Any) -> None:
    """``drill --live`` first captures the live cluster of rebuild.yaml (the RPO count), which
    decrypts the SOPS files too: a wrong key fails the drill there, before its own cluster."""
    from rebuild.clusters.local import LocalCluster
    from tests.conftest import unique

    tools: Toolchain = toolchain
    work = tmp_path / "work"
    (work / "keys").mkdir(parents=True)
    public = age_keygen(tools, work / "keys" / "age.agekey")
    wrong = work / "keys" / "wrong.agekey"
    age_keygen(tools, wrong)
    values = {k: f"{k}-{secrets.token_hex(12)}" for k in ("password", "token", "key")}
    write_repo(work / "repo", tools, public, values)
    state = tmp_path / "state"
    name = unique("sopslive")
    good = write_config(work, "rebuild.yaml", name, "keys/age.agekey")
    bad = write_config(work, "rebuild-wrong-key.yaml", name, "keys/wrong.agekey")  # the same live cluster
    try:
        r = rebuild(["--config", str(good), "up"], state)
        assert r.returncode == 0, r.stderr[-3000:]
        t0 = time.monotonic()
        r = rebuild(["-o", "json", "--config", str(bad), "drill", "--live"], state, timeout=120)
        took = time.monotonic() - t0
        assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
        res = json.loads(r.stdout)
        assert took < 30 and res["passed"] is False, (took, res["passed"])
        assert [(p["name"], p["status"]) for p in res["phases"]] == [("desired", "skipped"), ("teardown", "skipped")]
        assert res["phases"][0]["detail"] == f"{API_FILE}:1: cannot be decrypted"
        (failure,) = res["failures"]
        assert (failure["object"], failure["source"]) == ("Secret/shop/api", f"{API_FILE}:1")
        assert f"the age key in {wrong}" in failure["message"] and "(fix: " in failure["message"]
        assert res["rpo"]["uncaptured_changes"] is None
        assert [p.name for p in (state / "clusters").iterdir()] == [name], "the drill created a cluster"
        assert_no_plaintext(r.stdout + r.stderr, list(values.values()), "the drill's output")
        print(f"\ndrill --live with a wrong key: exit 1 after {took:.1f}s, no drill cluster")
    finally:
        LocalCluster(name, root=state).delete(purge=True)
        gitserver.stop_server(state / "gitserver")
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"
