"""A Secret a secretGenerator makes from SOPS-encrypted files, end to end (issue 13): the real CLI,
sops, age-keygen, local cluster, git server and Flux's kustomize-controller decrypting.

The repository is written the way Flux repositories do it: a kustomization setting the namespace,
a ``secretGenerator`` reading a dotenv file and a certificate, both encrypted by the real sops
(``--input-type dotenv`` / ``binary``, the plaintext on stdin), plus a literal; a Deployment takes
the Secret through ``envFrom`` (kustomize rewrites that reference to the hashed name).
kustomize-controller decrypts the files before it builds, so the live Secret holds the plaintext
under a hash suffix kustomize computed from it, which is not the one rebuild's render (ciphertext)
shows. Then:

- ``up`` converges: verify compared the live Secret with the values decrypted in memory, under the
  name kustomize-controller gave it, and the Deployment's reference to that name;
- the live Secret equals the plaintext, under the name rebuild.desired.generated predicts;
- a real ``kubectl patch`` of one value (Flux suspended): ``verify`` exits 1 naming that Secret,
  the key, the encrypted env file's line, kubectl-patch, with both values as redacted digests;
- no plaintext (raw or base64) in any output, nor in any file of the run but etcd's data.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters import gitserver
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.desired import generated
from rebuild.desired.render import render
from rebuild.recover.verify import redact
from rebuild.toolchain.tools import Toolchain
from tests.conftest import unique
from tests.integration.test_sops_cli import age_keygen
from tests.integration.test_sops_verify import assert_no_plaintext, assert_no_plaintext_left, rebuild, write_config
from tests.kubectl import kubectl, suspend_flux
from tests.procs import processes_naming

pytestmark = pytest.mark.integration

ENV_FILE = "apps/app.sops.env"
CERT_FILE = "apps/tls.crt.sops"
SOURCE = "apps"
NS = "shop"


def sops_encrypt(tools: Toolchain, public: str, plaintext: bytes, store: str, path: str) -> bytes:
    """The real sops, encrypting a dotenv or binary file for ``public``: the plaintext on stdin,
    the ciphertext on stdout (no plaintext file, no key in argv)."""
    argv = [str(tools.binary("sops")), "--config", "/dev/null", "--encrypt", "--input-type", store, "--output-type", store]
    argv += [f"--age={public}", f"--filename-override={path}", "/dev/stdin"]
    r = subprocess.run(argv, input=plaintext, capture_output=True, env={"HOME": "/nonexistent"}, cwd="/", timeout=60, check=False)
    assert r.returncode == 0, r.stderr.decode()[-500:]
    return r.stdout


def write_repo(repo: Path, tools: Toolchain, public: str, env: dict[str, str], cert: bytes) -> None:
    (repo / "apps").mkdir(parents=True)
    plain_env = "".join(f"{k}={v}\n" for k, v in env.items()).encode()
    (repo / ENV_FILE).write_bytes(sops_encrypt(tools, public, plain_env, "dotenv", ENV_FILE))
    (repo / CERT_FILE).write_bytes(sops_encrypt(tools, public, cert, "binary", CERT_FILE))
    assert generated.is_sops_file((repo / ENV_FILE).read_bytes(), "dotenv")
    assert generated.is_sops_file((repo / CERT_FILE).read_bytes(), "binary")
    (repo / "apps" / "namespace.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n")
    (repo / "apps" / "web.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n"
        "    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n"
        "        - name: web\n          image: nginx:1.27\n          envFrom:\n"
        "            - secretRef:\n                name: app\n"
    )
    (repo / "apps" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: shop\nresources:\n"
        "  - namespace.yaml\n  - web.yaml\nsecretGenerator:\n  - name: app\n    envs:\n      - app.sops.env\n"
        "    files:\n      - tls.crt=tls.crt.sops\n    literals:\n      - MODE=prod\n"
    )


def test_a_secret_generated_from_sops_files_verifies_decrypted_under_flux_s_name(tmp_path: Path, toolchain: Any) -> None:
    tools: Toolchain = toolchain
    work = tmp_path / "work"
    (work / "keys").mkdir(parents=True)
    public = age_keygen(tools, work / "keys" / "age.agekey")
    env = {"DB_PASSWORD": "pw-" + secrets.token_hex(12), "API_TOKEN": "tok-" + secrets.token_hex(12)}
    cert_secret = "cert-" + secrets.token_hex(12)
    cert = f"-----BEGIN CERTIFICATE-----\n{cert_secret}\n-----END CERTIFICATE-----\n".encode()
    patched = "patched-" + secrets.token_hex(12)
    plaintexts = [*env.values(), cert_secret, patched]
    write_repo(work / "repo", tools, public, env, cert)
    for f in (work / "repo").rglob("*"):
        if f.is_file():
            assert_no_plaintext(f.read_text(), plaintexts, str(f))
    # the name kustomize gives the Secret built from the plaintext (values as its generators write them)
    data = {k: generated.kustomize_b64(v.encode()) for k, v in {**env, "MODE": "prod"}.items()}
    data["tls.crt"] = generated.kustomize_b64(cert)
    expected_name = f"app-{generated.secret_hash({'type': 'Opaque', 'data': data})}"
    del data
    state = tmp_path / "state"
    name = unique("sopsgen")
    config = write_config(work, "rebuild.yaml", name, "keys/age.agekey")
    outputs: list[str] = []
    try:
        r = rebuild(["-o", "json", "--config", str(config), "up"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        res = json.loads(r.stdout)
        objects = {o["ref"]: o for o in res["verify"]["objects"]}
        assert all(o["ok"] and o["present"] and not o["diffs"] for o in objects.values()), objects
        (secret,) = [o for ref, o in objects.items() if ref.startswith("Secret/")]
        # verified under Flux's name; rebuild's render of git names it by the hash of the ciphertext
        assert (secret["ref"], secret["name"]) == (f"Secret/shop/{expected_name}", expected_name), secret
        (rendered,) = [o.ref.name for o in render(work / "repo", "apps").objects if o.ref.kind == "Secret"]
        assert rendered != expected_name
        print(f"\nup converged; rebuild's render names the Secret {rendered}, Flux {expected_name}")

        kubeconfig = LocalCluster(name, root=state).kubeconfig()
        kube = Kube.from_kubeconfig(kubeconfig)
        try:
            live = kube.get("v1", "Secret", expected_name, NS)
            web = kube.get("apps/v1", "Deployment", "web", NS)
        finally:
            kube.close()
        assert live is not None, f"kustomize-controller did not name the Secret {expected_name}"
        decoded = {k: base64.b64decode(v) for k, v in live["data"].items()}
        assert decoded == {**{k: v.encode() for k, v in env.items()}, "MODE": b"prod", "tls.crt": cert}  # Flux decrypted
        assert web is not None
        assert web["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": expected_name}}]

        r = rebuild(["-o", "json", "--config", str(config), "verify", "--timeout", "0"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]

        # -- a value changed by hand: verify names it, redacted
        suspend_flux(kubeconfig, SOURCE)
        patch = json.dumps({"data": {"DB_PASSWORD": base64.b64encode(patched.encode()).decode()}})
        kubectl(kubeconfig, "-n", NS, "patch", "secret", expected_name, "--type=merge", "--patch-file=/dev/stdin", stdin=patch)
        r = rebuild(["-o", "json", "--config", str(config), "verify", "--timeout", "0"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
        found = json.loads(r.stdout)["objects"]
        (failing,) = [o for o in found if not o["ok"]]
        (diff,) = failing["diffs"]
        assert (diff["path"], diff["change"], diff["source"]) == ("data.DB_PASSWORD", "changed", f"{ENV_FILE}:1")
        assert (diff["git"], diff["live"]) == (redact(env["DB_PASSWORD"]), redact(patched))
        assert [o["manager"] for o in diff["owners"]] == ["kubectl-patch"]
        r = rebuild(["--config", str(config), "verify", "--timeout", "0"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 1, r.stdout
        assert f"Secret/shop/{expected_name}: field data.DB_PASSWORD is {redact(patched)} live" in r.stdout, r.stdout
        print(f"after kubectl patch: {r.stdout.strip().splitlines()[-1].strip()}")

        # -- capture compares the same way: one finding, under the live name; the value is listed, never written
        r = rebuild(["-o", "json", "--config", str(config), "capture", "--dry-run"], state, timeout=300)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
        res = json.loads(r.stdout)
        findings = [(f["object"], f["path"], f["manager"]) for f in res["report"]["findings"]]
        assert findings == [(f"Secret/shop/{expected_name}", "data.DB_PASSWORD", "kubectl-patch")], findings
        assert res["files"] == [], res["files"]  # an encrypted .env is not rewritten
        (listed,) = [ln for ln in res["listed"] if ln.startswith(f"Secret/shop/{expected_name}")]
        assert "values are not copied" in listed and ENV_FILE in listed, listed

        assert_no_plaintext_left(tmp_path, outputs, plaintexts)
    finally:
        LocalCluster(name, root=state).delete(purge=True)
        gitserver.stop_server(state / "gitserver")
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"
