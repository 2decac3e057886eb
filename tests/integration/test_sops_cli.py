"""rebuild/adapters/sops.py against the real sops and age binaries of the toolchain (no cluster).

An age key made with the real ``age-keygen``; a Secret encrypted for the repo's ``.sops.yaml``
rule (``encrypted_regex: ^(data|stringData)$``) and decrypted back equal; a wrong key fails
with the ConfigError naming the file and the key file in well under 5 s; and the plaintext
(random values, never written to a file by this test) appears in no file under the test's
folder, in no sops argv and in no sops environment: each sops/age child's
``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ`` are read while it waits for its stdin.
About a second.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters import sops
from rebuild.core.errors import ConfigError
from rebuild.toolchain.tools import Toolchain

PATH = "apps/shop/db-secret.yaml"


def age_keygen(tools: Toolchain, dest: Path) -> str:
    """A new age key in ``dest`` (the real age-keygen; it writes 0600); returns its public key."""
    proc = subprocess.run([str(tools.binary("age", "age-keygen")), "-o", str(dest)], capture_output=True, text=True, check=True)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    return proc.stderr.split("Public key:", 1)[1].strip()


def needles(value: str) -> list[bytes]:
    """The value, and its base64 at each of the three alignments (as in a Secret's data)."""
    raw = value.encode()
    out = [raw]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw)
        skip = (pad * 4 + 2) // 3  # characters that encode the padding
        out.append(enc[skip + 1 : len(enc) - 4])  # the middle, free of padding and edge effects
    return out


def _read_proc(pid: int, args: Any) -> tuple[bytes, bytes]:
    """A child's cmdline and environ while it waits for its stdin (sops reads it to EOF).

    Popen returns once the exec has begun (the close-on-exec pipe closed), a moment before the
    kernel fills in the new program's argument area: until then both read empty, so poll
    briefly. A child that needs no stdin (age-keygen) may be gone: its argv is what we passed."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            break
        if cmd and env:
            return cmd, env
        if state == "Z":
            break
        time.sleep(0.001)
    return b"\0".join(os.fsencode(a) for a in args), b""


class Seen:
    """What every child process got: argv and environment, read from /proc while it ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[Seen]:
    record = Seen()
    real = subprocess.Popen

    class Spy(real):  # type: ignore[misc,valid-type]
        def communicate(self, *a: Any, **kw: Any) -> Any:
            record.calls.append(_read_proc(self.pid, self.args))
            return super().communicate(*a, **kw)

    monkeypatch.setattr(subprocess, "Popen", Spy)
    yield record


def test_encrypt_for_the_rule_decrypt_back_wrong_key_and_no_plaintext_anywhere(tmp_path: Path, seen: Seen) -> None:
    tools = Toolchain()
    repo = tmp_path / "repo"
    (repo / "apps" / "shop").mkdir(parents=True)
    keys = tmp_path / "keys"
    keys.mkdir()
    key, wrong = keys / "age.agekey", keys / "wrong.agekey"
    public = age_keygen(tools, key)
    age_keygen(tools, wrong)
    (repo / ".sops.yaml").write_text(
        "creation_rules:\n"
        "  - path_regex: ^clusters/\n"
        "    age: age1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq\n"
        "  - path_regex: ^apps/.*\\.yaml$\n"
        "    encrypted_regex: ^(data|stringData)$\n"
        f"    age: {public}\n"
    )
    password = "pw-" + secrets.token_hex(12)
    token = "tok-" + secrets.token_hex(12)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop"},
        "type": "Opaque",
        "stringData": {"password": password},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
    plaintext = yaml.safe_dump(secret, sort_keys=False).encode()  # in memory only

    rule = sops.creation_rule(repo, PATH)
    assert rule is not None and rule.source == ".sops.yaml:4" and rule.age == (public,)
    encrypted = sops.encrypt(plaintext, rule, PATH, toolchain=tools)
    (repo / PATH).write_bytes(encrypted)  # what capture would commit

    doc = yaml.safe_load(encrypted)
    assert sops.is_sops_document(doc)
    assert doc["metadata"] == {"name": "db", "namespace": "shop"} and doc["type"] == "Opaque"  # clear
    assert doc["stringData"]["password"].startswith("ENC[AES256_GCM,")
    assert doc["data"]["token"].startswith("ENC[AES256_GCM,")
    assert doc["sops"]["encrypted_regex"] == "^(data|stringData)$"
    assert [a["recipient"] for a in doc["sops"]["age"]] == [public]

    decrypted = sops.decrypt(PATH, (repo / PATH).read_bytes(), key, toolchain=tools)
    assert yaml.safe_load(decrypted) == secret  # sops re-indents: compare documents

    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        sops.decrypt(PATH, encrypted, wrong, toolchain=tools, source=f"{PATH}:1")
    took = time.monotonic() - started
    assert took < 5, took
    assert f"cannot decrypt {PATH}:1" in err.value.message and str(wrong) in err.value.message
    assert f"is encrypted for {public}" in err.value.message
    assert err.value.fix == (
        f"the age key in {wrong} is not a recipient of {PATH}:1: check reconciler.sops_age_key_file / the .sops.yaml recipients"
    )
    assert password not in str(err.value) and token not in str(err.value)

    # Nothing holds the plaintext but this process's memory.
    values = [password, token]
    found = []
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n!r}" for v in values for n in needles(v) if n in data]
    assert not found, found
    # Every sops/age child: no plaintext and no private key in argv or environment; the key
    # reached sops as a file path in SOPS_AGE_KEY_FILE only.
    private = [ln for k in (key, wrong) for ln in k.read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-")]
    assert len(private) == 2
    sops_calls = [(c, e) for c, e in seen.calls if Path(c.split(b"\0")[0].decode()).name == "sops"]
    assert len(sops_calls) == 3  # encrypt, decrypt, decrypt with the wrong key
    assert all(env for _, env in sops_calls)  # read from /proc while sops ran, not our own argv
    for cmd, env in seen.calls:
        for secret_bytes in [*(n for v in values for n in needles(v)), *(p.encode() for p in private)]:
            assert secret_bytes not in cmd and secret_bytes not in env
    encrypt_env = dict(kv.split(b"=", 1) for kv in sops_calls[0][1].split(b"\0") if kv)
    assert b"SOPS_AGE_KEY_FILE" not in encrypt_env and b"/dev/stdin" in sops_calls[0][0]
    decrypt_env = dict(kv.split(b"=", 1) for kv in sops_calls[1][1].split(b"\0") if kv)
    assert decrypt_env[b"SOPS_AGE_KEY_FILE"] == str(key).encode()
    assert decrypt_env[b"HOME"] == b"/nonexistent" and b"PATH" not in decrypt_env
    assert decrypt_env.keys() == {b"HOME", b"XDG_CONFIG_HOME", b"SOPS_DISABLE_VERSION_CHECK", b"SOPS_AGE_KEY_FILE"}


def test_a_key_file_with_no_age_key_and_a_tampered_file(tmp_path: Path) -> None:
    tools = Toolchain()
    key = tmp_path / "age.agekey"
    public = age_keygen(tools, key)
    rule = sops.Rule(source=".sops.yaml:2", path_regex="", age=(public,), encrypted_regex="^(data|stringData)$")
    encrypted = sops.encrypt(b"kind: Secret\nstringData:\n  a: value-one\n", rule, "s.yaml", toolchain=tools)
    bad = tmp_path / "not-a-key"
    bad.write_text("hello\n")
    with pytest.raises(ConfigError) as err:
        sops.decrypt("s.yaml", encrypted, bad, toolchain=tools)
    assert f"{bad} holds no age private key" in err.value.message
    # a value edited by hand: sops's own last line, not the key message
    doc = yaml.safe_load(encrypted)
    enc_value = doc["stringData"]["a"]
    tampered = encrypted.replace(enc_value.encode(), enc_value.replace("data:", "data:A").encode())
    with pytest.raises(ConfigError) as err:
        sops.decrypt("s.yaml", tampered, key, toolchain=tools)
    assert "cannot decrypt s.yaml: sops: " in err.value.message and "not a recipient" not in err.value.message
    assert yaml.safe_load(sops.decrypt("s.yaml", encrypted, key, toolchain=tools)) == {
        "kind": "Secret",
        "stringData": {"a": "value-one"},
    }
