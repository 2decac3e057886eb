"""capture of SOPS-encrypted Secrets end to end (issue 13 item 6): the real CLI, sops, age-keygen,
local cluster, git server and Flux kustomize-controller decrypting.

The repository is written the way Flux repositories are (tests/integration/test_sops_verify.py):
a ``kustomization.yaml`` setting the namespace, Secrets naming none, encrypted by the real sops from
plaintexts held in this test's memory only. ``.sops.yaml`` has a rule (age recipient,
``encrypted_regex: ^(data|stringData)$``) for ``apps/db-secret.yaml`` only; ``apps/api-secret.yaml``
is encrypted for the same key but no rule matches it. ``rebuild up`` converges (Flux decrypts
both), Flux is suspended, and a person changes one value of each Secret with ``kubectl patch``.

``rebuild capture --dry-run -o json`` then:

- reports exactly the two changed keys (db's unchanged ``token`` is no finding: the comparison is
  with the decrypted values), with redacted digests;
- edits one file, ``apps/db-secret.yaml``, whose new text, ``sops -d``'d here with the test's
  private key (``SOPS_AGE_KEY_FILE``, not argv), holds the new password in ``stringData`` and the
  old token, for the same recipient;
- lists ``Secret/shop/api`` (no rule) the way it always did, naming the key, with the reason;
- prints no plaintext (new or old, raw or base64) in stdout, stderr or the diff, and leaves none
  in any file under the test's folder (the state dir included; etcd's data aside) nor in the
  git server's history.

The new file is then put in the repository and capture runs again: db no longer differs (rebuild
decrypts the new ciphertext to the live value), api is still listed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import gitserver, sops
from rebuild.clusters.local import LocalCluster
from rebuild.recover.verify import redact
from rebuild.toolchain.tools import Toolchain
from tests.conftest import unique
from tests.integration.test_sops_cli import age_keygen
from tests.integration.test_sops_verify import assert_no_plaintext, files_holding
from tests.kubectl import kubectl, suspend_flux
from tests.procs import processes_naming

pytestmark = pytest.mark.integration

DB_FILE = "apps/db-secret.yaml"  # a .sops.yaml rule matches it
API_FILE = "apps/api-secret.yaml"  # encrypted for the same key, but no rule matches it
SOURCE = "apps"
NS = "shop"


def rebuild(args: list[str], state: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REBUILD_STATE_DIR=str(state))
    env.pop("CI", None)
    return subprocess.run([sys.executable, "-m", "rebuild.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def write_repo(repo: Path, tools: Toolchain, public: str, values: dict[str, str]) -> None:
    (repo / "apps").mkdir(parents=True)
    (repo / ".sops.yaml").write_text(
        f"creation_rules:\n  - path_regex: apps/db-.*\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: {public}\n"
    )
    (repo / "apps" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: shop\nresources:\n"
        "  - namespace.yaml\n  - db-secret.yaml\n  - api-secret.yaml\n"
    )
    (repo / "apps" / "namespace.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n")
    db = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "labels": {"app": "db"}},
        "type": "Opaque",
        "stringData": {"password": values["password"]},
        "data": {"token": b64(values["token"])},
    }
    api = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api"}, "data": {"key": b64(values["key"])}}
    rule = sops.creation_rule(repo, DB_FILE)
    assert rule is not None and rule.age == (public,)
    assert sops.creation_rule(repo, API_FILE) is None
    for path, doc, r in (
        (DB_FILE, db, rule),
        (API_FILE, api, sops.Rule("(test)", "", age=(public,), encrypted_regex="^(data|stringData)$")),
    ):
        (repo / path).write_bytes(sops.encrypt(yaml.safe_dump(doc, sort_keys=False).encode(), r, path, toolchain=tools))


def sops_decrypt(tools: Toolchain, key: Path, text: str) -> list[Any]:
    """``sops -d`` of a text with the test's key: the key file in SOPS_AGE_KEY_FILE, the text on
    stdin, the plaintext on stdout (kept in memory)."""
    env = {"SOPS_AGE_KEY_FILE": str(key), "HOME": "/nonexistent", "SOPS_DISABLE_VERSION_CHECK": "1"}
    r = subprocess.run(
        [str(tools.binary("sops")), "--decrypt", "--input-type", "yaml", "--output-type", "yaml", "/dev/stdin"],
        input=text.encode(),
        capture_output=True,
        env=env,
        cwd="/",
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()[-500:]
    return list(yaml.safe_load_all(r.stdout))


def capture(config: Path, state: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    t0 = time.monotonic()
    r = rebuild(["-o", "json", "--config", str(config), "capture", "--dry-run"], state, timeout=300)
    assert r.returncode in (0, 1), r.stdout[-2000:] + r.stderr[-3000:]
    print(f"capture --dry-run: exit {r.returncode} in {time.monotonic() - t0:.2f}s")
    return r, json.loads(r.stdout)


def secret_findings(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted((f["object"], f["path"], f["manager"]) for f in res["report"]["findings"] if f["object_kind"] == "Secret")


def test_a_secret_changed_live_goes_to_the_pr_encrypted_for_the_rule_and_nowhere_in_clear(tmp_path: Path, toolchain: Any) -> None:
    tools: Toolchain = toolchain
    work = tmp_path / "work"
    (work / "keys").mkdir(parents=True)
    key = work / "keys" / "age.agekey"
    public = age_keygen(tools, key)
    values = {
        "password": "pw-" + secrets.token_hex(12),
        "token": "tok-" + secrets.token_hex(12),
        "key": "key-" + secrets.token_hex(12),
    }
    new_password = "rotated-" + secrets.token_hex(12)
    new_key = "apikey-" + secrets.token_hex(12)
    plaintexts = [*values.values(), new_password, new_key]
    repo = work / "repo"
    write_repo(repo, tools, public, values)
    old_api = (repo / API_FILE).read_text()
    state = tmp_path / "state"
    name = unique("capsops")
    config = work / "rebuild.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": [{"name": SOURCE, "url": "repo", "branch": "main", "path": "apps"}],
                "cluster": {"provider": "local", "name": name, "nodes": 1},
                "reconciler": {"kind": "flux", "interval": "1m", "sops_age_key_file": "keys/age.agekey"},
                "verify": {"timeout": "4m"},
            },
            sort_keys=False,
        )
    )
    outputs: list[str] = []
    try:
        t0 = time.monotonic()
        r = rebuild(["-o", "json", "--config", str(config), "up"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stderr[-4000:]
        print(f"\nup converged in {time.monotonic() - t0:.1f}s")
        kubeconfig = LocalCluster(name, root=state).kubeconfig()
        live = json.loads(kubectl(kubeconfig, "-n", NS, "get", "secret", "db", "-o", "json"))
        assert base64.b64decode(live["data"]["password"]).decode() == values["password"]  # Flux decrypted it

        # -- no manual change: the encrypted Secrets are no findings (compared decrypted)
        r, res = capture(config, state)
        outputs += [r.stdout, r.stderr]
        assert secret_findings(res) == [], res["report"]["findings"]

        # -- a person changes one value of each Secret
        suspend_flux(kubeconfig, SOURCE)
        kubectl(
            kubeconfig,
            "-n",
            NS,
            "patch",
            "secret",
            "db",
            "--type=merge",
            "-p",
            json.dumps({"data": {"password": b64(new_password)}}),
        )
        kubectl(kubeconfig, "-n", NS, "patch", "secret", "api", "--type=merge", "-p", json.dumps({"data": {"key": b64(new_key)}}))

        r, res = capture(config, state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 1 and res["drift"] is True and res["action"] == "dry-run"
        # exactly the changed keys (db's token is unchanged: compared with the decrypted value)
        assert secret_findings(res) == [
            ("Secret/shop/api", "data.key", "kubectl-patch"),
            ("Secret/shop/db", "stringData.password", "kubectl-patch"),
        ]
        db_finding = next(f for f in res["report"]["findings"] if f["object"] == "Secret/shop/db")
        assert (db_finding["git"], db_finding["live"]) == (redact(values["password"]), redact(new_password))
        # one file edited: db's, with the new ciphertext; api's is listed, not edited
        assert res["files"] == [DB_FILE], res["files"]
        assert f"+++ b/{DB_FILE}" in res["diff"] and API_FILE not in res["diff"]
        (api_line,) = [ln for ln in res["listed"] if ln.startswith("Secret/shop/api")]
        assert api_line.startswith("Secret/shop/api: the value of key key differs live (changed by kubectl-patch (Update))")
        assert api_line.endswith(
            f"encrypt the live value with SOPS and update {API_FILE} "
            f"(not written encrypted: no .sops.yaml creation rule matches {API_FILE})"
        ), api_line
        assert not any(ln.startswith("Secret/shop/db") for ln in res["listed"]), res["listed"]
        assert f"is written to {DB_FILE} encrypted with sops for the .sops.yaml:2 rule ({public})" in res["body"]

        assert_no_plaintext(res["diff"], plaintexts, "the diff")
        assert_no_plaintext(res["body"], plaintexts, "the PR body")

        # -- the diff's new file: sops -d with the test's key gives the new plaintext
        applied = tmp_path / "applied"
        shutil.copytree(repo, applied)
        subprocess.run(["git", "apply", "-p1", "-"], input=res["diff"], cwd=applied, text=True, check=True, capture_output=True)
        new_text = (applied / DB_FILE).read_text()
        assert new_text != (repo / DB_FILE).read_text() and (applied / API_FILE).read_text() == old_api
        (encrypted_doc,) = yaml.safe_load_all(new_text)
        assert sops.is_sops_document(encrypted_doc) and sops.file_recipients(new_text.encode()) == [public]
        assert encrypted_doc["stringData"]["password"].startswith("ENC[AES256_GCM,")
        assert encrypted_doc["metadata"] == {"name": "db", "labels": {"app": "db"}}  # clear, as the rule says
        (doc,) = sops_decrypt(tools, key, new_text)
        assert doc == {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db", "labels": {"app": "db"}},
            "type": "Opaque",
            "stringData": {"password": new_password},  # the field the file uses, as text
            "data": {"token": b64(values["token"])},  # unchanged
        }
        print(f"the diff's {DB_FILE} decrypts (sops -d, the test's key) to the live value")

        # -- merged: rebuild decrypts the new file to the live value, so only api is left
        (repo / DB_FILE).write_text(new_text)
        r, res = capture(config, state)
        outputs += [r.stdout, r.stderr]
        assert secret_findings(res) == [("Secret/shop/api", "data.key", "kubectl-patch")], res["report"]["findings"]
        assert res["files"] == []

        for i, text in enumerate(outputs):
            assert_no_plaintext(text, plaintexts, f"output {i} of the CLI")
        # nor in any file of the run (render cache, logs, the git server), the cluster's datastore aside
        scanned = files_holding(tmp_path, plaintexts, skip="state/clusters/*/etcd/*")
        assert scanned[1] == [], scanned[1]
        assert scanned[0] > 20, scanned
        # nor in the history of any git repository of the run (the git server's, rebuild's mirrors):
        # objects are compressed, so read them through git
        gits = sorted({p.parent for p in state.rglob("HEAD") if (p.parent / "objects").is_dir()})
        histories = []
        for g in gits:
            log = subprocess.run(["git", "--git-dir", str(g), "log", "-p", "--all"], capture_output=True, text=True, check=True)
            assert_no_plaintext(log.stdout, plaintexts, f"git history of {g}")
            histories.append(log.stdout)
        assert any(f"+++ b/{DB_FILE}" in h and "ENC[AES256_GCM," in h for h in histories), gits
        print(f"plaintexts in none of {scanned[0]} files of the run (etcd's data aside) nor {len(gits)} git histories")
    finally:
        LocalCluster(name, root=state).delete(purge=True)
        gitserver.stop_server(state / "gitserver")
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"
