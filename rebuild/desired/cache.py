"""Rendered sources kept in the state dir, so a run at a commit already rendered skips kustomize.

Why: rendering is most of what `capture` costs on a large repo (kustomize's build time grows
with the square of the objects in one build, kustomize#5084; then every object's origin is
parsed), and a scheduled capture almost always runs at a commit it has seen. Git already names
the content exactly: a commit sha. So the rendered objects, with their file:line sources, are
stored once per (commit, path, options) and read back in a fraction of a second.

What makes up the key (any change renders again): the format version below, a digest of
rebuild's own code (a new rebuild may render differently), the kustomize binary (path, size,
mtime), the commit sha, the source path, its label and namespace option, the reconciler, and
the Flux layer (the Kustomization's fields, components, postBuild variables and where each
is defined).

What is not cached: a render with problems (they are reported fresh every time), one that
pulled a remote base (its content is not named by the commit), and one holding values the
format cannot store (a YAML timestamp). Nothing is decrypted before this point (SOPS values are
decrypted later, in memory), but a rendered Secret holds what git or a generator gave it, and
secret values live only in encrypted state: every entry is encrypted (AES-256-GCM, the entry's
name as associated data) with a random key kept beside the entries (``key``, 0600), the way
Pulumi's file backend keeps its passphrase in the state dir. Found by the secrets audit
(tests/integration/test_secrets_audit.py), which reads every file rebuild writes. Entries are
owner-only, written atomically, and hold `marshal` over plain builtins: loading one cannot run
code, unlike pickle. At most ``KEEP`` entries are kept per state dir, least recently used
removed first.
"""

from __future__ import annotations

import gc
import hashlib
import json
import marshal
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rebuild.adapters.fs import atomic_write
from rebuild.core.model import Declared, DesiredObject, ObjectRef, Source
from rebuild.desired.render import FluxLayer, Problem, Rendered, render
from rebuild.toolchain.kubectl import KustomizeMissing, kustomize_binary

FORMAT = 1
KEEP = 32


@cache
def code_digest() -> str:
    """A digest of rebuild's own Python files: a changed renderer must not read an old entry.

    Taken from each file's name, size and modification time (as Python's bytecode cache does),
    not its content: every command that renders pays for it, and reading and hashing every
    module took tens of milliseconds. An upgrade or an edit writes the file, so it changes."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parents[1]  # the rebuild package
    for p in sorted(pkg.rglob("*.py")):
        st = p.stat()
        h.update(f"{p.relative_to(pkg)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _kustomize_id() -> str:
    try:
        exe = Path(kustomize_binary()).resolve()
        st = exe.stat()
    except (KustomizeMissing, OSError):
        return "none"
    return f"{exe}:{st.st_size}:{st.st_mtime_ns}"


def _layer(flux: FluxLayer | None) -> Any:
    if flux is None:
        return None
    return {
        "node": flux.node.file if flux.node else "",
        "fields": flux.fields,
        "components": flux.components,
        "variables": flux.variables,
        "variable_sources": {k: [s.file, s.line, s.via, repr(s.locator)] for k, s in sorted(flux.variable_sources.items())},
    }


@dataclass(frozen=True)
class RenderKey:
    """What one render depends on (besides the commit's content, which the sha names)."""

    sha: str
    path: str
    label: str = ""
    namespace: str = ""
    reconciler: str = "flux"
    flux: FluxLayer | None = None

    def digest(self) -> str:
        parts = [FORMAT, code_digest(), _kustomize_id(), self.sha, self.path, self.label, self.namespace, self.reconciler]
        text = json.dumps([*parts, _layer(self.flux)], sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- (de)serialising


def _src(s: Source) -> tuple[Any, ...]:
    return (s.file, s.line, s.via, s.locator)


def _dump(r: Rendered) -> bytes:
    objects = [
        (
            (o.ref.group, o.ref.kind, o.ref.namespace, o.ref.name),
            o.api_version,
            o.body,
            _src(o.source),
            [(path, _src(s)) for path, s in o.field_sources.items()],
            None if (d := o.declared) is None else (d.file, d.doc, d.prefix, d.name, d.namespace),
            o.applied_by,
        )
        for o in r.objects
    ]
    warnings = [(w.file, w.line, w.message) for w in r.warnings]
    return marshal.dumps((FORMAT, objects, warnings))


def _load(raw: bytes) -> Rendered:
    # An entry of 10,000 objects is hundreds of thousands of new containers at once: with the
    # cyclic garbage collector on, its collections walk them again and again while they are made,
    # and once more right after (1.2 s instead of 0.15 s for 9.8 MB, docs/measurements.md). What
    # is made here holds no cycles and lives as long as the command's desired state, so the
    # collector is off while it is made, and the result is frozen (gc.freeze: the collector no
    # longer walks it; reference counting still frees it). The price, for a long-lived process:
    # cyclic garbage pending at that moment is never collected.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        out = _build(*marshal.loads(raw))
        gc.freeze()
        return out
    finally:
        if was_enabled:
            gc.enable()


def _build(version: Any, objects: Any, warnings: Any) -> Rendered:
    if version != FORMAT:
        raise ValueError(f"format {version}")
    out = Rendered(warnings=[Problem(*w) for w in warnings])
    for ref, api_version, body, source, field_sources, declared, applied_by in objects:
        out.objects.append(
            DesiredObject.with_raw_sources(
                ObjectRef(*ref),
                api_version,
                body,
                Source(*source),
                field_sources,  # built when first read: most objects never need theirs
                None if declared is None else Declared(*declared),
                applied_by,
            )
        )
    return out


def _cacheable(r: Rendered) -> bool:
    if r.problems:
        return False
    for o in r.objects:
        if o.source.via == "remote" or any(s.via == "remote" for s in o.field_sources.values()):
            return False
    return True


# --------------------------------------------------------------------------- the cache


@dataclass
class RenderCache:
    """Entries under ``root`` (``<state>/cache/render``); ``hits``/``misses`` count this process's lookups."""

    root: Path
    hits: int = 0
    misses: int = 0

    def render(self, key: RenderKey, checkout: Path) -> Rendered:
        """The render of ``key`` at ``checkout`` (the commit ``key.sha`` extracted): from the cache, else
        rendered now and stored when it can be."""
        entry = self.root / f"{key.digest()}.bin"
        try:
            result = _load(self._open(entry))
        except (OSError, ValueError, EOFError, TypeError, InvalidTag):  # absent, cut short, another format or key
            pass
        else:
            self.hits += 1
            os.utime(entry)  # most recently used
            return result
        self.misses += 1
        result = render(checkout, key.path, label=key.label, namespace=key.namespace, flux=key.flux, reconciler=key.reconciler)
        if _cacheable(result):
            try:
                raw = _dump(result)
            except ValueError:  # a value marshal cannot store (a YAML timestamp): render again next time
                return result
            try:
                self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
                atomic_write(entry, self._seal(entry, raw))
                self._prune()
            except OSError:  # a full or read-only state dir costs a render next time, nothing else
                pass
        return result

    def _key(self) -> bytes:
        path = self.root / "key"
        try:
            key = path.read_bytes()
            if len(key) == 32:
                return key
        except FileNotFoundError:
            pass
        key = AESGCM.generate_key(bit_length=256)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, key)  # a new key: entries sealed with an old one read as misses
        return key

    def _seal(self, entry: Path, raw: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(self._key()).encrypt(nonce, raw, entry.name.encode())

    def _open(self, entry: Path) -> bytes:
        sealed = entry.read_bytes()
        key = (self.root / "key").read_bytes()
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], entry.name.encode())

    def _prune(self) -> None:
        entries = sorted(self.root.glob("*.bin"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
