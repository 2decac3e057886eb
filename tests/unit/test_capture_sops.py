"""capture of Secrets declared in SOPS-encrypted files (issue 13 item 6), sops faked.

- drift is computed against the decrypted values (in memory), so only the key whose live value
  really differs is a finding (against the ENC[...] text every key looked changed);
- with a ``.sops.yaml`` rule naming age recipients only, the backport decrypts the whole file,
  sets the live value in the field the file uses (stringData as text, data as base64), encrypts
  it again for the rule and replaces the file's text: one file edit, ciphertext only;
- without a rule, or with a rule naming PGP/KMS keys or several key groups: listed as before
  (the key named, an encrypted value asked for), with the reason, and nothing edited;
- the new value (raw or base64) is in no text the backport, the report or the diff produce.

The real sops, age, cluster and Flux run in tests/integration/test_capture_sops.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import sops
from rebuild.capture.backport import Backport, SopsSecrets, plan_backport
from rebuild.capture.backport.sops import NotWritable, SecretChange, dump, set_values, why_not_writable
from rebuild.capture.drift import DriftReport, find_drift
from rebuild.capture.run import compared_objects, secret_values
from rebuild.core.config import CaptureSpec
from rebuild.core.model import ObjectRef
from rebuild.recover import encrypted
from rebuild.recover.verify import redact
from rebuild.toolchain.registry import ToolPaths
from tests.unit.test_drift import entry
from tests.unit.test_sops_verify import (
    ENCRYPTED,
    PASSWORD,
    PATCHED,
    PLAIN,
    RECIPIENT,
    SECRETS_FILE,
    TOKEN,
    TOOLS,
    FakeSops,
    config,
    desired_state,
    enc,
    write_repo,
)

DB = ObjectRef("", "Secret", "shop", "db")
API = ObjectRef("", "Secret", "shop", "api")
NEW_TOKEN = "tok-rotated-0c9e61"
SOPS_YAML = f"creation_rules:\n  - path_regex: apps/.*\\.yaml$\n    encrypted_regex: ^(data|stringData)$\n    age: {RECIPIENT}\n"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def needles(value: str) -> list[str]:
    """The value and its base64 (as a Secret's data holds it)."""
    return [value, b64(value)]


class FakeEncrypt:
    """sops.encrypt: records each plaintext (in memory) and returns a SOPS document per document,
    every data/stringData value replaced by an ENC[...] text."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[Any], sops.Rule, str]] = []

    def __call__(self, plaintext: bytes, rule: sops.Rule, path_in_repo: str, *, toolchain: ToolPaths) -> bytes:
        docs = list(yaml.safe_load_all(plaintext))
        self.calls.append((docs, rule, path_in_repo))
        out = []
        for n, d in enumerate(docs):
            d = dict(d)
            for field in ("data", "stringData"):
                if isinstance(d.get(field), dict):
                    d[field] = {k: enc(100 + n * 10 + i) for i, k in enumerate(d[field])}
            d["sops"] = {"age": [{"recipient": r} for r in rule.age], "lastmodified": "2026-12-02T03:00:00Z", "mac": enc(99)}
            out.append(d)
        return yaml.safe_dump_all(out, sort_keys=False).encode()


def live_secret(name: str, data: Mapping[str, str], *, patched: tuple[str, ...] = ()) -> dict[str, Any]:
    """A live Secret as kustomize-controller applied it; ``patched`` keys then changed by kubectl-patch."""
    applied = [("data", k) for k in data if k not in patched]
    managed = [entry("kustomize-controller", "2026-12-02T01:00:00Z", *applied)] if applied else []
    if patched:
        managed.append(entry("kubectl-patch", "2026-12-02T02:00:00Z", *[("data", k) for k in patched]))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "shop", "managedFields": managed},
        "type": "Opaque",
        "data": dict(data),
    }


def scenario(tmp_path: Path, *, sops_yaml: str | None = SOPS_YAML) -> dict[str, Any]:
    """The repo of test_sops_verify (two Secrets in one encrypted file); db's password and token
    changed live by kubectl-patch; api unchanged."""
    root = tmp_path / "repo"
    write_repo(root)
    if sops_yaml is not None:
        (root / ".sops.yaml").write_text(sops_yaml)
    state = desired_state(root)
    fake = FakeSops({SECRETS_FILE: PLAIN})
    plain = encrypted.decrypted(config(tmp_path), TOOLS, state, decrypt=fake)
    live = [
        live_secret("db", {"password": b64(PATCHED), "token": b64(NEW_TOKEN)}, patched=("password", "token")),
        live_secret("api", {"key": b64(f"api-{PASSWORD}")}),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "settings",
                "namespace": "shop",
                "managedFields": [entry("kustomize-controller", "t", ("data", "a"))],
            },
            "data": {"a": "b"},
        },
    ]
    report = find_drift(compared_objects(state.objects, plain), live, spec=CaptureSpec(), managed_namespaces=["shop"])
    return {"root": root, "state": state, "plain": plain, "live": live, "report": report, "decrypt": fake}


def plan(s: dict[str, Any], encrypt: FakeEncrypt, key: Path | None = Path("/keys/age.agekey")) -> tuple[Backport, dict[str, str]]:
    files = {SECRETS_FILE: ENCRYPTED, "apps/kustomization.yaml": (s["root"] / "apps/kustomization.yaml").read_text()}
    writer = SopsSecrets(s["root"], key, TOOLS, secret_values(s["report"], s["live"]), decrypt=s["decrypt"], encrypt=encrypt)
    bp = plan_backport(
        s["report"], {o.ref: o for o in s["state"].objects}, files, new_objects_dir="apps/captured",
        include_deletions=False, sops_secrets=writer,
    )  # fmt: skip
    return bp, files


def texts(bp: Backport, report: DriftReport, files: Mapping[str, str]) -> str:
    return "\n".join(
        [bp.title, bp.body, bp.commit_message, *bp.listed, bp.diff(files), json.dumps(report.to_dict()), *bp.edits.values()]
    )


# --------------------------------------------------------------------------- drift


def test_drift_is_computed_against_the_decrypted_values_only_the_changed_keys_are_findings(tmp_path: Path) -> None:
    s = scenario(tmp_path)
    report: DriftReport = s["report"]
    got = sorted((str(f.ref), f.rendered, f.kind, f.manager) for f in report.findings)
    assert got == [
        ("Secret/shop/db", "data.token", "changed", "kubectl-patch"),
        ("Secret/shop/db", "stringData.password", "changed", "kubectl-patch"),
    ]
    by_path = {f.rendered: f for f in report.findings}
    assert (by_path["stringData.password"].git, by_path["stringData.password"].live) == (redact(PASSWORD), redact(PATCHED))
    assert by_path["data.token"].live == redact(NEW_TOKEN)
    assert by_path["stringData.password"].source is not None and by_path["stringData.password"].source.file == SECRETS_FILE

    # against the ciphertext (what capture compared before), every value looked changed, and sops too
    before = find_drift(s["state"].objects, s["live"], spec=CaptureSpec(), managed_namespaces=["shop"])
    assert len([f for f in before.findings if f.ref in (DB, API)]) > len(report.findings)
    # the desired state keeps the ciphertext; only the comparison saw the values
    db = {o.ref: o for o in s["state"].objects}[DB]
    assert db.body["stringData"]["password"] == enc(1) and "sops" in db.body


# --------------------------------------------------------------------------- backport with a rule


def test_a_value_changed_live_is_written_encrypted_for_the_rule_and_nowhere_in_clear(tmp_path: Path) -> None:
    s = scenario(tmp_path)
    encrypt = FakeEncrypt()
    bp, files = plan(s, encrypt)

    # one decrypt of the file (the comparison's, plus the backport's), one encrypt, for the rule
    assert [c["path"] for c in s["decrypt"].calls] == [SECRETS_FILE, SECRETS_FILE]
    assert s["decrypt"].calls[-1]["ignore_mac"] is True and s["decrypt"].calls[-1]["key"] == Path("/keys/age.agekey")
    ((docs, rule, path),) = encrypt.calls
    assert path == SECRETS_FILE and rule.age == (RECIPIENT,) and rule.source == ".sops.yaml:2"
    assert rule.encrypted_regex == "^(data|stringData)$"
    # the whole file: both documents, the live values in the fields the file uses, the rest as git has it
    assert docs == [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db"},
            "type": "Opaque",
            "stringData": {"password": PATCHED},
            "data": {"token": b64(NEW_TOKEN)},
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api"}, "stringData": {"key": f"api-{PASSWORD}"}},
    ]
    # the backport is one file edit: the file replaced by the new ciphertext
    assert list(bp.edits) == [SECRETS_FILE] and not bp.new_files
    new = list(yaml.safe_load_all(bp.edits[SECRETS_FILE]))
    assert [d["metadata"]["name"] for d in new] == ["db", "api"] and all(sops.is_sops_document(d) for d in new)
    assert new[0]["stringData"]["password"].startswith("ENC[") and new[0]["data"]["token"].startswith("ENC[")
    # the PR says it was written encrypted, where, for which rule; nothing is left to a person
    assert not any("Secret/shop/db" in ln for ln in bp.listed), bp.listed
    assert "### Secrets written encrypted with SOPS" in bp.body
    assert (
        f"- Secret/shop/db: the live value of keys password, token (changed by kubectl-patch (Update)) is written to "
        f"{SECRETS_FILE} encrypted with sops for the .sops.yaml:2 rule ({RECIPIENT})"
    ) in bp.body
    lines = bp.edits[SECRETS_FILE].splitlines()
    password_line = next(i for i, ln in enumerate(lines, 1) if ln.strip().startswith("password:"))
    assert "| Secret/shop/db | `stringData.password` | secret value differs (not shown) | kubectl-patch (Update) |" in bp.body
    assert f"`{SECRETS_FILE}:{password_line}`" in bp.body
    assert "- Secret/shop/db stringData.password: new value encrypted with sops (by kubectl-patch" in bp.commit_message
    assert "2 fields edited in 1 file" in bp.body
    # no plaintext in any text produced (the unchanged values either)
    out = texts(bp, s["report"], files)
    for value in (PATCHED, NEW_TOKEN, PASSWORD, TOKEN, f"api-{PASSWORD}"):
        for n in needles(value):
            assert n not in out, value


def test_a_key_added_or_removed_live_and_a_data_file_keep_the_files_fields() -> None:
    docs: list[Any] = [
        {"kind": "Secret", "metadata": {"name": "a"}, "stringData": {"x": "1", "gone": "2"}},
        {"kind": "List", "items": [{"kind": "Secret", "metadata": {"name": "b"}, "data": {"y": b64("3")}}]},
    ]
    a, b = ObjectRef("", "Secret", "ns", "a"), ObjectRef("", "Secret", "ns", "b")
    live = {a: {"data": {"x": b64("one"), "new": b64("added")}}, b: {"data": {"y": b64("three"), "z": b64("zed")}}}
    set_values(
        docs,
        [
            SecretChange(a, 0, (), ("stringData", "x")),
            SecretChange(a, 0, (), ("stringData", "gone")),  # missing live: removed
            SecretChange(a, 0, (), ("data", "new"), added=True),  # the document keeps stringData only: text there
            SecretChange(b, 1, ("items", 0), ("data", "y")),
            SecretChange(b, 1, ("items", 0), ("data", "z"), added=True),
        ],
        live,
    )
    assert docs[0]["stringData"] == {"x": "one", "new": "added"}
    assert docs[1]["items"][0]["data"] == {"y": b64("three"), "z": b64("zed")}
    assert list(yaml.safe_load_all(dump(docs))) == docs


def test_what_cannot_be_set_says_why_without_the_value() -> None:
    a = ObjectRef("", "Secret", "ns", "a")
    docs: list[Any] = [{"kind": "Secret", "metadata": {"name": "a"}, "stringData": {"x": "1"}}]
    binary = base64.b64encode(b"\xff\xfe-secret-bytes").decode()
    with pytest.raises(NotWritable) as err:
        set_values(docs, [SecretChange(a, 0, (), ("stringData", "x"))], {a: {"data": {"x": binary}}})
    assert "not UTF-8 text" in str(err.value) and binary not in str(err.value)
    with pytest.raises(NotWritable, match="does not hold the Secret's document"):
        set_values(docs, [SecretChange(a, 3, (), ("stringData", "x"))], {a: {"data": {"x": b64("v")}}})
    with pytest.raises(NotWritable, match="was not read"):
        set_values(docs, [SecretChange(a, 0, (), ("stringData", "x"))], {})
    assert docs[0]["stringData"] == {"x": "1"}


# --------------------------------------------------------------------------- no rule, or a rule rebuild cannot write for


def test_which_rules_rebuild_encrypts_for() -> None:
    assert why_not_writable(sops.Rule(".sops.yaml:2", "", age=(RECIPIENT,)), "a.yaml") is None
    assert why_not_writable(None, "a.yaml") == "no .sops.yaml creation rule matches a.yaml"
    assert "names pgp keys" in str(why_not_writable(sops.Rule(".sops.yaml:2", "", age=(RECIPIENT,), other_keys=("pgp",)), "a"))
    assert "2 key groups" in str(why_not_writable(sops.Rule(".sops.yaml:2", "", age=(RECIPIENT,), key_groups=2), "a"))
    assert "no age recipients" in str(why_not_writable(sops.Rule(".sops.yaml:2", ""), "a"))


@pytest.mark.parametrize(
    ("sops_yaml", "why"),
    [
        (None, f"no .sops.yaml creation rule matches {SECRETS_FILE}"),
        (
            "creation_rules:\n  - path_regex: other/.*\n    age: " + RECIPIENT + "\n",
            f"no .sops.yaml creation rule matches {SECRETS_FILE}",
        ),
        (
            "creation_rules:\n  - path_regex: apps/\n    age: "
            + RECIPIENT
            + "\n    pgp: FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4\n",
            "the .sops.yaml rule for it (.sops.yaml:2) names pgp keys; rebuild encrypts for age recipients only",
        ),
    ],
)
def test_without_an_age_rule_the_secret_is_listed_as_before_and_nothing_is_edited(
    tmp_path: Path, sops_yaml: str | None, why: str
) -> None:
    s = scenario(tmp_path, sops_yaml=sops_yaml)
    encrypt = FakeEncrypt()
    bp, files = plan(s, encrypt)
    assert encrypt.calls == [] and bp.edits == {} and bp.empty
    assert len(s["decrypt"].calls) == 1  # the comparison's only
    (line,) = [ln for ln in bp.listed if ln.startswith("Secret/shop/db")]
    assert line == (
        "Secret/shop/db: the value of keys password, token differs live (changed by kubectl-patch (Update)); values are not "
        f"copied: encrypt the live value with SOPS and update {SECRETS_FILE} (not written encrypted: {why})"
    )
    assert "### Secrets written encrypted with SOPS" not in bp.body
    out = texts(bp, s["report"], files)
    for value in (PATCHED, NEW_TOKEN):
        for n in needles(value):
            assert n not in out


def test_a_plain_secret_in_git_is_listed_exactly_as_before(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "apps").mkdir(parents=True)
    (root / ".sops.yaml").write_text(SOPS_YAML)
    (root / "apps" / "kustomization.yaml").write_text("namespace: shop\nresources:\n  - db.yaml\n")
    (root / "apps" / "db.yaml").write_text("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: old\n")
    state = desired_state(root)
    live = [live_secret("db", {"password": b64(PATCHED)}, patched=("password",))]
    report = find_drift(state.objects, live, spec=CaptureSpec(), managed_namespaces=["shop"])
    encrypt = FakeEncrypt()
    writer = SopsSecrets(root, Path("/k"), TOOLS, secret_values(report, live), decrypt=FakeSops({}), encrypt=encrypt)
    files = {"apps/db.yaml": (root / "apps" / "db.yaml").read_text()}
    bp = plan_backport(
        report, {o.ref: o for o in state.objects}, files, new_objects_dir="c", include_deletions=False, sops_secrets=writer
    )
    assert encrypt.calls == [] and bp.edits == {}
    assert bp.listed == [
        "Secret/shop/db: the value of key password differs live (changed by kubectl-patch (Update)); values are not copied: "
        "encrypt the live value with SOPS and update apps/db.yaml"
    ]


def test_a_sops_failure_lists_the_secret_with_sopss_message(tmp_path: Path) -> None:
    from rebuild.core.errors import ConfigError

    s = scenario(tmp_path)

    def failing(plaintext: bytes, rule: sops.Rule, path_in_repo: str, *, toolchain: ToolPaths) -> bytes:
        raise ConfigError(f"cannot encrypt {path_in_repo} for the .sops.yaml rule at {rule.source}: sops: boom", fix="x")

    files = {SECRETS_FILE: ENCRYPTED}
    writer = SopsSecrets(
        s["root"], Path("/k"), TOOLS, secret_values(s["report"], s["live"]), decrypt=s["decrypt"], encrypt=failing
    )
    bp = plan_backport(
        s["report"],
        {o.ref: o for o in s["state"].objects},
        files,
        new_objects_dir="c",
        include_deletions=False,
        sops_secrets=writer,
    )
    assert bp.edits == {}
    (line,) = [ln for ln in bp.listed if ln.startswith("Secret/shop/db")]
    assert line.endswith(
        f"(not written encrypted: cannot encrypt {SECRETS_FILE} for the .sops.yaml rule at .sops.yaml:2: sops: boom)"
    )
    assert TOKEN  # the module's plaintexts never reach a file: FakeSops returns them from memory
