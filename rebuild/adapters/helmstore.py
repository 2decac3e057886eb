"""What a Helm release installed, read from Helm's own record of it: the release storage Secret.

Why: `verify` has to check every object a HelmRelease rendered, and git does not list them
(the chart does, with the values). Re-rendering the chart here would need Helm's template
engine and could still disagree with what helm-controller installed; Helm records the exact
rendered manifest of each release revision in a Secret (the default ``secret`` storage driver
helm-controller uses), so that record is read instead. helm-controller v1.4.3 keeps no
inventory of its own (``status.inventory`` arrived in a later API; its v2 ``HelmReleaseStatus``
has only ``history`` snapshots naming the release, its namespace and revision), so the snapshot
picks the Secret and the Secret gives the objects.

The Secret ``sh.helm.release.v1.<release>.v<revision>`` (type ``helm.sh/release.v1``) holds the
release as base64(gzip(JSON)) in ``data.release`` (the API adds its own base64 on top). That
JSON holds the values the release was installed with, and a chart's rendered Secrets: they may
be secrets. So the Secret is decoded in memory only, and nothing but the identity of each
rendered object (apiVersion, kind, namespace, name) and the chart name and version leaves this
module; the decoded bytes are dropped before :func:`read_release` returns, never logged, never
written.

Not read: hooks (``release.hooks``; Helm deletes most of them after they ran, so they are not
"installed objects") and CRDs from a chart's ``crds/`` folder (Helm installs them outside the
release manifest).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from rebuild.adapters.kube import Kube
from rebuild.core.errors import KubeError

SECRET_TYPE = "helm.sh/release.v1"
_GZIP_MAGIC = b"\x1f\x8b\x08"
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ReleaseDecodeError(Exception):
    """The release Secret is not what Helm writes (never carries any of the Secret's content)."""


@dataclass(frozen=True)
class RenderedObject:
    """One object of a release manifest, by identity only. ``namespace`` is empty when the
    manifest leaves it out (Helm then installs a namespaced kind into the release namespace)."""

    api_version: str
    kind: str
    name: str
    namespace: str = ""


@dataclass(frozen=True)
class StoredRelease:
    """What verify needs of one stored release revision, and nothing else of it."""

    name: str
    namespace: str
    revision: int
    chart_name: str
    chart_version: str
    status: str
    objects: tuple[RenderedObject, ...]


def _map(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def secret_name(release: str, revision: int) -> str:
    """Helm's storage key: ``sh.helm.release.v1.<release>.v<revision>``."""
    return f"sh.helm.release.v1.{release}.v{revision}"


def read_release(kube: Kube, storage_namespace: str, release: str, revision: int) -> StoredRelease | None:
    """The stored revision of ``release`` (None: its Secret does not exist).

    Raises :class:`ReleaseDecodeError` when the Secret is not a Helm release record.
    """
    name = secret_name(release, revision)
    try:
        secret = kube.get("v1", "Secret", name, storage_namespace)
    except KubeError as exc:
        if exc.status == 403:
            raise ReleaseDecodeError(
                f"Secret {storage_namespace}/{name}: reading Helm's release record is forbidden ({exc.status}); "
                "give rebuild's user get on secrets in that namespace"
            ) from None
        raise
    if secret is None:
        return None
    try:
        return decode_secret(secret)
    finally:
        secret.clear()  # the values and rendered Secrets go no further than this frame


def decode_secret(secret: Mapping[str, Any]) -> StoredRelease:
    """A release Secret as the API returns it (``data.release`` base64 over Helm's encoding)."""
    rel, who = release_document(secret)
    try:
        return stored_release(rel, who)
    finally:
        rel.clear()  # the values and rendered Secrets go no further than this frame


def release_document(secret: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The release a Helm release Secret holds, as Helm's JSON (values and manifest included:
    callers keep what they need and clear it), with the Secret's name for messages.

    Raises :class:`ReleaseDecodeError`, whose message never quotes the content.
    """
    meta = _map(secret.get("metadata"))
    who = f"Secret {meta.get('namespace', '')}/{meta.get('name', '')}"
    if secret.get("type") not in (SECRET_TYPE, None):
        raise ReleaseDecodeError(f"{who} has type {secret.get('type')}, not {SECRET_TYPE}")
    data = secret.get("data")
    raw = data.get("release") if isinstance(data, Mapping) else None
    if not isinstance(raw, str):
        raise ReleaseDecodeError(f"{who} has no data.release")
    try:
        helm_encoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ReleaseDecodeError(f"{who}: data.release is not base64") from None
    return decode_document(helm_encoded, who), who


def decode_release(helm_encoded: bytes, who: str = "release") -> StoredRelease:
    """Helm's ``decodeRelease``: base64, then gzip when the magic bytes say so, then JSON."""
    rel = decode_document(helm_encoded, who)
    try:
        return stored_release(rel, who)
    finally:
        rel.clear()


def decode_document(helm_encoded: bytes, who: str = "release") -> dict[str, Any]:
    """Helm's encoding (base64, gzip when the magic bytes say so, JSON) to the release's JSON."""
    try:
        blob = base64.b64decode(helm_encoded, validate=True)
        if blob[:3] == _GZIP_MAGIC:
            blob = gzip.decompress(blob)
        rel = json.loads(blob)
    except (binascii.Error, ValueError, OSError, EOFError):
        # ValueError covers bad JSON and bad UTF-8; the message never quotes the content
        raise ReleaseDecodeError(f"{who}: data.release is not a Helm release (base64 of gzip of JSON)") from None
    if not isinstance(rel, dict):
        raise ReleaseDecodeError(f"{who}: data.release is not a Helm release object")
    return rel


def stored_release(rel: Mapping[str, Any], who: str = "release") -> StoredRelease:
    """What verify keeps of a release: its identity, chart, status and the objects' identities."""
    chart = _map(rel.get("chart"))
    chart_meta = _map(chart.get("metadata"))
    info = _map(rel.get("info"))
    manifest = rel.get("manifest")
    revision = rel.get("version")
    return StoredRelease(
        name=str(rel.get("name") or ""),
        namespace=str(rel.get("namespace") or ""),
        revision=revision if isinstance(revision, int) else 0,
        chart_name=str(chart_meta.get("name") or ""),
        chart_version=str(chart_meta.get("version") or ""),
        status=str(info.get("status") or ""),
        objects=manifest_objects(manifest if isinstance(manifest, str) else "", who),
    )


def manifest_objects(manifest: str, who: str = "release") -> tuple[RenderedObject, ...]:
    """The identity of every object in a release manifest (multi-document YAML), in order."""
    try:
        docs = list(yaml.load_all(manifest, Loader=_Loader))
    except yaml.YAMLError:
        raise ReleaseDecodeError(f"{who}: the release manifest is not YAML") from None
    out: list[RenderedObject] = []
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("kind"):
            continue
        meta = _map(doc.get("metadata"))
        out.append(
            RenderedObject(
                str(doc.get("apiVersion") or ""),
                str(doc["kind"]),
                str(meta.get("name") or ""),
                str(meta.get("namespace") or ""),
            )
        )
    return tuple(out)
