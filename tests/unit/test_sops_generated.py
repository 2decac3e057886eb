"""Secrets a secretGenerator makes from SOPS-encrypted files (issue 13): kustomize's hash suffix and
env parsing re-done in memory, and verify comparing what kustomize-controller applies.

The hash is checked against kustomize's own test vectors (api/hasher/hasher_test.go) and a name
kustomize v5.5 (kubectl kustomize) gave; the repository is rendered by the real kustomize; sops is
faked (the real one runs in tests/integration/test_sops_generated.py).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from rebuild.core.config import VerifySpec
from rebuild.core.errors import ConfigError
from rebuild.core.model import ObjectRef
from rebuild.desired import generated
from rebuild.recover import encrypted
from rebuild.recover.converge import check
from rebuild.toolchain.registry import ToolPaths
from tests.unit.test_sops_verify import TOOLS, FakeKube, config, desired_state, live_secret

# Never in a file: the fake sops returns it from memory.
PASSWORD = "pw-gen-5c1e77"
ENV_FILE = "apps/app.sops.env"
CERT_FILE = "apps/tls.crt.sops"  # files: key tls.crt (binary format: sops's JSON envelope)
ENCRYPTED_ENV = (
    "DB_PASSWORD=ENC[AES256_GCM,data:cHc=,iv:aXY=,tag:dGFn,type:str]\n"
    "DB_USER=ENC[AES256_GCM,data:dXNy,iv:aXY=,tag:dGFn,type:str]\n"
    "sops_age__list_0__map_recipient=age1vcng8mjn0e2dnkn654hx6fnuzzsxkcvqnp4j07f9wjrp2vuts9nq3k6cxh\n"
    "sops_age__list_0__map_enc=-----BEGIN AGE ENCRYPTED FILE-----\\nYWdl\\n-----END AGE ENCRYPTED FILE-----\\n\n"
    "sops_lastmodified=2026-12-01T10:00:00Z\n"
    "sops_mac=ENC[AES256_GCM,data:bWFj,iv:aXY=,tag:dGFn,type:str]\n"
    "sops_version=3.13.3\n"
)
PLAIN_ENV = f"DB_PASSWORD={PASSWORD}\nDB_USER=shop\n"
ENCRYPTED_CERT = (  # sops's binary store: a JSON envelope
    '{\n\t"data": "ENC[AES256_GCM,data:Y2VydA==,iv:aXY=,tag:dGFn,type:str]",\n\t"sops": {\n'
    '\t\t"mac": "ENC[AES256_GCM,data:bWFj,iv:aXY=,tag:dGFn,type:str]",\n\t\t"lastmodified": "2026-12-01T10:00:00Z"\n\t}\n}\n'
)
PLAIN_CERT = b"-----BEGIN CERTIFICATE-----\nunit\n-----END CERTIFICATE-----\n"


def b64(s: str | bytes) -> str:
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


# --------------------------------------------------------------------------- pure: kustomize's facts


@pytest.mark.parametrize(
    ("body", "expected"),
    [  # kustomize's api/hasher/hasher_test.go TestSecretHash
        ({"type": "my-type"}, "5gmgkf8578"),
        ({"type": "my-type", "data": {"one": ""}}, "74bd68bm66"),
        ({"type": "my-type", "data": {"one": ""}, "stringData": {"two": 2}}, "c4h4264gdb"),
    ],
)
def test_secret_hash_matches_kustomizes_test_vectors(body: dict[str, Any], expected: str) -> None:
    assert generated.secret_hash(body) == expected


def test_the_rendered_name_tells_which_name_kustomize_hashed() -> None:
    # `kubectl kustomize` (kustomize v5.5.0) of `secretGenerator: [{name: app, literals: [A=1]}]`
    rendered = {"kind": "Secret", "type": "Opaque", "metadata": {"name": "app-526mcbf5c2"}, "data": {"A": "MQ=="}}
    assert generated.hashed_with(rendered) == ""  # kustomize's lookup of "metadata/name" finds nothing
    assert generated.hashed_with({**rendered, "data": {"A": "Mg=="}}) is None  # a suffix, not this body's hash
    assert generated.hashed_with({**rendered, "metadata": {"name": "app"}}) is None  # disableNameSuffixHash
    named = {**rendered, "metadata": {"name": f"app-{generated.secret_hash(rendered, 'app')}"}}
    assert generated.hashed_with(named) == "app"  # the other reading, should a kustomize hash the name


def test_values_are_encoded_and_hashed_as_kustomize_writes_them() -> None:
    # `kubectl kustomize` (kustomize v5.5.0) of a generator over these plaintext files named the
    # Secret app-m6t657bhkt (and kustomize-controller, decrypting the same files encrypted, too)
    cert = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
    assert generated.kustomize_b64(cert) == (
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmFiYwotLS0tLUVORCBDRVJUSUZJQ0FURS\n0tLS0tCg==\n"
    )
    assert generated.kustomize_b64(b"prod") == "cHJvZA=="  # under 70 characters: one line, no newline
    assert generated.kustomize_b64(b"x" * 51) == base64.b64encode(b"x" * 51).decode()  # 68 characters: one line
    seventy_two = base64.b64encode(b"x" * 52).decode()
    assert generated.kustomize_b64(b"x" * 52) == f"{seventy_two[:70]}\n{seventy_two[70:]}\n"
    plain = {"DB_PASSWORD": b"pw-x", "API_TOKEN": b"tok-y", "MODE": b"prod", "tls.crt": cert}
    data = {k: generated.kustomize_b64(v) for k, v in plain.items()}
    assert generated.secret_hash({"type": "Opaque", "data": data}) == "m6t657bhkt"


def test_dotenv_is_read_as_kustomize_reads_it() -> None:
    text = b"\xef\xbb\xbfA=1\n  # a comment\n\n  B = x=y \r\nC=\nD=with\\nescaped newline\n"
    assert generated.dotenv_pairs(text) == [("A", "1"), ("B ", " x=y "), ("C", ""), ("D", "with\\nescaped newline")]


def test_formats_by_name_as_kustomize_controller_picks_them() -> None:
    assert [
        generated.store_for_path(p) for p in ("a.env", "b.yaml", "c.YML", "d.json", "e.ini", "tls.crt", ".dockerconfigjson")
    ] == ["dotenv", "yaml", "yaml", "json", "ini", "binary", "json"]
    assert generated.is_sops_file(ENCRYPTED_ENV.encode(), "dotenv")
    assert not generated.is_sops_file(PLAIN_ENV.encode(), "dotenv")
    assert generated.is_sops_file(ENCRYPTED_CERT.encode(), "binary")


def test_rebuilt_data_drops_the_encrypted_keys_and_sops_metadata() -> None:
    rendered = {k: b64(v) for k, v in generated.dotenv_pairs(ENCRYPTED_ENV.encode())} | {"LITERAL": b64("kept")}
    assert "sops_mac" in rendered
    data = generated.rebuilt_data(rendered, [(ENCRYPTED_ENV.encode(), PLAIN_ENV.encode())], [("tls.crt", PLAIN_CERT)])
    kust = generated.kustomize_b64(PLAIN_CERT)
    assert kust.count("\n") == 2  # 84 base64 characters: two lines
    assert data == {"DB_PASSWORD": b64(PASSWORD), "DB_USER": b64("shop"), "LITERAL": b64("kept"), "tls.crt": kust}


def test_renamed_replaces_references_but_not_the_objects_own_metadata() -> None:
    body = {
        "metadata": {"name": "app-old", "annotations": {"x": "app-old"}},
        "spec": {"volumes": [{"secret": {"secretName": "app-old"}}], "other": "app-old-not"},
    }
    out = generated.renamed(body, "app-old", "app-new")
    assert out["metadata"] == body["metadata"]
    assert out["spec"] == {"volumes": [{"secret": {"secretName": "app-new"}}], "other": "app-old-not"}


# --------------------------------------------------------------------------- decrypted views, sops faked


class FakeDotenvSops:
    """sops.decrypt for a generator's files: the plaintext per path, in the format asked; records calls."""

    def __init__(self, plain: dict[str, bytes], fail: ConfigError | None = None) -> None:
        self.plain, self.fail = plain, fail
        self.calls: list[tuple[str, str, str]] = []

    def __call__(
        self,
        path_in_repo: str,
        encrypted: bytes,
        age_key_file: Path,
        *,
        toolchain: ToolPaths,
        source: str = "",
        ignore_mac: bool = False,
        store: str = "",
    ) -> bytes:
        assert ignore_mac and generated.is_sops_file(encrypted, store)
        self.calls.append((path_in_repo, source, store))
        if self.fail is not None:
            raise self.fail
        return self.plain[path_in_repo]


def write_generator_repo(root: Path, *, hashed: bool = True) -> None:
    (root / "apps").mkdir(parents=True)
    (root / ENV_FILE).write_text(ENCRYPTED_ENV)
    (root / CERT_FILE).write_text(ENCRYPTED_CERT)
    (root / "apps" / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    matchLabels: {app: web}\n"
        "  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n"
        "          image: nginx:1.27\n          envFrom:\n            - secretRef:\n                name: app\n"
    )
    options = "" if hashed else "generatorOptions:\n  disableNameSuffixHash: true\n"
    (root / "apps" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: shop\nresources:\n"
        "  - deployment.yaml\nsecretGenerator:\n  - name: app\n    envs:\n      - app.sops.env\n    files:\n"
        "      - tls.crt=tls.crt.sops\n    literals:\n      - MODE=prod\n" + options
    )


def rendered_secret(state: Any) -> Any:
    (secret,) = [o for o in state.objects if o.ref.kind == "Secret"]
    return secret


def test_a_generated_secret_is_compared_decrypted_under_the_name_kustomize_controller_gives_it(tmp_path: Path) -> None:
    write_generator_repo(tmp_path / "repo")
    state = desired_state(tmp_path / "repo")
    secret = rendered_secret(state)
    assert "sops_mac" in secret.body["data"] and generated.hashed_with(secret.body) == ""
    fake = FakeDotenvSops({ENV_FILE: PLAIN_ENV.encode(), CERT_FILE: PLAIN_CERT})

    views = encrypted.decrypted(config(tmp_path), TOOLS, state, decrypt=fake)
    assert sorted(fake.calls) == [(ENV_FILE, f"{ENV_FILE}:1", "dotenv"), (CERT_FILE, f"{CERT_FILE}:1", "binary")]
    expected_data = {"DB_PASSWORD": b64(PASSWORD), "DB_USER": b64("shop"), "MODE": b64("prod"), "tls.crt": b64(PLAIN_CERT)}
    as_built = {**expected_data, "tls.crt": generated.kustomize_b64(PLAIN_CERT)}  # what kustomize hashes
    name = f"app-{generated.secret_hash({'type': 'Opaque', 'data': as_built})}"
    view = views[secret.ref]
    assert view.ref == ObjectRef("", "Secret", "shop", name) and view.body["metadata"]["name"] == name
    assert view.body["data"] == expected_data
    # the desired state keeps the ciphertext
    assert base64.b64decode(secret.body["data"]["DB_PASSWORD"]).startswith(b"ENC[AES256_GCM,")
    # the Deployment that names it is compared with the name the cluster has
    web = views[ObjectRef("apps", "Deployment", "shop", "web")]
    assert web.body["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": name}}]
    assert encrypted.check(config(tmp_path), TOOLS, state, decrypt=fake) == 1

    # one verify pass: the live Secret (what Flux applied) under its own name verifies; a patched value is drift
    spec = VerifySpec(timeout=0)
    objs = [secret]
    as_applied = live_secret(name, {"DB_PASSWORD": PASSWORD, "DB_USER": "shop", "MODE": "prod"})
    as_applied["data"]["tls.crt"] = b64(PLAIN_CERT)
    report = check(FakeKube([as_applied]), objs, spec, decrypted=views)  # type: ignore[arg-type]
    assert report.converged, [p for v in report.failing for p in v.problems()]
    as_applied["data"]["DB_PASSWORD"] = b64("changed-by-hand")
    report = check(FakeKube([as_applied]), objs, spec, decrypted=views)  # type: ignore[arg-type]
    (line,) = report.failing[0].problems()
    assert "field data.DB_PASSWORD is " in line and PASSWORD not in line and "changed-by-hand" not in line
    assert f"({ENV_FILE}:1)" in line, line


def test_without_a_hash_suffix_the_name_stays(tmp_path: Path) -> None:
    write_generator_repo(tmp_path / "repo", hashed=False)
    state = desired_state(tmp_path / "repo")
    secret = rendered_secret(state)
    assert secret.ref.name == "app"
    views = encrypted.decrypted(
        config(tmp_path), TOOLS, state, decrypt=FakeDotenvSops({ENV_FILE: PLAIN_ENV.encode(), CERT_FILE: PLAIN_CERT})
    )
    assert set(views) == {secret.ref} and views[secret.ref].ref == secret.ref
    assert views[secret.ref].body["data"]["DB_PASSWORD"] == b64(PASSWORD)


def test_a_generator_file_that_does_not_decrypt_names_it_and_the_key(tmp_path: Path) -> None:
    write_generator_repo(tmp_path / "repo")
    state = desired_state(tmp_path / "repo")
    key = (tmp_path / "keys" / "age.agekey").resolve()
    wrong = ConfigError(f"cannot decrypt {ENV_FILE}:1: the age key in {key} is not a recipient of {ENV_FILE}:1", fix="f")
    with pytest.raises(encrypted.UndecryptableError) as err:
        encrypted.decrypted(config(tmp_path), TOOLS, state, decrypt=FakeDotenvSops({}, fail=wrong))
    e = err.value
    assert e.source == f"{ENV_FILE}:1" and e.key_file == key and e.ref.startswith("Secret/shop/app-")
    assert e.message.startswith(wrong.message) and "(read by the secretGenerator at apps/kustomization.yaml:" in e.message
    assert e.fix == f"f; it is set at {tmp_path / 'rebuild.yaml'}"

    # no key configured: named before any sops run
    with pytest.raises(encrypted.UndecryptableError) as err:
        encrypted.decrypted(config(tmp_path, key=""), TOOLS, state, decrypt=FakeDotenvSops({}))
    assert err.value.message.startswith(f"{ENV_FILE}:1: Secret/shop/app-") and err.value.key_file is None
    assert "reconciler.sops_age_key_file" in err.value.message
