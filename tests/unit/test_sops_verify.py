"""verify of SOPS-encrypted documents (issue 13 item 5), sops faked: which file is decrypted with
which key, how the decrypted values meet the rendered object, what a missing or wrong key says,
and one verify pass over a faked API that compares the decrypted values and reports them redacted.

The repository is rendered for real (kustomize), written the way Flux repositories are: a
kustomization.yaml with a namespace, Secrets without one, two encrypted documents in one file.
The real sops and age run in tests/integration/test_sops_verify.py.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import sops
from rebuild.adapters.git import Checkout
from rebuild.core.config import ClusterSpec, Config, ReconcilerSpec, SourceSpec, VerifySpec
from rebuild.core.errors import ConfigError, KubeError
from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.desired.render import render
from rebuild.recover import encrypted
from rebuild.recover.converge import check, wait_converged
from rebuild.recover.sources import DesiredState, SourceState
from rebuild.toolchain.registry import ToolPaths

# Never written to a file by these tests: the fake sops returns them from memory.
PASSWORD = "pw-unit-7f3a9c"
TOKEN = "tok-unit-41be02"
PATCHED = "changed-by-hand-55d1"
RECIPIENT = "age1vcng8mjn0e2dnkn654hx6fnuzzsxkcvqnp4j07f9wjrp2vuts9nq3k6cxh"
SECRETS_FILE = "apps/secrets.yaml"
OTHER_FILE = "apps/web-secret.yaml"  # after SECRETS_FILE in the repository
LAST_FILE = "apps/zz-secret.yaml"


def enc(n: int) -> str:
    return f"ENC[AES256_GCM,data:Zm9v{n}bw==,iv:aXZpdml2aXZpdml2aXZpdml2aXY={n},tag:dGFndGFndGFndGFn{n}==,type:str]"


SOPS_META = f"""\
sops:
  age:
    - recipient: {RECIPIENT}
      enc: |
        -----BEGIN AGE ENCRYPTED FILE-----
        YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOQ==
        -----END AGE ENCRYPTED FILE-----
  lastmodified: "2026-11-30T10:00:00Z"
  mac: ENC[AES256_GCM,data:bWFj,iv:aXY=,tag:dGFn,type:str]
  encrypted_regex: ^(data|stringData)$
  version: 3.13.3
"""

# Two Secrets in one encrypted file (sops writes the metadata into each document), no namespace.
ENCRYPTED = f"""\
apiVersion: v1
kind: Secret
metadata:
  name: db
type: Opaque
stringData:
  password: {enc(1)}
data:
  token: {enc(2)}
{SOPS_META}---
apiVersion: v1
kind: Secret
metadata:
  name: api
stringData:
  key: {enc(3)}
{SOPS_META}"""

# What sops --decrypt prints for it (re-indented, metadata gone).
PLAIN = f"""\
apiVersion: v1
kind: Secret
metadata:
    name: db
type: Opaque
stringData:
    password: {PASSWORD}
data:
    token: {base64.b64encode(TOKEN.encode()).decode()}
---
apiVersion: v1
kind: Secret
metadata:
    name: api
stringData:
    key: api-{PASSWORD}
"""


def other_encrypted(name: str) -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  x: {enc(4)}\n{SOPS_META}"


def other_plain(name: str) -> str:
    return f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\nstringData:\n  x: other-value\n"


class FakeSops:
    """sops.decrypt over a table of plaintexts; records every call (never the plaintext)."""

    def __init__(self, plain: dict[str, str], fail: dict[str, ConfigError] | None = None) -> None:
        self.plain = plain
        self.fail = fail or {}
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        path_in_repo: str,
        encrypted: bytes,  # the Decrypt protocol's name (shadows the module, unused here)
        age_key_file: Path,
        *,
        toolchain: ToolPaths,
        source: str = "",
        ignore_mac: bool = False,
        store: str = "",
    ) -> bytes:
        self.calls.append({"path": path_in_repo, "key": age_key_file, "source": source, "ignore_mac": ignore_mac})
        assert sops.is_sops_document(next(iter(yaml.safe_load_all(encrypted))))
        if path_in_repo in self.fail:
            raise self.fail[path_in_repo]
        return self.plain[path_in_repo].encode()


def write_repo(root: Path, *, more: tuple[str, ...] = ()) -> None:
    """The repo; ``more``: further files (in apps/) holding one encrypted Secret each."""
    (root / "apps").mkdir(parents=True)
    (root / SECRETS_FILE).write_text(ENCRYPTED)
    (root / "apps" / "settings.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n")
    resources = ["secrets.yaml", "settings.yaml"]
    for path in more:
        (root / path).write_text(other_encrypted(Path(path).stem))
        resources.insert(0, Path(path).name)  # listed first: the order of files in the repository counts, not this
    (root / "apps" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: shop\nresources:\n"
        + "".join(f"  - {r}\n" for r in resources)
    )


def desired_state(root: Path) -> DesiredState:
    got = render(root, "apps")
    assert not got.problems, got.problems
    spec = SourceSpec("apps", ".", path="apps")
    checkout = Checkout("apps", ".", "main", "0" * 40, root, 0)
    return DesiredState([SourceState(spec, ".", checkout, got.objects)])


def config(tmp_path: Path, key: str = "keys/age.agekey") -> Config:
    return Config(
        path=tmp_path / "rebuild.yaml",
        sources=(SourceSpec("apps", ".", path="apps"),),
        cluster=ClusterSpec("demo"),
        reconciler=ReconcilerSpec("flux", "1m", key),
    )


TOOLS = ToolPaths(root=Path("/nonexistent"))


def by_ref(state: DesiredState) -> dict[str, DesiredObject]:
    return {str(o.ref): o for o in state.objects}


# --------------------------------------------------------------------------- decrypting


def test_each_encrypted_file_is_decrypted_once_with_the_configured_key_into_copies_for_the_comparison(tmp_path: Path) -> None:
    write_repo(tmp_path / "repo")
    state = desired_state(tmp_path / "repo")
    before = json.dumps([o.body for o in state.objects], sort_keys=True)
    fake = FakeSops({SECRETS_FILE: PLAIN})

    views = encrypted.decrypted(config(tmp_path), TOOLS, state, decrypt=fake)

    assert fake.calls == [
        {"path": SECRETS_FILE, "key": tmp_path / "keys" / "age.agekey", "source": f"{SECRETS_FILE}:1", "ignore_mac": True}
    ]
    assert sorted(str(r) for r in views) == ["Secret/shop/api", "Secret/shop/db"]
    db = views[ObjectRef("", "Secret", "shop", "db")]
    # the decrypted values, the namespace kustomize set (the file names none), no sops metadata
    assert db.body == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "type": "Opaque",
        "stringData": {"password": PASSWORD},
        "data": {"token": base64.b64encode(TOKEN.encode()).decode()},
    }
    assert views[ObjectRef("", "Secret", "shop", "api")].body["stringData"] == {"key": f"api-{PASSWORD}"}
    assert db.source == Source(SECRETS_FILE, 1) and db.declared is not None and db.declared.doc == 0
    # the desired state (what the render cache, plan and reports hold) keeps the ciphertext
    assert json.dumps([o.body for o in state.objects], sort_keys=True) == before
    assert PASSWORD not in before and "sops" in by_ref(state)["Secret/shop/db"].body
    assert encrypted.check(config(tmp_path), TOOLS, state, decrypt=fake) == 2


def test_view_puts_decrypted_values_where_the_rendered_object_holds_ciphertext() -> None:
    rendered: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "p-db", "namespace": "shop", "labels": {"team": "a"}},
        "stringData": {"password": enc(1), "clear": "as-written"},
        "items": [enc(2), "plain"],
        "sops": {"mac": "x", "lastmodified": "y"},
    }
    plain = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "stringData": {"password": "s3cret", "clear": "other"},
        "items": ["decrypted", "plain"],
    }
    obj = DesiredObject(ObjectRef.of(rendered), "v1", rendered, Source("a.yaml", 1))
    body = encrypted.view(obj, plain).body
    assert body == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "p-db", "namespace": "shop", "labels": {"team": "a"}},  # what kustomize set stays
        "stringData": {"password": "s3cret", "clear": "as-written"},  # only ENC[...] values are replaced
        "items": ["decrypted", "plain"],
    }
    assert "sops" in rendered and rendered["stringData"]["password"] == enc(1)  # the original is untouched


def test_no_encrypted_documents_needs_no_key_and_runs_no_sops(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "apps").mkdir(parents=True)
    (root / "apps" / "kustomization.yaml").write_text("resources:\n  - cm.yaml\n")
    (root / "apps" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: x\n")
    fake = FakeSops({})
    assert encrypted.decrypted(config(tmp_path, key=""), TOOLS, desired_state(root), decrypt=fake) == {}
    assert fake.calls == []


def test_no_key_configured_names_the_first_encrypted_file_and_the_setting(tmp_path: Path) -> None:
    write_repo(tmp_path / "repo")
    fake = FakeSops({SECRETS_FILE: PLAIN})
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        encrypted.check(config(tmp_path, key=""), TOOLS, desired_state(tmp_path / "repo"), decrypt=fake)
    assert time.monotonic() - started < 5
    # the first in the repository (kustomize lists Secret/shop/api, at line 22, first)
    assert err.value.message == (
        f"{SECRETS_FILE}:1: Secret/shop/db is encrypted with SOPS and rebuild.yaml sets no reconciler.sops_age_key_file: "
        "Flux could not decrypt it, nor verify compare it; nothing was applied"
    )
    assert err.value.fix == (
        f"set reconciler.sops_age_key_file in {tmp_path / 'rebuild.yaml'} to the age key file (kept outside git) that decrypts it"
    )
    assert fake.calls == []


def test_a_wrong_key_stops_at_the_first_file_naming_it_and_the_key_file(tmp_path: Path) -> None:
    write_repo(tmp_path / "repo", more=(OTHER_FILE,))
    key = tmp_path / "keys" / "age.agekey"
    wrong = sops.wrong_key_error(f"{SECRETS_FILE}:1", key, [RECIPIENT], ["age1other"])
    fake = FakeSops({SECRETS_FILE: PLAIN, OTHER_FILE: other_plain("web-secret")}, fail={SECRETS_FILE: wrong, OTHER_FILE: wrong})
    (tmp_path / "rebuild.yaml").write_text(
        "sources:\n  - {name: apps, url: ., path: apps}\ncluster: {name: demo}\nreconciler:\n"
        "  kind: flux\n  sops_age_key_file: keys/age.agekey\n"
    )
    with pytest.raises(ConfigError) as err:
        encrypted.check(config(tmp_path), TOOLS, desired_state(tmp_path / "repo"), decrypt=fake)
    assert err.value.message == wrong.message
    assert f"cannot decrypt {SECRETS_FILE}:1: the age key in {key} (age1other) is not a recipient" in err.value.message
    # the fix says where rebuild.yaml sets the key file
    assert err.value.fix == f"{wrong.fix}; it is set at {tmp_path / 'rebuild.yaml'}:6"
    assert [c["path"] for c in fake.calls] == [SECRETS_FILE]  # the other file is not tried: one sops run


def test_of_several_failing_files_the_first_in_the_repository_is_reported(tmp_path: Path) -> None:
    write_repo(tmp_path / "repo", more=(OTHER_FILE, LAST_FILE))
    bad = ConfigError(f"cannot decrypt {OTHER_FILE}:1: sops: Error decrypting tree", fix="x")
    also_bad = ConfigError(f"cannot decrypt {LAST_FILE}:1: sops: Error decrypting tree", fix="x")
    plain = {SECRETS_FILE: PLAIN, OTHER_FILE: other_plain("web-secret"), LAST_FILE: other_plain("zz-secret")}
    for _ in range(5):  # the two failing files are decrypted side by side: whichever finishes first
        fake = FakeSops(plain, fail={OTHER_FILE: bad, LAST_FILE: also_bad})
        with pytest.raises(ConfigError) as err:
            encrypted.decrypted(config(tmp_path), TOOLS, desired_state(tmp_path / "repo"), decrypt=fake)
        # the first file's error, as an UndecryptableError naming its object (a drill's failure)
        assert isinstance(err.value, encrypted.UndecryptableError)
        assert (err.value.message, err.value.fix) == (bad.message, bad.fix)
        assert (err.value.ref, err.value.source) == ("Secret/shop/web-secret", f"{OTHER_FILE}:1")
        # the first file alone, then the others (one not started yet when the error came is cancelled)
        assert fake.calls[0]["path"] == SECRETS_FILE and OTHER_FILE in [c["path"] for c in fake.calls[1:]]
        ok = encrypted.decrypted(config(tmp_path), TOOLS, desired_state(tmp_path / "repo"), decrypt=FakeSops(plain))
        assert ok[ObjectRef("", "Secret", "shop", "zz-secret")].body["stringData"] == {"x": "other-value"}


def test_decrypted_output_that_is_not_yaml_is_reported_without_its_text(tmp_path: Path) -> None:
    write_repo(tmp_path / "repo")
    fake = FakeSops({SECRETS_FILE: f"password: [{PASSWORD}\n"})
    with pytest.raises(ConfigError) as err:
        encrypted.decrypted(config(tmp_path), TOOLS, desired_state(tmp_path / "repo"), decrypt=fake)
    assert err.value.message.startswith(f"cannot read the decrypted {SECRETS_FILE}:1: sops's output is not YAML (line")
    assert PASSWORD not in str(err.value) and err.value.__cause__ is None


def test_decrypt_argv_ignores_the_mac_only_when_asked() -> None:
    plain = sops.decrypt_argv(Path("/t/sops"), "apps/s.yaml")
    assert "--ignore-mac" not in plain
    assert sops.decrypt_argv(Path("/t/sops"), "apps/s.yaml", ignore_mac=True) == [
        "/t/sops", "--config", "/dev/null", "--decrypt", "--ignore-mac",
        "--input-type", "yaml", "--output-type", "yaml", "--filename-override=apps/s.yaml", "/dev/stdin",
    ]  # fmt: skip


# --------------------------------------------------------------------------- one verify pass, the API faked


class FakeKube:
    """The verbs verify uses, over a list of live objects; a strict dry-run apply of a document
    carrying `sops` is refused the way the API server refuses an unknown field."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.applied: list[dict[str, Any]] = []

    def discovery(self, refresh: bool = False) -> dict[Any, Any]:
        return {}

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(json.dumps(o)) for o in self.objects if (o["apiVersion"], o["kind"]) == (api_version, kind)]

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        return None

    def apply(self, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.applied.append(body)
        if "sops" in body:
            raise KubeError('Secret in version "v1" cannot be handled: strict decoding error: unknown field "sops"', status=400)
        return body


def live_secret(name: str, data: dict[str, str], *, patched_by: str = "") -> dict[str, Any]:
    managed = [
        {
            "manager": "kustomize-controller",
            "operation": "Apply",
            "apiVersion": "v1",
            "time": "2026-12-01T10:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {f"f:{k}": {} for k in data}, "f:type": {}},
        }
    ]
    if patched_by:
        managed.append(
            {
                "manager": patched_by,
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-12-01T10:42:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:password": {}}},
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "shop", "managedFields": managed},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def test_verify_compares_the_decrypted_values_and_reports_a_change_redacted(tmp_path: Path) -> None:
    write_repo(tmp_path / "repo")
    state = desired_state(tmp_path / "repo")
    views = encrypted.decrypted(config(tmp_path), TOOLS, state, decrypt=FakeSops({SECRETS_FILE: PLAIN}))
    secrets = [o for o in state.objects if o.ref.kind == "Secret"]
    spec = VerifySpec(timeout=0)
    as_applied = [
        live_secret("db", {"password": PASSWORD, "token": TOKEN}),
        live_secret("api", {"key": f"api-{PASSWORD}"}),
    ]

    report = check(FakeKube(as_applied), secrets, spec, decrypted=views)  # type: ignore[arg-type]
    assert report.converged, [p for v in report.failing for p in v.problems()]
    assert report.summary()["verified"] == 2
    assert all(v.desired is o for v, o in zip(report.verdicts, secrets, strict=True))  # verdicts keep the ciphertext

    # without the decrypted values the ciphertext and its metadata would be what git "declares"
    blind = check(FakeKube(as_applied), secrets, spec)  # type: ignore[arg-type]
    assert not blind.converged

    patched = [live_secret("db", {"password": PATCHED, "token": TOKEN}, patched_by="kubectl-patch"), as_applied[1]]
    report = check(FakeKube(patched), secrets, spec, decrypted=views)  # type: ignore[arg-type]
    assert not report.converged
    (line,) = report.failing[0].problems()
    assert line.startswith(
        f"Secret/shop/db: field stringData.password is {encrypted_digest(PATCHED)} live, "
        f"{encrypted_digest(PASSWORD)} in git ({SECRETS_FILE}:7); changed by kubectl-patch"
    ), line
    out = json.dumps(report.to_dict()) + line
    for value in (PASSWORD, PATCHED, TOKEN, base64.b64encode(PATCHED.encode()).decode()):
        assert value not in out


def encrypted_digest(value: str) -> str:
    from rebuild.recover.verify import redact

    return redact(value)


def test_a_key_missing_live_is_not_probed_as_an_unknown_field(tmp_path: Path) -> None:
    """A desired field missing live makes verify ask the API server (strict dry run) whether a
    schema knows it; the git text of an encrypted Secret carries `sops`, which none does."""
    write_repo(tmp_path / "repo")
    state = desired_state(tmp_path / "repo")
    views = encrypted.decrypted(config(tmp_path), TOOLS, state, decrypt=FakeSops({SECRETS_FILE: PLAIN}))
    secrets = [o for o in state.objects if o.ref.kind == "Secret"]
    kube = FakeKube([live_secret("db", {"password": PASSWORD}), live_secret("api", {"key": f"api-{PASSWORD}"})])
    report = wait_converged(kube, secrets, VerifySpec(), timeout=0.5, interval=0.05, decrypted=views)  # type: ignore[arg-type]
    assert report.attempts > 1 and not report.converged
    assert report.failing[0].problems() == [
        f"Secret/shop/db: field data.token is missing live, {encrypted_digest(TOKEN)} in git ({SECRETS_FILE}:9)"
    ]
    assert kube.applied == []


# --------------------------------------------------------------------------- where the check runs


class Untouchable:
    """A Pulumi workspace or a cluster client that must not be used: any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"{name} was used: something ran after the SOPS check failed")


def test_up_plan_and_verify_stop_before_any_stack_or_cluster_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rebuild.core.model import Phases
    from rebuild.drills import usecases
    from rebuild.recover import context, plan, up
    from rebuild.recover.context import Context

    write_repo(tmp_path / "repo")
    state = desired_state(tmp_path / "repo")
    monkeypatch.setattr(up, "load_desired", lambda ctx, revisions=None: state)
    monkeypatch.setattr(plan, "load_desired", lambda ctx, revisions=None: state)
    monkeypatch.setattr("rebuild.recover.sources.load_desired", lambda ctx, revisions=None: state)

    def no_cluster(ctx: Any) -> Any:
        raise AssertionError("verify asked the cluster before the SOPS check")

    monkeypatch.setattr(context, "live_kube", no_cluster)
    ctx = Context(config(tmp_path, key=""), tmp_path / "state")
    expected = f"{SECRETS_FILE}:1: Secret/shop/db is encrypted with SOPS"

    result = up.UpResult(Phases())
    with pytest.raises(ConfigError) as err:
        up.up(ctx, pulumi=Untouchable(), kube=Untouchable(), into=result)  # type: ignore[arg-type]
    assert err.value.message.startswith(expected)
    assert [(p.name, p.status) for p in result.phases.items] == [("desired", "failed")]
    assert result.desired is state and result.report is None

    with pytest.raises(ConfigError) as err:
        plan.plan(ctx, pulumi=Untouchable())  # type: ignore[arg-type]
    assert err.value.message.startswith(expected)

    with pytest.raises(ConfigError) as err:
        usecases.verify(ctx, {}, timeout=0)
    assert err.value.message.startswith(expected)
