"""The objects a HelmRelease rendered, as desired objects: read from Helm's own record of the release.

Why: git holds a HelmRelease, not the Deployments and ConfigMaps its chart makes, so without
this capture would count every one of them as "not covered by git" and would never see a manual
change to one. Re-rendering the chart here would need Helm's template engine and could still
disagree with what helm-controller installed; Helm records the exact rendered manifest of every
release revision (after helm-controller's post-renderers) in its release Secret, so that record
is the desired state of the rendered objects, the way `verify` reads it for their identities
(:mod:`rebuild.adapters.helmstore`; that module keeps only identities, capture needs the bodies,
so the manifest is decoded here, with the same format and the same care).

Each rendered object becomes a :class:`~rebuild.core.model.DesiredObject` whose source is the
HelmRelease's own file:line with ``via`` :data:`~rebuild.capture.drift.RENDERED_BY_HELM` (the
chart's templates are not in the repository: that line is the one place a person can change).

The release record also holds the values the release was installed with and the chart's
rendered Secrets: it is decoded in memory only, nothing but the manifest leaves
:func:`decode_manifest`, and a rendered Secret's values are compared (and redacted) the way any
Secret's are, never written.

Pure: values in, values out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from rebuild.adapters.helmstore import ReleaseDecodeError, release_document
from rebuild.capture.drift import RENDERED_BY_HELM
from rebuild.core.model import DesiredObject, ObjectRef, Source

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class ReleaseRecord:
    """What capture keeps of one stored release revision: where it installed, and its manifest."""

    name: str
    namespace: str
    revision: int
    manifest: str


@dataclass(frozen=True)
class RenderedRelease:
    """A HelmRelease of git and the objects its latest release rendered.

    ``objects`` is empty when they could not be read (``problem`` says why). ``stale`` is set when
    the release in the cluster was installed from other values than git declares (then no drifted
    field can be said to come from a value of git's ``spec.values``).
    """

    release: DesiredObject
    objects: tuple[DesiredObject, ...] = ()
    revision: int = 0
    stale: str = ""
    problem: str = ""

    @property
    def name(self) -> str:
        return f"HelmRelease {self.release.ref.namespace}/{self.release.ref.name}"


def decode_manifest(secret: Mapping[str, Any]) -> ReleaseRecord:
    """Helm's release Secret (``data.release``: base64 by the API, over base64(gzip(JSON))) to its manifest.

    Raises :class:`ReleaseDecodeError` (whose message never quotes the content) when it is not a
    Helm release record.
    """
    rel, _ = release_document(secret)
    manifest, revision = rel.get("manifest"), rel.get("version")
    record = ReleaseRecord(
        name=str(rel.get("name") or ""),
        namespace=str(rel.get("namespace") or ""),
        revision=revision if isinstance(revision, int) else 0,
        manifest=manifest if isinstance(manifest, str) else "",
    )
    rel.clear()  # the values (and the chart) go no further than this frame
    return record


def rendered_objects(
    release: DesiredObject,
    manifest: str,
    release_namespace: str,
    namespaced: Callable[[str, str], bool],
) -> tuple[DesiredObject, ...]:
    """The objects of a release manifest, as desired objects of ``release`` (the HelmRelease).

    A namespaced object the manifest leaves without a namespace is where Helm installs it: the
    release namespace. Raises :class:`ReleaseDecodeError` for a manifest that is not YAML.
    """
    try:
        docs = list(yaml.load_all(manifest, Loader=_Loader))
    except yaml.YAMLError:
        raise ReleaseDecodeError(f"the manifest of the release of {release.ref} is not YAML") from None
    source = Source(release.source.file, release.source.line, RENDERED_BY_HELM, (release.ref.namespace, release.ref.name))
    out: list[DesiredObject] = []
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("kind") or not isinstance(doc.get("metadata"), dict):
            continue
        api_version, kind = str(doc.get("apiVersion") or ""), str(doc["kind"])
        if not doc["metadata"].get("name"):
            continue
        if not doc["metadata"].get("namespace") and namespaced(api_version, kind):
            doc["metadata"]["namespace"] = release_namespace
        out.append(DesiredObject(ObjectRef.of(doc), api_version, doc, source))
    return tuple(out)


def helm_release_of(obj: DesiredObject) -> tuple[str, str] | None:
    """(namespace, name) of the HelmRelease that rendered ``obj``; None for an object git declares."""
    if obj.source.via != RENDERED_BY_HELM or len(obj.source.locator) != 2:
        return None
    namespace, name = obj.source.locator
    return str(namespace), str(name)


def target_namespace(release: DesiredObject) -> str:
    """Where a HelmRelease installs its objects by default: ``spec.targetNamespace``, else its own namespace."""
    spec = release.body.get("spec")
    target = spec.get("targetNamespace") if isinstance(spec, Mapping) else None
    return str(target or release.ref.namespace or "default")
