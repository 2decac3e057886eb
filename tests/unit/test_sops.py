"""rebuild/adapters/sops.py, the pure parts: which .sops.yaml rule applies (sops's own semantics,
config/config.go of v3.13.3), what counts as a SOPS document, the argv and environment handed to
sops (no key, no plaintext, nothing of the operator's environment) and the error texts.
The real sops and age binaries run in tests/integration/test_sops_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from rebuild.adapters import sops
from rebuild.core.errors import ConfigError, ToolchainError
from rebuild.toolchain.registry import ToolPaths

A1 = "age1vcng8mjn0e2dnkn654hx6fnuzzsxkcvqnp4j07f9wjrp2vuts9nq3k6cxh"
A2 = "age1drxkg4ru2lk3rk0aadtna3g5z66rxhd7zsw8kdvn4cv4pxqync6qskjleu"

CONFIG = f"""\
creation_rules:
  - path_regex: ^clusters/prod/.*\\.ya?ml$
    encrypted_regex: ^(data|stringData)$
    age: {A1}, {A2}
  - path_regex: secrets/
    encrypted_regex: ^(data|stringData)$
    age:
      - {A2}
  - path_regex: \\.pgp\\.yaml$
    pgp: FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4
  - path_regex: \\.both\\.yaml$
    age: {A1}
    kms: arn:aws:kms:us-east-1:111122223333:key/abc
  - path_regex: \\.groups\\.yaml$
    key_groups:
      - age: [{A1}]
      - age: [{A2}]
  - path_regex: \\.group\\.yaml$
    age: {A2}
    key_groups:
      - age: ["{A1}"]
        merge:
          - age: ["{A2}"]
  - encrypted_regex: ^data$
    age: {A1}
"""


def rule(path: str, text: str = CONFIG) -> sops.Rule | None:
    return sops.match_rule(text, path)


def test_first_matching_rule_wins_like_sops() -> None:
    r = rule("clusters/prod/db-secret.yaml")
    assert r is not None and r.source == ".sops.yaml:2"
    assert r.age == (A1, A2)  # comma-separated string, spaces trimmed
    assert r.encrypted_regex == "^(data|stringData)$"
    # clusters/prod/secrets/x.yaml matches rule 1 and rule 2: the first one wins, no merging
    r = rule("clusters/prod/secrets/x.yaml")
    assert r is not None and r.source == ".sops.yaml:2"


def test_path_regex_is_an_unanchored_search_of_the_path_relative_to_the_config() -> None:
    r = rule("apps/shop/secrets/db.yaml")  # "secrets/" anywhere in the path
    assert r is not None and r.source == ".sops.yaml:5" and r.age == (A2,)  # a list of recipients
    assert rule("./apps/shop/secrets/db.yaml") == r  # sops matches the path without ./
    r = rule("clusters/staging/db.yaml")  # ^clusters/prod does not match
    assert r is not None and r.path_regex == ""  # the catch-all rule without path_regex
    assert r.encrypted_regex == "^data$" and r.source == ".sops.yaml:24"


def test_no_rule_when_nothing_matches_or_there_are_no_rules() -> None:
    assert rule("apps/x.yaml", "creation_rules:\n  - path_regex: ^only/\n    age: " + A1 + "\n") is None
    assert rule("apps/x.yaml", "creation_rules:\n") is None  # null: sops treats it as no config
    assert rule("apps/x.yaml", "creation_rules: []\n") is None
    assert rule("apps/x.yaml", "destination_rules: []\n") is None
    assert rule("apps/x.yaml", "") is None


def test_creation_rule_reads_dot_sops_yaml_at_the_repo_root(tmp_path: Path) -> None:
    assert sops.creation_rule(tmp_path, "apps/secret.yaml") is None  # no .sops.yaml
    (tmp_path / ".sops.yaml").write_text(CONFIG)
    r = sops.creation_rule(tmp_path, "clusters/prod/s.yml")
    assert r is not None and r.source == ".sops.yaml:2"


def test_other_key_types_and_key_groups_are_recorded() -> None:
    pgp = rule("x.pgp.yaml")
    assert pgp is not None and pgp.age == () and pgp.other_keys == ("pgp",)
    both = rule("x.both.yaml")
    assert both is not None and both.age == (A1,) and both.other_keys == ("kms",)
    groups = rule("x.groups.yaml")
    assert groups is not None and groups.key_groups == 2 and groups.age == (A1, A2)
    # with key_groups sops ignores the flat keys; merge folds nested groups into one
    one = rule("x.group.yaml")
    assert one is not None and one.key_groups == 1 and one.age == (A1, A2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("creation_rules:\n  - path_regex: '('\n", ".sops.yaml:2: path_regex '(' is not a valid regular expression"),
        ("creation_rules: {a: 1}\n", ".sops.yaml:1: creation_rules must be a list"),
        ("creation_rules:\n  - age: 3\n", ".sops.yaml:2: age must be a string or a list of strings"),
        (
            "creation_rules:\n  - encrypted_regex: a\n    unencrypted_suffix: _x\n",
            ".sops.yaml:2: the rule sets encrypted_regex and unencrypted_suffix; sops allows only one",
        ),
        ("creation_rules:\n  - key_groups:\n      - age: age1x\n", "age in a key group must be a list"),
        ("creation_rules:\n  - path_regex: a\n  path_regex: b\n", "line 3"),
        ("- a\n", "expected a mapping with creation_rules"),
    ],
)
def test_broken_config_names_its_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        rule("anything.yaml", text)
    assert message in str(err.value) and err.value.fix


def test_a_broken_rule_after_the_match_is_not_read() -> None:
    text = f"creation_rules:\n  - age: {A1}\n  - path_regex: '('\n"  # sops stops at the first match too
    r = rule("x.yaml", text)
    assert r is not None and r.age == (A1,)


def test_go_end_of_text_anchor() -> None:
    r = rule("a/secret.yaml", f"creation_rules:\n  - path_regex: secret\\.yaml\\z\n    age: {A1}\n")
    assert r is not None
    assert rule("a/secret.yaml.bak", f"creation_rules:\n  - path_regex: secret\\.yaml\\z\n    age: {A1}\n") is None


def test_is_sops_document() -> None:
    assert sops.is_sops_document({"data": {"a": "ENC[...]"}, "sops": {"mac": "ENC[...]", "lastmodified": "2026-01-01T00:00:00Z"}})
    assert not sops.is_sops_document({"sops": {"mac": "x"}})  # no lastmodified
    assert not sops.is_sops_document({"sops": "yes"})
    assert not sops.is_sops_document({"kind": "Secret", "data": {"sops": "x"}})
    assert not sops.is_sops_document(["sops"])
    assert not sops.is_sops_document(None)


def test_selector_flags() -> None:
    r = rule("clusters/prod/x.yaml")
    assert r is not None and r.selector_flags() == ["--encrypted-regex=^(data|stringData)$"]
    r = rule("x.yaml", f"creation_rules:\n  - unencrypted_suffix: _plain\n    mac_only_encrypted: true\n    age: {A1}\n")
    assert r is not None and r.selector_flags() == ["--unencrypted-suffix=_plain", "--mac-only-encrypted"]


def test_argv_holds_no_key_and_reads_stdin() -> None:
    argv = sops.decrypt_argv(Path("/t/sops"), "apps/secret.yaml")
    assert argv[-1] == "/dev/stdin" and "--decrypt" in argv
    assert argv[argv.index("--config") + 1] == "/dev/null"  # sops never looks for its own .sops.yaml
    assert "--filename-override=apps/secret.yaml" in argv  # one word: a path may start with "-"
    assert not any("AGE-SECRET-KEY" in a or "key" in a.lower() for a in argv)
    assert sops.decrypt_argv(Path("/t/sops"), "a/s.json")[5] == "json"  # --input-type json
    r = rule("clusters/prod/x.yaml")
    assert r is not None
    argv = sops.encrypt_argv(Path("/t/sops"), r, "clusters/prod/x.yaml")
    assert f"--age={A1},{A2}" in argv  # public keys only
    assert "--encrypted-regex=^(data|stringData)$" in argv
    assert argv[-1] == "/dev/stdin" and "--encrypt" in argv


def test_child_environment_is_built_from_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOPS_AGE_KEY", "AGE-SECRET-KEY-1OPERATORS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    env = sops.sops_env(Path("/keys/age.agekey"))
    assert env["SOPS_AGE_KEY_FILE"] == "/keys/age.agekey"
    # no fallback key locations (~/.config/sops/age/keys.txt, ~/.ssh/id_ed25519), no PATH (no gpg)
    assert env["HOME"] == env["XDG_CONFIG_HOME"] == "/nonexistent" and "PATH" not in env
    assert "SOPS_AGE_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "SOPS_AGE_KEY_FILE" not in sops.sops_env()


def test_wrong_key_error_names_both_files_and_the_fix() -> None:
    err = sops.wrong_key_error("apps/secret.yaml:1", Path("/k/age.agekey"), [A1, "pgp"], [A2])
    text = str(err)
    assert isinstance(err, ConfigError)
    assert f"the age key in /k/age.agekey ({A2}) is not a recipient of apps/secret.yaml:1" in err.message
    assert f"it is encrypted for {A1}, pgp" in err.message
    assert err.fix == (
        "the age key in /k/age.agekey is not a recipient of apps/secret.yaml:1: "
        "check reconciler.sops_age_key_file / the .sops.yaml recipients"
    )
    assert "AGE-SECRET-KEY" not in text
    assert "holds no age private key" in sops.wrong_key_error("s.yaml", Path("/k"), [], []).message
    assert "the age key in /k is not a recipient" in sops.wrong_key_error("s.yaml", Path("/k"), [], None).message


def test_file_recipients_from_the_clear_metadata() -> None:
    enc = f"""\
kind: Secret
data:
    a: ENC[AES256_GCM,data:x,iv:y,tag:z,type:str]
sops:
    age:
        - recipient: {A1}
          enc: x
    pgp:
        - fp: ABC
    lastmodified: "2026-01-01T00:00:00Z"
    mac: ENC[x]
""".encode()
    assert sops.file_recipients(enc) == [A1, "pgp"]
    assert sops.file_recipients(b"a: [") == []
    assert sops.file_recipients(b"kind: Secret\n") == []


def test_missing_key_file_fails_before_sops_runs(tmp_path: Path) -> None:
    tools = ToolPaths(root=tmp_path / "no-cache")  # sops not even installed: never reached
    with pytest.raises(ConfigError) as err:
        sops.decrypt("apps/s.yaml", b"x", tmp_path / "nope.agekey", toolchain=tools, source="apps/s.yaml:3")
    assert "cannot decrypt apps/s.yaml:3: the age key file" in err.value.message
    assert str(tmp_path / "nope.agekey") in err.value.message and "No such file" in err.value.message
    assert "reconciler.sops_age_key_file" in (err.value.fix or "")
    with pytest.raises(ConfigError, match="it is a folder"):
        sops.decrypt("apps/s.yaml", b"x", tmp_path, toolchain=tools)


def test_encrypt_refuses_what_it_cannot_write_for(tmp_path: Path) -> None:
    tools = ToolPaths(root=tmp_path / "no-cache")
    cases = {
        "x.pgp.yaml": "has no age recipients, only pgp; rebuild can encrypt only for age recipients",
        "x.both.yaml": "also names kms keys; rebuild can encrypt only for age recipients",
        "x.groups.yaml": "splits the data key over 2 key groups",
    }
    for path, message in cases.items():
        r = rule(path)
        assert r is not None
        with pytest.raises(ConfigError) as err:
            sops.encrypt(b"kind: Secret\n", r, path, toolchain=tools)
        assert message in err.value.message and r.source in err.value.message, path
    empty = sops.Rule(source=".sops.yaml:2", path_regex="")
    with pytest.raises(ConfigError, match="names no recipients"):
        sops.encrypt(b"kind: Secret\n", empty, "a.yaml", toolchain=tools)
    # an age rule gets as far as the binary: not installed here
    r = rule("clusters/prod/x.yaml")
    assert r is not None
    with pytest.raises(ToolchainError, match="sops"):
        sops.encrypt(b"kind: Secret\n", r, "clusters/prod/x.yaml", toolchain=tools)


def test_last_line() -> None:
    assert sops.last_line(b"Failed\n\n  detail\nError decrypting tree: x\n\n") == "Error decrypting tree: x"
    assert sops.last_line(b"") == "no error message"
    # the one message that would quote a (hand-edited, clear) value of the file
    line = sops.last_line(
        b"Error decrypting tree: Could not decrypt value: Input string hunter2 does not match sops' data format"
    )
    assert "hunter2" not in line and "is not in sops' ENC[...] format" in line
