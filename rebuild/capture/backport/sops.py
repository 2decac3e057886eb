"""A Secret value changed live, written back into its SOPS-encrypted file, encrypted for the repo's recipients.

Why this exists: a Secret changed by hand (a rotated password) is lost at the next rebuild unless
git holds it, and git holds it only encrypted. Asking a person to copy the value out of the
cluster and run ``sops`` means the plaintext passes through a terminal, a clipboard and an
editor's swap file. When the repository says who may read the file (a ``.sops.yaml`` creation
rule with age recipients: public keys), rebuild can do it without anyone seeing the value:

1. decrypt the whole file in memory with the key Flux is given (``reconciler.sops_age_key_file``;
   :func:`rebuild.adapters.sops.decrypt`: sops reads stdin, writes stdout);
2. set the live value at the drifted key of the Secret's document, in the field the file uses
   (``stringData`` as text, ``data`` as the live base64), or drop a key that is gone live;
3. encrypt the whole file again for the rule (:func:`rebuild.adapters.sops.encrypt`: the
   plaintext on stdin, the ciphertext on stdout), which becomes the file's new text in the PR.

The plaintext exists only in this process's memory and in sops's pipes: it is never written to a
file, logged, or put in a message (errors name files, keys and rules, never values). What the
pull request, the report and the diff show are the new ciphertext and redacted digests.

Written only for a rule whose recipients are age keys alone (one key group): a PGP/KMS/Vault
recipient cannot be written for without its own tooling, and encrypting for the age keys alone
would lock the others out. Without such a rule the finding is listed as before (the key named,
an encrypted value asked for), with the reason.

Split in two: the pure part (:func:`why_not_writable`, :func:`set_values`, :func:`dump`) and
:class:`SopsSecrets`, the one object that runs sops, which the caller builds and hands to the
planner (the planner itself stays texts in, texts out).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from rebuild.adapters import sops
from rebuild.core.errors import ConfigError
from rebuild.core.model import FieldPath, ObjectRef
from rebuild.core.yamlload import YamlLoadError, load_all
from rebuild.toolchain.registry import ToolPaths


class NotWritable(Exception):
    """Why a Secret's new value cannot be written encrypted (the text is shown in the PR; never a value)."""


class Encrypt(Protocol):
    """:func:`rebuild.adapters.sops.encrypt` (a fake in unit tests)."""

    def __call__(self, plaintext: bytes, rule: sops.Rule, path_in_repo: str, *, toolchain: ToolPaths) -> bytes: ...


@dataclass(frozen=True)
class SecretChange:
    """One drifted key of a Secret declared in an encrypted file.

    ``doc`` and ``prefix`` say where the Secret's document is in the file (``prefix``: the path of
    a ``kind: List`` item); ``path`` is the finding's (``("stringData", "password")``); ``added``:
    a key git does not declare (a key missing live is removed from the file)."""

    ref: ObjectRef
    doc: int
    prefix: tuple[str | int, ...]
    path: FieldPath
    added: bool = False


# --------------------------------------------------------------------------- pure


def why_not_writable(rule: sops.Rule | None, path: str) -> str | None:
    """None when ``rule`` lets rebuild encrypt ``path`` (age recipients only, one key group); else why not."""
    if rule is None:
        return f"no {sops.SOPS_CONFIG} creation rule matches {path}"
    if rule.key_groups > 1:
        return f"the {sops.SOPS_CONFIG} rule for it ({rule.source}) splits the key over {rule.key_groups} key groups"
    if rule.other_keys:
        return (
            f"the {sops.SOPS_CONFIG} rule for it ({rule.source}) names {', '.join(rule.other_keys)} keys; "
            "rebuild encrypts for age recipients only"
        )
    if not rule.age:
        return f"the {sops.SOPS_CONFIG} rule for it ({rule.source}) names no age recipients"
    return None


def _node(docs: Sequence[Any], change: SecretChange) -> MutableMapping[str, Any]:
    node: Any = docs[change.doc] if 0 <= change.doc < len(docs) else None
    for seg in change.prefix:
        if isinstance(seg, int) and isinstance(node, list) and 0 <= seg < len(node):
            node = node[seg]
        elif isinstance(seg, str) and isinstance(node, dict):
            node = node.get(seg)
        else:
            node = None
    meta = node.get("metadata") if isinstance(node, dict) else None
    if not isinstance(node, dict) or node.get("kind") != "Secret" or not isinstance(meta, dict):
        raise NotWritable("the decrypted file does not hold the Secret's document where git declares it")
    return node


def _live_value(live: Mapping[str, Any], key: str) -> str | None:
    """The live base64 value of ``key`` (a live Secret has ``data`` only); None when it is gone."""
    data = live.get("data")
    value = data.get(key) if isinstance(data, Mapping) else None
    return value if isinstance(value, str) else None


def _as_text(b64: str) -> str:
    try:
        return base64.b64decode(b64, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise NotWritable("its live value is not UTF-8 text, which stringData holds; move it to data by hand") from None


def set_values(docs: Sequence[Any], changes: Sequence[SecretChange], live: Mapping[ObjectRef, Mapping[str, Any]]) -> None:
    """Set each change's live value in the decrypted documents of a file (in place).

    The field the file uses is kept: a ``stringData`` key gets the decoded text, a ``data`` key
    the live base64. A key added live goes where the document keeps its values (``data`` when it
    has it, else ``stringData`` as text). A key missing live is removed. Raises NotWritable."""
    for c in changes:
        if len(c.path) != 2 or c.path[0] not in ("data", "stringData") or not isinstance(c.path[1], str):
            raise NotWritable(f"{'.'.join(str(s) for s in c.path)} is not a key of data or stringData")
        node = _node(docs, c)
        key = c.path[1]
        obj = live.get(c.ref)
        if obj is None:
            raise NotWritable("the live Secret was not read")
        value = _live_value(obj, key)
        fieldname = str(c.path[0])
        if c.added:
            in_text = isinstance(node.get("stringData"), dict) and not isinstance(node.get("data"), dict)
            fieldname = "stringData" if in_text else "data"
        if value is None:
            values = node.get(fieldname)
            if isinstance(values, dict):
                values.pop(key, None)
                if not values:
                    node.pop(fieldname)
            continue
        values = node.get(fieldname)
        if values is None:
            values = node[fieldname] = {}
        if not isinstance(values, dict):
            raise NotWritable(f"{fieldname} of the decrypted document is not a mapping")
        values[key] = _as_text(value) if fieldname == "stringData" else value


def dump(docs: Sequence[Any]) -> bytes:
    """The plaintext documents as YAML for sops to encrypt (key order kept)."""
    return yaml.safe_dump_all(list(docs), sort_keys=False, default_flow_style=False, allow_unicode=True).encode()


# --------------------------------------------------------------------------- sops


@dataclass
class SopsSecrets:
    """Writes live Secret values into the encrypted files of one checkout (see the module docstring).

    ``live`` holds the live Secrets (their values, in memory only); ``key`` the age key file
    that decrypts the repository (``reconciler.sops_age_key_file``), None when none is set."""

    repo_root: Path
    key: Path | None
    toolchain: ToolPaths
    live: Mapping[ObjectRef, Mapping[str, Any]]
    decrypt: sops.Decrypt = sops.decrypt
    encrypt: Encrypt = sops.encrypt
    _rules: dict[str, sops.Rule | None] = field(default_factory=dict)

    def rule(self, path: str) -> sops.Rule:
        """The ``.sops.yaml`` rule rebuild may encrypt ``path`` for; NotWritable says why there is none."""
        if path not in self._rules:
            try:
                self._rules[path] = sops.creation_rule(self.repo_root, path)
            except ConfigError as err:
                raise NotWritable(err.message) from None
        rule = self._rules[path]
        why = why_not_writable(rule, path)
        if why is not None:
            raise NotWritable(why)
        assert rule is not None
        return rule

    def rewrite(self, path: str, text: str, changes: Sequence[SecretChange]) -> tuple[str, sops.Rule]:
        """The new text of the encrypted file ``path`` (now ``text``) with every change's live value
        set, encrypted for its rule; and the rule. Raises NotWritable (nothing changed)."""
        rule = self.rule(path)
        if self.key is None:
            raise NotWritable("rebuild.yaml sets no reconciler.sops_age_key_file to decrypt it with")
        try:
            plain = self.decrypt(path, text.encode(), self.key, toolchain=self.toolchain, source=path, ignore_mac=True)
            try:
                docs = [d.data for d in load_all(plain)]
            except YamlLoadError:
                raise NotWritable("sops's decrypted output is not YAML") from None
            set_values(docs, changes, self.live)
            new = self.encrypt(dump(docs), rule, path, toolchain=self.toolchain)
        except ConfigError as err:
            raise NotWritable(err.message) from None
        return new.decode("utf-8"), rule
