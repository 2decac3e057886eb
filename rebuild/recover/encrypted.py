"""SOPS-encrypted documents of the desired state: checked before anything is applied, decrypted in memory for verify.

Why this exists: most Flux repositories keep their Secrets in git encrypted with SOPS, and Flux's
kustomize-controller decrypts them in the cluster with the age key rebuild hands over
(``reconciler.sops_age_key_file``). Two things follow for rebuild:

- verify must compare a live Secret with the value git *means*, not with the ``ENC[...]`` text
  git holds. Each encrypted file is decrypted with exactly that key file
  (:func:`rebuild.adapters.sops.decrypt`: pipes only, the key's path in the child's environment)
  into a *copy* of the desired object that only the comparison sees: the desired state, the
  render cache and every result keep the ciphertext, and the comparison reports a Secret's values
  only as redacted digests. Nothing here writes, logs or prints a decrypted value;
- a key that is missing, unreadable or not a recipient would let ``up`` build a whole cluster
  whose Kustomizations then fail on the first Secret. So ``plan``, ``up`` and ``verify`` decrypt
  every encrypted file first (:func:`check`) and stop with a ConfigError (exit 2) naming the
  document's file:line and the key file, before anything is created or applied.

What is decrypted is the file as git holds it (kustomize's origin annotation names it, and the
document's index in it); its values replace the ``ENC[...]`` values of the *rendered* object at
the same paths, so what kustomize changed around them (a namespace, labels, a name prefix) is
kept, as in kustomize-controller, which decrypts the built object. Like kustomize-controller,
sops's MAC (a digest over every value, clear ones included) is not checked: a label added by hand
to an encrypted file is applied by Flux, so it must not stop a rebuild (see
:func:`rebuild.adapters.sops.decrypt`).

Not handled (said in docs/sops.md): an encrypted document that is not in a file of the
repository (a remote base), and encrypted files a Secret *generator* reads (Flux decrypts
``.env``/binary sources and values that are whole SOPS files; rebuild compares those as written).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rebuild.adapters import sops
from rebuild.core.config import Config
from rebuild.core.errors import ConfigError
from rebuild.core.model import DesiredObject, ObjectRef
from rebuild.core.yamlload import YamlLoadError, load_all
from rebuild.recover.sources import DesiredState
from rebuild.toolchain.registry import ToolPaths

# A value sops encrypted: ENC[AES256_GCM,data:...,iv:...,tag:...,type:str]
ENCRYPTED_VALUE = re.compile(r"\AENC\[[A-Z0-9_]+,data:.*\]\Z", re.S)
WORKERS = 8  # sops runs at once after the first file (each a few ms of CPU)
KEY_SETTING = "reconciler.sops_age_key_file"


@dataclass(frozen=True)
class EncryptedDoc:
    """A desired object whose document is SOPS-encrypted, and where its file is."""

    obj: DesiredObject
    root: Path  # the checkout of its source
    path: str  # its file, relative to the checkout ("" when it comes from no file of the repo)


def encrypted_documents(desired: DesiredState) -> list[EncryptedDoc]:
    """Every desired object that is a SOPS document (any kind: Flux decrypts any): source by
    source, by file and line within one (so "the first" is the first in the repository)."""
    many = len(desired.sources) > 1
    out: list[EncryptedDoc] = []
    for state in desired.sources:
        label = f"{state.spec.name}:" if many else ""  # how load_desired names files of several sources
        found = [o for o in state.objects if sops.is_sops_document(o.body)]
        for o in sorted(found, key=lambda o: (o.source.file, o.source.line)):
            path = o.declared.file.removeprefix(label) if o.declared is not None else ""
            out.append(EncryptedDoc(o, state.checkout.path, path))
    return out


def key_file(config: Config) -> Path | None:
    """The age key file rebuild.yaml names (relative to rebuild.yaml), absolute; None when unset."""
    name = config.reconciler.sops_age_key_file
    return (config.base_dir / name).resolve() if name else None


def setting_at(config: Config) -> str:
    """Where rebuild.yaml sets the key file: ``/path/rebuild.yaml:7`` (the file alone when unknown)."""
    try:
        docs = load_all(config.path.read_bytes())
    except (OSError, YamlLoadError):
        return str(config.path)
    line = docs[0].lines.get(("reconciler", "sops_age_key_file")) if len(docs) == 1 else None
    return f"{config.path}:{line}" if line else str(config.path)


def check(config: Config, toolchain: ToolPaths, desired: DesiredState, *, decrypt: sops.Decrypt = sops.decrypt) -> int:
    """Before anything is applied: every encrypted file decrypts with the configured key.

    Raises ConfigError (exit 2) naming the first document that cannot be decrypted (file:line)
    and the key file; returns how many encrypted documents there are. The plaintext is dropped
    at once: verify decrypts again when it compares (:func:`decrypted`), milliseconds per file,
    so no decrypted value is held for the length of a rebuild.
    """
    return len(decrypted(config, toolchain, desired, decrypt=decrypt))


def decrypted(
    config: Config, toolchain: ToolPaths, desired: DesiredState, *, decrypt: sops.Decrypt = sops.decrypt
) -> dict[ObjectRef, DesiredObject]:
    """The objects verify compares in place of the encrypted ones, keyed by their ref.

    Each is a copy of the desired object whose ``ENC[...]`` values are the decrypted ones and
    whose ``sops`` metadata is gone (kustomize-controller applies exactly that); the desired
    object itself is not changed. Raises ConfigError when there are encrypted documents and no
    key file is configured, or one cannot be decrypted (the first, in source order).
    """
    docs = encrypted_documents(desired)
    if not docs:
        return {}
    key = key_file(config)
    first = docs[0]
    if key is None:
        raise ConfigError(
            f"{first.obj.source}: {first.obj.ref} is encrypted with SOPS and {config.path.name} sets no {KEY_SETTING}: "
            "Flux could not decrypt it, nor verify compare it; nothing was applied",
            fix=f"set {KEY_SETTING} in {config.path} to the age key file (kept outside git) that decrypts it",
        )
    for d in docs:
        if not d.path:
            raise ConfigError(
                f"{d.obj.source}: {d.obj.ref} is encrypted with SOPS but comes from no file of the repository "
                "(a remote base?): rebuild cannot decrypt it to verify it; nothing was applied",
                fix="keep SOPS-encrypted documents in the repository that rebuild.yaml names",
            )
    files: dict[tuple[Path, str], EncryptedDoc] = {}
    for d in docs:
        files.setdefault((d.root, d.path), d)  # a file is decrypted once, named by its first encrypted document

    def one(d: EncryptedDoc) -> list[Any]:
        try:
            return _decrypt_file(d, key, toolchain, decrypt)
        except ConfigError as err:
            if str(key) not in err.message:
                raise
            # the key file cannot be read or is not a recipient: say where rebuild.yaml names it
            raise ConfigError(err.message, fix=f"{err.fix}; it is set at {setting_at(config)}") from None

    ordered = list(files.values())
    # The first file alone: a wrong or missing key fails there, in one sops run, and names that file.
    plain: dict[tuple[Path, str], list[Any]] = {(ordered[0].root, ordered[0].path): one(ordered[0])}
    rest = ordered[1:]
    if rest:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(WORKERS, len(rest))) as pool:
            # map yields in order: the error raised is the first file's in source order
            for d, docs_of_file in zip(rest, pool.map(one, rest), strict=True):
                plain[(d.root, d.path)] = docs_of_file
    return {d.obj.ref: view(d.obj, _document(plain[(d.root, d.path)], d)) for d in docs}


def _decrypt_file(d: EncryptedDoc, key: Path, toolchain: ToolPaths, decrypt: sops.Decrypt) -> list[Any]:
    """The decrypted documents of a file, as data (never a message quoting them)."""
    source = str(d.obj.source)
    try:
        text = (d.root / d.path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}", fix="check the checkout of the source") from exc
    out = decrypt(d.path, text, key, toolchain=toolchain, source=source, ignore_mac=True)
    try:
        return [doc.data for doc in load_all(out)]
    except YamlLoadError as exc:
        # the loader's messages can quote the text: only the line numbers leave this function
        lines = ", ".join(str(p.line) for p in exc.problems)
        raise ConfigError(
            f"cannot read the decrypted {source}: sops's output is not YAML (line {lines})",
            fix=f"check the file with `sops --decrypt {d.path}`",
        ) from None


def _document(docs: Sequence[Any], d: EncryptedDoc) -> Mapping[str, Any]:
    """The object's own document among a file's decrypted ones (kind List items followed)."""
    declared = d.obj.declared
    assert declared is not None  # checked by the caller (d.path is set)
    node: Any = docs[declared.doc] if 0 <= declared.doc < len(docs) else None
    for seg in declared.prefix:
        if isinstance(seg, int) and isinstance(node, list) and 0 <= seg < len(node):
            node = node[seg]
        elif isinstance(seg, str) and isinstance(node, Mapping):
            node = node.get(seg)
        else:
            node = None
    if not isinstance(node, Mapping) or node.get("kind") != d.obj.ref.kind:
        raise ConfigError(
            f"cannot find {d.obj.ref} in the decrypted {d.obj.source}: sops returned other documents than the file holds",
            fix=f"check the file with `sops --decrypt {d.path}`",
        )
    return node


def view(obj: DesiredObject, plain: Mapping[str, Any]) -> DesiredObject:
    """A copy of ``obj`` for the comparison: its ENC[...] values replaced by the decrypted
    document's at the same paths, its ``sops`` metadata dropped; everything kustomize set
    around them (namespace, labels...) kept from the rendered object."""
    body = {k: _merge(v, plain.get(k, _ABSENT)) for k, v in obj.body.items() if k != "sops"}
    return dataclasses.replace(obj, body=body)


_ABSENT: Any = object()


def _merge(rendered: Any, plain: Any) -> Any:
    if isinstance(rendered, Mapping):
        sub = plain if isinstance(plain, Mapping) else {}
        return {k: _merge(v, sub.get(k, _ABSENT)) for k, v in rendered.items()}
    if isinstance(rendered, list):
        items = plain if isinstance(plain, list) else []
        return [_merge(v, items[i] if i < len(items) else _ABSENT) for i, v in enumerate(rendered)]
    if isinstance(rendered, str) and plain is not _ABSENT and ENCRYPTED_VALUE.match(rendered):
        return plain
    return rendered
