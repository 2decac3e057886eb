"""verify of SOPS-encrypted Secrets end to end (issue 13 item 5): the real CLI, sops, age-keygen,
local cluster, git server, Flux controllers and Pulumi engine.

The repository is written the way Flux repositories are: a ``.sops.yaml`` with an age recipient
and ``encrypted_regex: ^(data|stringData)$``, a ``kustomization.yaml`` that sets the namespace,
and two Secrets (one ``stringData`` and ``data``, one ``data`` only) that name no namespace,
encrypted by the real sops (through the adapter) from plaintexts that live in this test's memory
only. Then:

- before anything exists, ``up``, ``plan`` and ``verify`` with a wrong key, and ``up`` with no
  key configured, exit 2 in well under 30 s, naming the Secret's file:line and the key file (or
  the setting), with a ``fix:`` line; ``up`` got no further than its ``desired`` phase and no
  cluster was created;
- ``up`` with the right key converges: Flux's kustomize-controller decrypted the Secrets and the
  live values equal the plaintexts; ``verify`` passes;
- a real ``kubectl patch`` of one value (Flux suspended, so it is not reverted): ``verify``
  exits 1 naming that Secret, the field, the git file:line and kubectl-patch, with both values
  as redacted digests; no plaintext (old or new, raw or base64) is in any output, nor in any
  file of the run but the cluster's etcd data.

A second test, without a cluster, checks with the real sops that verify decrypts as Flux does: a
label added by hand to an encrypted file (sops's MAC broken) is read, a ciphertext edited by hand
is an error naming the file:line.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import gitserver, sops
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.core.errors import ConfigError
from rebuild.recover import encrypted
from rebuild.recover.verify import redact
from rebuild.toolchain.tools import Toolchain
from tests.conftest import unique
from tests.integration.test_sops_cli import age_keygen, needles
from tests.kubectl import kubectl, suspend_flux
from tests.procs import processes_naming

pytestmark = pytest.mark.integration

DB_FILE = "apps/db-secret.yaml"
API_FILE = "apps/api-secret.yaml"
SOURCE = "apps"  # the source's name: rebuild's Flux Kustomization flux-system/apps
NS = "shop"


def rebuild(args: list[str], state: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    env.pop("CI", None)
    return subprocess.run([sys.executable, "-m", "rebuild.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def write_config(work: Path, name: str, cluster: str, key: str | None) -> Path:
    reconciler: dict[str, Any] = {"kind": "flux", "interval": "1m"}
    if key is not None:
        reconciler["sops_age_key_file"] = key
    cfg = {
        "sources": [{"name": SOURCE, "url": "repo", "branch": "main", "path": "apps"}],
        "cluster": {"provider": "local", "name": cluster, "nodes": 1},
        "reconciler": reconciler,
        "verify": {"timeout": "4m"},
    }
    path = work / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def write_repo(repo: Path, tools: Toolchain, public: str, values: dict[str, str]) -> None:
    """The repository, its Secrets encrypted by the real sops; the plaintext never reaches a file."""
    (repo / "apps").mkdir(parents=True)
    (repo / ".sops.yaml").write_text(
        f"creation_rules:\n  - path_regex: .*.yaml\n    encrypted_regex: ^(data|stringData)$\n    age: {public}\n"
    )
    (repo / "apps" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: shop\nresources:\n"
        "  - namespace.yaml\n  - settings.yaml\n  - db-secret.yaml\n  - api-secret.yaml\n"
    )
    (repo / "apps" / "namespace.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n")
    (repo / "apps" / "settings.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  LOG_LEVEL: info\n"
    )
    db = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "labels": {"app": "db"}},
        "type": "Opaque",
        "stringData": {"password": values["password"]},
        "data": {"token": base64.b64encode(values["token"].encode()).decode()},
    }
    api = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "api"},
        "data": {"key": base64.b64encode(values["key"].encode()).decode()},
    }
    for path, doc in ((DB_FILE, db), (API_FILE, api)):
        rule = sops.creation_rule(repo, path)
        assert rule is not None and rule.age == (public,)
        text = sops.encrypt(yaml.safe_dump(doc, sort_keys=False).encode(), rule, path, toolchain=tools)
        (repo / path).write_bytes(text)
        written = yaml.safe_load(text)
        assert sops.is_sops_document(written) and "namespace" not in written["metadata"]
        assert all(str(v).startswith("ENC[AES256_GCM,") for k in ("data", "stringData") for v in (written.get(k) or {}).values())
    for f in repo.rglob("*"):
        if f.is_file():
            body = f.read_bytes()
            for value in values.values():
                assert not any(n in body for n in needles(value)), f"{f} holds a plaintext"


def line_of(path: Path, key: str) -> int:
    """The 1-based line of the (only) line of a file that starts with ``key`` once indented."""
    (n,) = [i for i, ln in enumerate(path.read_text().splitlines(), 1) if ln.strip().startswith(key)]
    return n


def files_holding(root: Path, values: list[str], *, skip: str) -> tuple[int, list[str]]:
    """(files read, files holding a value or its base64) under ``root``, but those matching ``skip``
    (an fnmatch pattern: ``*`` spans folders)."""
    read, holding = 0, []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if not f.is_file() or f.is_symlink() or fnmatch.fnmatch(str(rel), skip):
            continue
        body = f.read_bytes()
        read += 1
        if any(n in body for value in values for n in needles(value)):
            holding.append(str(rel))
    return read, holding


def assert_no_plaintext(text: str, values: list[str], what: str) -> None:
    raw = text.encode()
    for value in values:
        for n in needles(value):
            assert n not in raw, f"{what} holds a plaintext value (or its base64)"


def assert_no_plaintext_left(tmp_path: Path, outputs: list[str], plaintexts: list[str]) -> None:
    """No plaintext (raw or base64) in any CLI output, nor in any file of the run (render cache,
    logs, records, Pulumi state, git server) but the cluster's datastore: the API server keeps
    every Secret there (no encryption at rest)."""
    for i, text in enumerate(outputs):
        assert_no_plaintext(text, plaintexts, f"output {i} of the CLI")
    scanned = files_holding(tmp_path, plaintexts, skip="state/clusters/*/etcd/*")
    assert scanned[1] == [], scanned[1]
    assert scanned[0] > 20, scanned
    print(f"plaintexts in none of {scanned[0]} files of the run (etcd's data aside)")


def assert_fails_fast(r: subprocess.CompletedProcess[str], took: float, *expected: str) -> list[str]:
    """Exit 2 in well under 30 s; the error line holds every ``expected`` text, a fix line follows."""
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert took < 30, took
    lines = r.stderr.splitlines()
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error: ")]
    assert len(errors) == 1, r.stderr
    line = lines[errors[0]]
    for text in expected:
        assert text in line, (text, line)
    assert lines[errors[0] + 1].startswith("  fix: "), r.stderr
    return [line, lines[errors[0] + 1]]


def test_sops_secrets_verified_decrypted_in_memory_and_a_bad_key_stops_before_anything(tmp_path: Path, toolchain: Any) -> None:
    tools: Toolchain = toolchain
    work = tmp_path / "work"
    (work / "keys").mkdir(parents=True)
    key, wrong = work / "keys" / "age.agekey", work / "keys" / "wrong.agekey"
    public = age_keygen(tools, key)
    wrong_public = age_keygen(tools, wrong)
    values = {
        "password": "pw-" + secrets.token_hex(12),
        "token": "tok-" + secrets.token_hex(12),
        "key": "key-" + secrets.token_hex(12),
    }
    patched = "patched-" + secrets.token_hex(12)
    plaintexts = [*values.values(), patched]
    write_repo(work / "repo", tools, public, values)
    state = tmp_path / "state"
    name = unique("sops")
    good = write_config(work, "rebuild.yaml", name, "keys/age.agekey")
    bad = write_config(work, "rebuild-wrong-key.yaml", unique("sopsbad"), "keys/wrong.agekey")
    keyless = write_config(work, "rebuild-no-key.yaml", unique("sopsnokey"), None)
    outputs: list[str] = []
    try:
        # -- a wrong key: `up` stops in its first phase, naming the Secret's file:line and the key file
        t0 = time.monotonic()
        r = rebuild(["-o", "json", "--config", str(bad), "up"], state, timeout=120)
        took = time.monotonic() - t0
        outputs += [r.stdout, r.stderr]
        # api-secret.yaml is the first encrypted file of the repository (by path), so it is the one named
        shown = assert_fails_fast(
            r, took, f"cannot decrypt {API_FILE}:1:", f"the age key in {wrong} ({wrong_public}) is not a recipient", public
        )
        assert str(wrong) in shown[1] and "reconciler.sops_age_key_file" in shown[1]
        print(f"\nup with a wrong age key: exit 2 after {took:.1f}s\n  {shown[0]}\n{shown[1]}")
        phases = json.loads(r.stdout)["phases"]
        assert [(p["name"], p["status"]) for p in phases] == [("desired", "failed")], phases
        assert list((state / "clusters").glob("*")) == [], "a cluster was created"

        # ... and `plan` and `verify` stop the same way
        for command in (["plan"], ["verify", "--timeout", "0"]):
            t0 = time.monotonic()
            r = rebuild(["--config", str(bad), *command], state, timeout=120)
            outputs += [r.stdout, r.stderr]
            assert_fails_fast(r, time.monotonic() - t0, f"cannot decrypt {API_FILE}:1:", str(wrong))

        # -- no key configured: the first encrypted document, and the setting to add
        t0 = time.monotonic()
        r = rebuild(["--config", str(keyless), "up"], state, timeout=120)
        outputs += [r.stdout, r.stderr]
        shown = assert_fails_fast(
            r, time.monotonic() - t0, f"{API_FILE}:1: Secret/shop/api is encrypted with SOPS", "reconciler.sops_age_key_file"
        )
        assert f"set reconciler.sops_age_key_file in {keyless}" in shown[1]
        assert list((state / "clusters").glob("*")) == [], "a cluster was created"

        # -- the right key: Flux decrypts in the cluster, verify compares the decrypted values
        t0 = time.monotonic()
        r = rebuild(["-o", "json", "--config", str(good), "up"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stderr[-4000:]
        print(f"up with SOPS Secrets converged in {time.monotonic() - t0:.1f}s")
        res = json.loads(r.stdout)
        assert res["converged"] is True
        objects = {o["ref"]: o for o in res["verify"]["objects"]}
        assert sorted(objects) == ["ConfigMap/shop/settings", "Namespace/shop", "Secret/shop/api", "Secret/shop/db"]
        assert all(o["ok"] and o["present"] and not o["diffs"] for o in objects.values())
        assert not objects["Secret/shop/db"]["suppressed"] and not objects["Secret/shop/api"]["suppressed"]
        assert objects["Secret/shop/db"]["source"] == f"{DB_FILE}:1"

        kubeconfig = LocalCluster(name, root=state).kubeconfig()
        kube = Kube.from_kubeconfig(kubeconfig)
        try:
            db = kube.get("v1", "Secret", "db", NS)
            api = kube.get("v1", "Secret", "api", NS)
        finally:
            kube.close()
        assert db is not None and api is not None
        decoded = {k: base64.b64decode(v).decode() for k, v in db["data"].items()}
        assert decoded == {"password": values["password"], "token": values["token"]}
        assert base64.b64decode(api["data"]["key"]).decode() == values["key"]
        assert "sops" not in db and db["metadata"]["labels"]["app"] == "db"

        r = rebuild(["-o", "json", "--config", str(good), "verify", "--timeout", "0"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        assert {o["ref"]: o["ok"] for o in json.loads(r.stdout)["objects"]} == dict.fromkeys(objects, True)

        # -- a value changed by hand: verify names it, redacted
        suspend_flux(kubeconfig, SOURCE)
        patch = json.dumps({"data": {"password": base64.b64encode(patched.encode()).decode()}})
        kubectl(kubeconfig, "-n", NS, "patch", "secret", "db", "--type=merge", "-p", patch)
        r = rebuild(["-o", "json", "--config", str(good), "verify", "--timeout", "0"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
        found = {o["ref"]: o for o in json.loads(r.stdout)["objects"]}
        assert [ref for ref, o in found.items() if not o["ok"]] == ["Secret/shop/db"]
        (diff,) = found["Secret/shop/db"]["diffs"]
        password_line = line_of(work / "repo" / DB_FILE, "password:")
        assert (diff["path"], diff["change"], diff["source"]) == ("stringData.password", "changed", f"{DB_FILE}:{password_line}")
        assert (diff["git"], diff["live"]) == (redact(values["password"]), redact(patched))
        assert [o["manager"] for o in diff["owners"]] == ["kubectl-patch"]

        r = rebuild(["--config", str(good), "verify", "--timeout", "0"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 1
        assert (
            f"Secret/shop/db: field stringData.password is {redact(patched)} live, {redact(values['password'])} in git "
            f"({DB_FILE}:{password_line}); changed by kubectl-patch"
        ) in r.stdout, r.stdout
        print(f"after kubectl patch: {r.stdout.strip().splitlines()[-1].strip()}")

        assert_no_plaintext_left(tmp_path, outputs, plaintexts)
    finally:
        LocalCluster(name, root=state).delete(purge=True)
        gitserver.stop_server(state / "gitserver")
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"


def test_verify_decrypts_like_flux_a_clear_field_edited_by_hand_but_not_an_edited_value(tmp_path: Path, toolchain: Any) -> None:
    from tests.unit.test_sops_verify import config, desired_state

    tools: Toolchain = toolchain
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "age.agekey"
    public = age_keygen(tools, key)
    password = "pw-" + secrets.token_hex(12)
    repo = tmp_path / "repo"
    (repo / "apps").mkdir(parents=True)
    (repo / "apps" / "kustomization.yaml").write_text("namespace: shop\nresources:\n  - db-secret.yaml\n")
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "stringData": {"password": password}}
    rule = sops.Rule(".sops.yaml:2", "", age=(public,), encrypted_regex="^(data|stringData)$")
    text = sops.encrypt(yaml.safe_dump(doc).encode(), rule, DB_FILE, toolchain=tools)
    # a label added by hand, without sops: the MAC no longer matches; kustomize-controller never checks it
    by_hand = text.replace(b"    name: db\n", b"    name: db\n    labels:\n        team: payments\n", 1)
    assert by_hand != text
    (repo / DB_FILE).write_bytes(by_hand)
    with pytest.raises(ConfigError, match="MAC mismatch"):
        sops.decrypt(DB_FILE, by_hand, key, toolchain=tools)  # what plain `sops --decrypt` says
    views = encrypted.decrypted(config(tmp_path), tools, desired_state(repo))
    (db,) = views.values()
    assert db.body["stringData"] == {"password": password}
    assert db.body["metadata"] == {"name": "db", "namespace": "shop", "labels": {"team": "payments"}}

    # a ciphertext edited by hand fails (AES-GCM), naming the document's file:line
    edited = by_hand.replace(b"ENC[AES256_GCM,data:", b"ENC[AES256_GCM,data:AA", 1)
    (repo / DB_FILE).write_bytes(edited)
    with pytest.raises(ConfigError) as err:
        encrypted.decrypted(config(tmp_path), tools, desired_state(repo))
    assert err.value.message.startswith(f"cannot decrypt {DB_FILE}:1: sops: Error decrypting tree"), err.value.message
    assert err.value.fix == f"{DB_FILE} was changed without sops: re-create the value with `sops edit {DB_FILE}`"
    assert password not in str(err.value)
