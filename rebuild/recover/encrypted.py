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

A ``secretGenerator`` may read SOPS-encrypted files (``envs:`` dotenv files, ``files:``);
kustomize-controller decrypts them before it builds, so the Secret in the cluster holds the
decrypted values under a name whose hash suffix kustomize computed from them. For each such
Secret the comparison gets a copy rebuilt from the files decrypted in memory, renamed with that
suffix, and copies of the objects of its namespace that name it (envFrom, volumes...) renamed
alike (:func:`generated_from_sops`, rebuild.desired.generated).

Not handled (said in docs/sops.md): an encrypted document that is not in a file of the
repository (a remote base); a generator of an overlay that merges encrypted files into a base's
generator (the base's entry is the one read); ``envs:`` files in YAML/JSON/INI format.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import posixpath
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
from rebuild.desired import generated
from rebuild.recover.sources import DesiredState
from rebuild.toolchain.registry import ToolPaths

# A value sops encrypted: ENC[AES256_GCM,data:...,iv:...,tag:...,type:str]
ENCRYPTED_VALUE = re.compile(r"\AENC\[[A-Z0-9_]+,data:.*\]\Z", re.S)
WORKERS = 8  # sops runs at once after the first file (each a few ms of CPU)
KEY_SETTING = "reconciler.sops_age_key_file"


class UndecryptableError(ConfigError):
    """An encrypted document (or a generator's encrypted file) of the desired state that cannot be
    decrypted: no key configured, a key that cannot be read or is not a recipient, a value edited
    without sops. ``ref`` and ``source`` (file:line) name the first such object, ``key_file`` the
    key tried (None: none configured). The CLI's commands stop with exit 2; a drill records it as
    its failure (nothing is created), so the history shows the drill failed and why."""

    def __init__(self, message: str, *, fix: str | None, ref: str, source: str, key_file: Path | None) -> None:
        super().__init__(message, fix=fix)
        self.ref, self.source, self.key_file = ref, source, key_file


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
    and the key file; returns how many encrypted documents and Secrets generated from encrypted
    files there are. The plaintext is dropped
    at once: verify decrypts again when it compares (:func:`decrypted`), milliseconds per file,
    so no decrypted value is held for the length of a rebuild.
    """
    decrypted(config, toolchain, desired, decrypt=decrypt)
    return len(encrypted_documents(desired)) + len(generated_from_sops(desired))


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
    gens = generated_from_sops(desired)
    if not docs and not gens:
        return {}
    key = key_file(config)
    if key is None:
        ref, where = (docs[0].obj.ref, str(docs[0].obj.source)) if docs else (gens[0].obj.ref, gens[0].sources[0])
        raise UndecryptableError(
            f"{where}: {ref} is encrypted with SOPS and {config.path.name} sets no {KEY_SETTING}: "
            "Flux could not decrypt it, nor verify compare it; nothing was applied",
            fix=f"set {KEY_SETTING} in {config.path} to the age key file (kept outside git) that decrypts it",
            ref=str(ref),
            source=where,
            key_file=None,
        )
    views = _document_views(config, toolchain, docs, key, decrypt) if docs else {}
    if gens:
        views = _generated_views(config, toolchain, desired, gens, key, decrypt, views)
    return views


def _key_fix(config: Config, key: Path, err: ConfigError) -> str | None:
    """The fix of a decrypt error, with where rebuild.yaml sets the key when the key is the problem."""
    return f"{err.fix}; it is set at {setting_at(config)}" if str(key) in err.message else err.fix


def _document_views(
    config: Config, toolchain: ToolPaths, docs: list[EncryptedDoc], key: Path, decrypt: sops.Decrypt
) -> dict[ObjectRef, DesiredObject]:
    for d in docs:
        if not d.path:
            raise UndecryptableError(
                f"{d.obj.source}: {d.obj.ref} is encrypted with SOPS but comes from no file of the repository "
                "(a remote base?): rebuild cannot decrypt it to verify it; nothing was applied",
                fix="keep SOPS-encrypted documents in the repository that rebuild.yaml names",
                ref=str(d.obj.ref),
                source=str(d.obj.source),
                key_file=key,
            )
    files: dict[tuple[Path, str], EncryptedDoc] = {}
    for d in docs:
        files.setdefault((d.root, d.path), d)  # a file is decrypted once, named by its first encrypted document

    def one(d: EncryptedDoc) -> list[Any]:
        try:
            return _decrypt_file(d, key, toolchain, decrypt)
        except ConfigError as err:
            fix = _key_fix(config, key, err)
            raise UndecryptableError(err.message, fix=fix, ref=str(d.obj.ref), source=str(d.obj.source), key_file=key) from None

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


# ------------------------------------------------------------------ Secrets generated from SOPS files


@dataclass(frozen=True)
class GeneratedSecret:
    """A Secret a ``secretGenerator`` made from SOPS-encrypted files, and those files.

    ``envs``: (path in the checkout, encrypted text) of each encrypted ``envs:`` file; ``files``:
    (key, path, sops format, encrypted text) of each encrypted ``files:`` source; ``sources``:
    ``path:1`` of each, for messages; ``entry``: the generator's entry (file:line)."""

    obj: DesiredObject
    root: Path
    entry: str
    envs: tuple[tuple[str, bytes], ...]
    files: tuple[tuple[str, str, str, bytes], ...]

    @property
    def sources(self) -> list[str]:
        return [f"{p}:1" for p, _ in self.envs] + [f"{p}:1" for _, p, _, _ in self.files]


def generated_from_sops(desired: DesiredState) -> list[GeneratedSecret]:
    """Every generated Secret of the desired state that reads a SOPS-encrypted file, as
    kustomize-controller finds them (rebuild.desired.generated): the generator's own entry (the
    object's source), its ``envs`` and ``files`` read relative to its kustomization's folder,
    inside the checkout. Only the files are read here; nothing is decrypted."""
    many = len(desired.sources) > 1
    out: list[GeneratedSecret] = []
    for state in desired.sources:
        label = f"{state.spec.name}:" if many else ""
        root = state.checkout.path
        for o in state.objects:
            src = o.source
            if o.ref.kind != "Secret" or o.ref.group or src.via != "generator" or len(src.locator) != 2:
                continue
            kfile = src.file.removeprefix(label)
            g = _generator_entry(root, kfile, src.locator)
            if g is None:
                continue
            found = _sops_sources(root, posixpath.dirname(kfile), g)
            if found[0] or found[1]:
                out.append(GeneratedSecret(o, root, str(src), *found))
    return out


def _generator_entry(root: Path, kfile: str, locator: tuple[Any, ...]) -> Mapping[str, Any] | None:
    kdoc, where = locator
    try:
        docs = load_all((root / kfile).read_bytes())
    except (OSError, YamlLoadError):
        return None
    node: Any = docs[kdoc].data if isinstance(kdoc, int) and 0 <= kdoc < len(docs) else None
    for seg in where if isinstance(where, tuple) else ():
        if isinstance(seg, int) and isinstance(node, list) and 0 <= seg < len(node):
            node = node[seg]
        elif isinstance(seg, str) and isinstance(node, Mapping):
            node = node.get(seg)
        else:
            return None
    return node if isinstance(node, Mapping) else None


def _read_inside(root: Path, folder: str, rel: str) -> tuple[str, bytes] | None:
    """(path in the checkout, bytes) of a file a generator names; None outside the checkout or unreadable."""
    path = posixpath.normpath(posixpath.join(folder, rel))
    if path.startswith("../") or path == ".." or posixpath.isabs(path):
        return None
    try:
        full = (root / path).resolve()
        full.relative_to(root.resolve())
        return path, full.read_bytes()
    except (OSError, ValueError):
        return None


def _sops_sources(
    root: Path, folder: str, g: Mapping[str, Any]
) -> tuple[tuple[tuple[str, bytes], ...], tuple[tuple[str, str, str, bytes], ...]]:
    envs: list[tuple[str, bytes]] = []
    names = g.get("envs") or ([g["env"]] if isinstance(g.get("env"), str) else [])
    for rel in names if isinstance(names, list) else []:
        hit = _read_inside(root, folder, str(rel))
        store = generated.store_for_path(str(rel))
        if hit is not None and generated.is_sops_file(hit[1], "dotenv" if store == "binary" else store):
            if store not in ("binary", "dotenv"):
                continue  # a YAML/JSON/INI env file: kustomize reads it as lines; not supported (docs/sops.md)
            envs.append(hit)
    files: list[tuple[str, str, str, bytes]] = []
    for spec in g.get("files") or []:
        if not isinstance(spec, str):
            continue
        key, _, rel = spec.partition("=")
        if not rel:
            key, rel = posixpath.basename(spec), spec
        hit = _read_inside(root, folder, rel)
        store = generated.store_for_path(key)
        if hit is not None and generated.is_sops_file(hit[1], store):
            files.append((key.strip(), hit[0], store, hit[1]))
    return tuple(envs), tuple(files)


def _generated_views(
    config: Config,
    toolchain: ToolPaths,
    desired: DesiredState,
    gens: list[GeneratedSecret],
    key: Path,
    decrypt: sops.Decrypt,
    views: dict[ObjectRef, DesiredObject],
) -> dict[ObjectRef, DesiredObject]:
    """``views`` plus, for each generated Secret, a copy built from its decrypted files (named
    with the hash suffix kustomize computes from them, as in the cluster) and, when that name
    changed, copies of the objects of its namespace that refer to the old name, renamed."""
    out = dict(views)
    renames: list[tuple[str, str, str]] = []  # namespace, old name, new name
    for gen in gens:
        o = out.get(gen.obj.ref, gen.obj)

        def plain(path: str, text: bytes, store: str, gen: GeneratedSecret = gen) -> bytes:
            try:
                return decrypt(path, text, key, toolchain=toolchain, source=f"{path}:1", ignore_mac=True, store=store)
            except ConfigError as err:
                raise UndecryptableError(
                    f"{err.message} (read by the secretGenerator at {gen.entry})",
                    fix=_key_fix(config, key, err),
                    ref=str(gen.obj.ref),
                    source=f"{path}:1",
                    key_file=key,
                ) from None

        envs = [(text, plain(path, text, "dotenv")) for path, text in gen.envs]
        files = [(k, plain(path, text, store)) for k, path, store, text in gen.files]
        data = o.body.get("data")
        built = {**o.body, "data": generated.rebuilt_data(data if isinstance(data, Mapping) else {}, envs, files)}
        del envs, files
        # compared as the API server keeps it: base64 without kustomize's line breaks
        body = {**built, "data": {k: str(v).replace("\n", "") for k, v in built["data"].items()}}
        name = o.ref.name
        hashed = generated.hashed_with(o.body)
        if hashed is not None:
            m = generated.HASH_SUFFIX.search(name)
            assert m is not None  # hashed_with found it
            name = f"{name[: m.start()]}-{generated.secret_hash(built, hashed)}"
            body["metadata"] = {**body["metadata"], "name": name}
            renames.append((o.ref.namespace, o.ref.name, name))
        del built
        out[gen.obj.ref] = dataclasses.replace(o, ref=dataclasses.replace(o.ref, name=name), body=body)
    for namespace, old, new in renames:
        for obj in desired.objects:
            if obj.ref.namespace != namespace or obj.ref in {g.obj.ref for g in gens}:
                continue
            current = out.get(obj.ref, obj)
            body = generated.renamed(current.body, old, new)
            if body != current.body:
                out[obj.ref] = dataclasses.replace(current, body=body)
    return out
