"""A HelmRelease whose values come from a generated ConfigMap and a SOPS-encrypted Secret
(``spec.valuesFrom``), end to end (issue 13, "values from valuesFrom ConfigMaps/Secrets"): the real
CLI, local cluster, git server, sops/age, kustomize-, source- and helm-controller.

The repository is written the way Flux users write it (the pattern of Flux's own Helm guide):
values in a ``configMapGenerator`` file, a ``kustomizeconfig.yaml`` so kustomize rewrites
``spec.valuesFrom[].name`` to the hashed ConfigMap name, a token in a SOPS-encrypted Secret taken
with ``valuesKey`` and ``targetPath``, inline values over both, no namespace in any manifest (the
kustomization sets it), four-space indentation and comments.

- ``up`` converges and `verify` checks the release's values digest composed from git (the
  ConfigMap's file, the Secret decrypted in memory, the inline values) against the one
  helm-controller recorded: the HelmRelease's verdict says nothing about "not checked", and a
  digest rebuild got wrong would have kept `up` waiting (progressing) until its timeout;
- the chart rendered what the composition says (inline replicas over the ConfigMap's, the
  ConfigMap's greeting, the decrypted token at ``auth.token``);
- someone edits the values ConfigMap by hand (real ``kubectl patch``, Flux's Kustomization
  suspended) and forces a Helm upgrade: `verify` exits 1 naming both the ConfigMap's changed field
  and the HelmRelease whose installed values are no longer git's, with the valuesFrom line;
- `capture --dry-run` finds that one hand edit (the forced reconcile's annotation is noise) and
  writes the edited values back to the generator's file;
- the token's plaintext is in no output.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import sops
from rebuild.adapters.kube import Kube
from rebuild.clusters.local import LocalCluster
from rebuild.recover.helmverify import latest_snapshot
from rebuild.toolchain.tools import Toolchain
from tests.conftest import unique
from tests.integration.test_sops_cli import age_keygen
from tests.integration.test_sops_verify import assert_no_plaintext_left, rebuild
from tests.kubectl import kubectl, suspend_flux
from tests.procs import processes_naming, stop_servers

pytestmark = pytest.mark.integration

NS = "greet"
HELM_API = "helm.toolkit.fluxcd.io/v2"
SECRET_FILE = "apps/greeter-auth.sops.yaml"

HR = """\
# greeter: values from the generated ConfigMap, the token from the encrypted Secret
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
    name: greeter
spec:
    interval: 10m
    chart:
        spec:
            chart: greeter
            version: 0.1.x
            sourceRef:
                kind: HelmRepository
                name: apps-charts
                namespace: flux-system
    valuesFrom:
        - kind: ConfigMap
          name: greeter-values
        - kind: Secret
          name: greeter-auth
          valuesKey: token
          targetPath: auth.token
    values:
        replicas: 2   # inline values win over the ConfigMap's
"""
VALUES_FROM_LINE = 16

TEMPLATES = {
    "deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: web
          image: "nginx:{{ .Values.image.tag }}"
""",
    "configmap.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  greeting: {{ .Values.greeting | quote }}
""",
    "secret.yaml": """apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-token
stringData:
  token: {{ .Values.auth.token | quote }}
""",
}


def write_repo(repo: Path, tools: Toolchain, public: str, token: str) -> None:
    chart = repo / "charts" / "greeter"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: greeter\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("replicas: 1\ngreeting: hi\nimage:\n  tag: '1.26'\nauth:\n  token: ''\n")
    for name, text in TEMPLATES.items():
        (chart / "templates" / name).write_text(text)
    apps = repo / "apps"
    apps.mkdir()
    (repo / ".sops.yaml").write_text(
        f"creation_rules:\n  - path_regex: .*\\.sops\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: {public}\n"
    )
    (apps / "namespace.yaml").write_text(f"apiVersion: v1\nkind: Namespace\nmetadata:\n    name: {NS}\n")
    (apps / "helmrelease.yaml").write_text(HR)
    (apps / "greeter-values.yaml").write_text("greeting: hello from a ConfigMap\nreplicas: 1\nimage:\n    tag: '1.27'\n")
    (apps / "kustomizeconfig.yaml").write_text(
        "nameReference:\n  - kind: ConfigMap\n    version: v1\n    fieldSpecs:\n"
        "      - path: spec/valuesFrom/name\n        kind: HelmRelease\n"
    )
    (apps / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: {NS}\nresources:\n  - namespace.yaml\n  - helmrelease.yaml\n  - greeter-auth.sops.yaml\n"
        "configMapGenerator:\n  - name: greeter-values\n    files:\n      - values.yaml=greeter-values.yaml\n"
        "configurations:\n  - kustomizeconfig.yaml\n"
    )
    doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "greeter-auth"}, "stringData": {"token": token}}
    rule = sops.creation_rule(repo, SECRET_FILE)
    assert rule is not None and rule.age == (public,)
    (repo / SECRET_FILE).write_bytes(sops.encrypt(yaml.safe_dump(doc).encode(), rule, SECRET_FILE, toolchain=tools))
    assert token.encode() not in (repo / SECRET_FILE).read_bytes()


def write_config(work: Path, cluster: str) -> Path:
    cfg = {
        "sources": [{"name": "apps", "url": "repo", "branch": "main", "path": "apps", "charts": "charts"}],
        "cluster": {"provider": "local", "name": cluster, "nodes": 1},
        "reconciler": {"kind": "flux", "interval": "1m", "sops_age_key_file": "keys/age.agekey"},
        "verify": {"timeout": "4m"},
    }
    path = work / "rebuild.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_values_from_a_generated_configmap_and_a_sops_secret_are_composed_and_verified(tmp_path: Path, toolchain: Any) -> None:
    tools: Toolchain = toolchain
    work = tmp_path / "work"
    (work / "keys").mkdir(parents=True)
    public = age_keygen(tools, work / "keys" / "age.agekey")
    token = "tok-" + secrets.token_hex(12)
    write_repo(work / "repo", tools, public, token)
    lines = (work / "repo" / "apps" / "helmrelease.yaml").read_text().splitlines()
    assert lines[VALUES_FROM_LINE - 1].strip() == "valuesFrom:"
    name = unique("hvf")
    config = write_config(work, name)
    state = tmp_path / "state"
    outputs: list[str] = []
    try:
        r = rebuild(["-o", "json", "--config", str(config), "up"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        objects = {o["ref"]: o for o in json.loads(r.stdout)["verify"]["objects"]}
        hr = objects[f"HelmRelease/{NS}/greeter"]
        assert hr["ok"], hr
        message = hr["health"]["message"]
        assert "deployed" in message and "not checked" not in message, message
        rendered = {o["ref"]: o for o in hr["rendered"]}
        assert set(rendered) == {f"Deployment/{NS}/greeter", f"ConfigMap/{NS}/greeter-settings", f"Secret/{NS}/greeter-token"}
        assert all(o["ok"] for o in rendered.values()), rendered
        (values_cm,) = [ref for ref in objects if ref.startswith(f"ConfigMap/{NS}/greeter-values-")]  # the hashed name
        print(f"\nup converged: {message}")

        kubeconfig = LocalCluster(name, root=state).kubeconfig()
        kube = Kube.from_kubeconfig(kubeconfig)
        try:
            dep = kube.get("apps/v1", "Deployment", "greeter", NS)
            settings = kube.get("v1", "ConfigMap", "greeter-settings", NS)
            auth = kube.get("v1", "Secret", "greeter-token", NS)
            live_hr = kube.get(HELM_API, "HelmRelease", "greeter", NS)
            assert dep is not None and settings is not None and auth is not None and live_hr is not None
            assert dep["spec"]["replicas"] == 2  # inline over the ConfigMap's 1
            assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"  # the ConfigMap's tag
            assert settings["data"] == {"greeting": "hello from a ConfigMap"}
            assert base64.b64decode(auth["data"]["token"]).decode() == token  # decrypted, set at auth.token
            assert live_hr["spec"]["valuesFrom"][0]["name"] == values_cm.rsplit("/", 1)[1]
            installed = (latest_snapshot(live_hr["status"]) or {}).get("configDigest")

            # -- the values ConfigMap edited by hand, and a Helm upgrade forced with them
            suspend_flux(kubeconfig, "apps")
            hand = json.dumps({"data": {"values.yaml": "greeting: edited by hand\nreplicas: 1\nimage:\n  tag: '1.27'\n"}})
            kubectl(
                kubeconfig,
                "-n",
                NS,
                "patch",
                "configmap",
                values_cm.rsplit("/", 1)[1],
                "--type=merge",
                "--patch-file=/dev/stdin",
                stdin=hand,
            )
            kubectl(
                kubeconfig,
                "-n",
                NS,
                "annotate",
                "helmrelease",
                "greeter",
                "--overwrite",
                f"reconcile.fluxcd.io/requestedAt={time.time()}",
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                now = kube.get(HELM_API, "HelmRelease", "greeter", NS) or {}
                snap = latest_snapshot(now.get("status") or {}) or {}
                digest = snap.get("configDigest")
                ready = [c for c in (now.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"]
                upgraded = bool(ready) and ready[0].get("status") == "True" and snap.get("status") == "deployed"
                if digest and digest != installed and upgraded:
                    break
                time.sleep(1)
            else:
                pytest.fail(f"helm-controller did not upgrade greeter with the edited values (digest still {installed})")
        finally:
            kube.close()

        r = rebuild(["-o", "json", "--config", str(config), "verify", "--timeout", "0"], state)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
        found = {o["ref"]: o for o in json.loads(r.stdout)["objects"]}
        (diff,) = found[values_cm]["diffs"]
        assert (diff["path"], diff["change"]) == ("data.values.yaml", "changed"), diff
        assert [o["manager"] for o in diff["owners"]] == ["kubectl-patch"], diff
        failing = found[f"HelmRelease/{NS}/greeter"]
        assert not failing["ok"], failing
        said = failing["health"]["message"]
        assert f"installed values with digest {digest}; git declares {installed}" in said, said
        assert f"spec.valuesFrom ConfigMap {values_cm.rsplit('/', 1)[1]}" in said, said
        assert f"apps/helmrelease.yaml:{VALUES_FROM_LINE}" in said, said
        print(f"after the hand edit: {said}")

        r = rebuild(["-o", "json", "--config", str(config), "capture", "--dry-run"], state, timeout=300)
        outputs += [r.stdout, r.stderr]
        assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
        res = json.loads(r.stdout)
        findings = [(f["object"], f["path"], f["manager"]) for f in res["report"]["findings"]]
        assert findings == [(values_cm, "data.values.yaml", "kubectl-patch")], findings  # the forced reconcile is noise
        # the ConfigMap's values go back to the generator's file; the chart's objects match Helm's record
        assert "+++ b/apps/greeter-values.yaml" in res["diff"] and "+greeting: edited by hand" in res["diff"], res["diff"]
        assert "-greeting: hello from a ConfigMap" in res["diff"], res["diff"]
        assert_no_plaintext_left(tmp_path, outputs, [token])
    finally:
        LocalCluster(name, root=state).delete(purge=True)
        stop_servers(state)
    assert processes_naming(tmp_path) == {}, "a process started for this test is still running"
