"""Which value of a HelmRelease's ``spec.values`` a drifted field of a rendered object comes from,
when that is certain enough to edit it.

Why: a person who runs ``kubectl scale`` on a Deployment a chart made has changed the chart's
output, and git holds only the chart's input. The change survives a rebuild only if it goes
into the HelmRelease's values, but rebuild does not run the chart's templates, so it cannot know
in general which value (if any) becomes which field. It writes a value back only when the
mapping is 1:1 beyond reasonable doubt, and otherwise names the HelmRelease's file:line and asks
a person to "change the chart or its values".

The 1:1 rule, for a ``changed`` field of a rendered object (the field's rendered value is the
one Helm's record of the release holds, :mod:`.rendered`):

1. The part of the field that changed is one of: a workload's ``spec.replicas``; a container's
   ``image`` as a whole, or its tag, or its repository (the rest of the reference unchanged; an
   image by digest never maps); or any other single value (a string or a number, not a boolean:
   ``true`` is everywhere).
2. Exactly one leaf of the HelmRelease's ``spec.values`` (after kustomize, so an overlay's patch
   of the values counts) holds the rendered value of that part, under a key named like it:
   ``replicas``/``replicaCount`` for replicas; ``tag``/``imageTag`` for a tag;
   ``repository``/``repo``/``imageRepository``/``image.name`` for a repository; ``image`` for a
   whole image; the field's own key for any other value (``data.greeting`` <- ``greeting``;
   case, ``-`` and ``_`` ignored). Numbers match the text a template makes of them
   (``tag: 1.27`` renders ``"1.27"``).
3. When several leaves qualify, the one whose parent keys name the object or the container
   (``worker.image.tag`` for Deployment ``rel-worker``) is taken if it is the only such one. A
   leaf whose parent keys name a component (anything but ``image``, ``deployment``,
   ``global`` ...) must name this object or container: ``worker.replicaCount`` never sets the
   replicas of ``rel-api``.
4. The leaf is not shared: no other field of the release's rendered objects would pick the same
   leaf by rules 1-3 unless it drifted to the same new value too (editing a value two
   Deployments use would change both).
5. The release in the cluster was installed from git's values (helm-controller's config digest
   equals the digest of git's ``spec.values``, when git has no ``valuesFrom``); the HelmRelease
   has no ``postRenderers`` (they may set any field); the object is not a Secret's values
   (never written).

The new leaf value keeps the leaf's type where it can (``replicas: "3"`` stays a string); an
image tag is always written as a string. ``added`` fields (the chart does not render them),
fields gone live, deletions and every case the rules reject keep the HelmRelease's file:line
and the reason, and are listed by the backport instead of edited.

Pure: values in, values out.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rebuild.capture.drift import RENDERED_BY_HELM, DriftReport, Finding, HelmOrigin, ValueEdit, parse_image
from rebuild.capture.helm.rendered import RenderedRelease
from rebuild.core.managedfields import selector
from rebuild.core.model import CONTAINER_PORT_KEYS, LIST_KEYS, SERVICE_PORT_KEYS, DesiredObject, FieldPath, ObjectRef, render_path

ValuesPath = tuple[str | int, ...]

REPLICA_KEYS = frozenset({"replicas", "replicacount", "replica"})
TAG_KEYS = frozenset({"tag", "imagetag"})
REPOSITORY_KEYS = frozenset({"repository", "repo", "imagerepository", "imagename"})
IMAGE_KEYS = frozenset({"image"})
# Parent keys that group values by what they are, not by the component they belong to.
GENERIC_PARENTS = frozenset(
    {"image", "images", "deployment", "statefulset", "daemonset", "workload", "pod", "container", "global", "app", "config"}
)
CONTAINER_LISTS = ("containers", "initContainers")
_KEY_DEFAULTS = {"protocol": "TCP"}


def norm(key: Any) -> str:
    """A key as compared: lower case, only letters and digits (``replica_count`` == ``replicaCount``)."""
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


# --------------------------------------------------------------------------- the two sides


@dataclass(frozen=True)
class Leaf:
    """One scalar of ``spec.values`` and where it is (a path inside ``spec.values``)."""

    path: ValuesPath
    value: Any

    @property
    def key(self) -> str:
        return next((norm(s) for s in reversed(self.path) if isinstance(s, str)), "")

    @property
    def parents(self) -> tuple[str, ...]:
        named = [norm(s) for s in self.path if isinstance(s, str)]
        return tuple(p for p in named[:-1] if p)

    @property
    def rendered(self) -> str:
        return render_path(("values", *self.path))

    def names(self, context: Sequence[str]) -> bool:
        """A parent key names the object or container (``worker`` in ``rel-worker``)."""
        return any(p in c for p in self.own_parents for c in context)

    @property
    def own_parents(self) -> tuple[str, ...]:
        return tuple(p for p in self.parents if p not in GENERIC_PARENTS and len(p) >= 2)


def leaves(values: Any, prefix: ValuesPath = ()) -> list[Leaf]:
    """Every scalar of a values tree (mappings and lists walked; nulls left out)."""
    out: list[Leaf] = []
    if isinstance(values, Mapping):
        for k, v in values.items():
            out.extend(leaves(v, (*prefix, str(k))))
    elif isinstance(values, list):
        for i, v in enumerate(values):
            out.extend(leaves(v, (*prefix, i)))
    elif values is not None:
        out.append(Leaf(prefix, values))
    return out


@dataclass(frozen=True)
class Field:
    """One scalar field of a rendered object, with the names that tell components apart."""

    ref: ObjectRef
    path: FieldPath
    value: Any
    context: tuple[str, ...]


def context_of(ref: ObjectRef, path: FieldPath) -> tuple[str, ...]:
    """The object's name and, inside a container, the container's name (normalised)."""
    names = [norm(ref.name)]
    for prev, seg in itertools.pairwise(path):
        if prev in CONTAINER_LISTS and isinstance(seg, tuple) and seg[0] == "name":
            names.append(norm(seg[1]))
    return tuple(n for n in names if n)


def fields(obj: DesiredObject) -> Iterator[Field]:
    """Every scalar field of a rendered object, paths as :func:`rebuild.recover.verify.compare` writes them."""
    for path, value in _walk(obj.body, (), obj.ref.kind):
        if path and path[0] in ("apiVersion", "kind", "status"):
            continue
        yield Field(obj.ref, path, value, context_of(obj.ref, path))


def _walk(node: Any, path: FieldPath, kind: str) -> Iterator[tuple[FieldPath, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _walk(v, (*path, str(k)), kind)
    elif isinstance(node, list):
        keys = _list_keys(path, kind)
        for i, item in enumerate(node):
            seg = _item_selector(item, keys) if keys else None
            yield from _walk(item, (*path, seg if seg is not None else i), kind)
    elif node is not None:
        yield path, node


def _list_keys(path: FieldPath, kind: str) -> tuple[str, ...] | None:
    name = path[-1] if path and isinstance(path[-1], str) else ""
    if name == "ports":
        if len(path) >= 3 and isinstance(path[-2], tuple) and path[-3] in CONTAINER_LISTS:
            return CONTAINER_PORT_KEYS
        return SERVICE_PORT_KEYS if kind == "Service" and path == ("spec", "ports") else None
    return LIST_KEYS.get(name)


def _item_selector(item: Any, keys: tuple[str, ...]) -> tuple[str, str] | None:
    if not isinstance(item, Mapping):
        return None
    found: dict[str, Any] = {}
    for k in keys:
        v = item.get(k, _KEY_DEFAULTS.get(k))
        if v is None:
            return None
        found[k] = v
    return selector(found)


# --------------------------------------------------------------------------- values as templates render them


def as_text(value: Any) -> str | None:
    """The text a Helm template makes of a value (``{{ .Values.x }}``): Go's ``%v`` of what
    JSON decoding made of it (every number a float64). None for what is not a scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return value
    return None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _same_scalar(leaf: Any, rendered: Any) -> bool:
    """A leaf renders as this value: equal numbers, or equal text (templates often quote)."""
    if isinstance(rendered, bool) or isinstance(leaf, bool):
        return False
    if _number(leaf) and _number(rendered):
        return bool(leaf == rendered)
    if isinstance(rendered, str):
        return as_text(leaf) == rendered
    return False


def _retype(leaf: Any, new: Any) -> Any | None:
    """``new`` in the type of the leaf it replaces; None when that would change what it means."""
    if isinstance(new, bool) or new is None:
        return None
    if isinstance(leaf, str):
        return as_text(new)
    if _number(leaf) and _number(new):
        return new
    if _number(leaf) and isinstance(new, str):
        return None  # the chart quotes it; writing a string where a number was is a guess
    return None


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
    return text if len(text) <= 40 else text[:39] + "…"


# --------------------------------------------------------------------------- parts of a field one value can set


def _is_image(path: FieldPath) -> bool:
    return len(path) >= 3 and path[-1] == "image" and isinstance(path[-2], tuple) and path[-3] in CONTAINER_LISTS


def _image_part(value: Any, index: int) -> str | None:
    if not isinstance(value, str):
        return None
    name, tag, digest = parse_image(value)
    if digest is not None:
        return None
    return name if index == 0 else tag


@dataclass(frozen=True)
class Part:
    """A part of a rendered field that one value may set: how it is named in values, how it is read."""

    what: str
    key_ok: Callable[[Leaf], bool]
    read: Callable[[FieldPath, Any], Any]  # the part of a field's value; None: not such a field
    same: Callable[[Any, Any], bool]  # (leaf value, rendered part): the leaf renders as it
    write: Callable[[Any, Any], Any]  # (leaf value, new part): the new leaf value; None: cannot


REPLICAS = Part(
    "replicas",
    lambda leaf: leaf.key in REPLICA_KEYS,
    lambda path, v: v if path == ("spec", "replicas") and isinstance(v, int) and not isinstance(v, bool) else None,
    lambda leaf, old: (
        (isinstance(leaf, int) and not isinstance(leaf, bool) and leaf == old) or (isinstance(leaf, str) and leaf == str(old))
    ),
    lambda leaf, new: new if isinstance(leaf, int) and not isinstance(leaf, bool) else str(new),
)
IMAGE = Part(
    "image",
    lambda leaf: leaf.key in IMAGE_KEYS,
    lambda path, v: v if _is_image(path) and isinstance(v, str) and parse_image(v)[2] is None else None,
    lambda leaf, old: as_text(leaf) == old,
    lambda _leaf, new: str(new),
)
IMAGE_TAG = Part(
    "image tag",
    lambda leaf: leaf.key in TAG_KEYS,
    lambda path, v: _image_part(v, 1) if _is_image(path) else None,
    lambda leaf, old: as_text(leaf) == old,
    lambda _leaf, new: str(new),
)
IMAGE_REPOSITORY = Part(
    "image repository",
    lambda leaf: leaf.key in REPOSITORY_KEYS or (leaf.key == "name" and any("image" in p for p in leaf.parents)),
    lambda path, v: _image_part(v, 0) if _is_image(path) else None,
    lambda leaf, old: as_text(leaf) == old,
    lambda _leaf, new: str(new),
)


def value_part(key: str) -> Part:
    """Any other single value: the leaf has the field's own key."""
    return Part(
        f"value of {key}",
        lambda leaf: leaf.key == key,
        lambda path, v: v if path and norm(path[-1]) == key and (_number(v) or isinstance(v, str)) else None,
        _same_scalar,
        _retype,
    )


def parts_for(path: FieldPath) -> list[list[Part]]:
    """The ways values may set a field, each a list of parts that must all map (tried in order)."""
    if path == ("spec", "replicas"):
        return [[REPLICAS]]
    if _is_image(path):
        return [[IMAGE], [IMAGE_REPOSITORY, IMAGE_TAG]]
    last = path[-1] if path else None
    if isinstance(last, str) and norm(last):
        return [[value_part(norm(last))]]
    return []


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Target:
    """One drifted field: its rendered (git) and live values."""

    field: Field
    live: Any


def choose(part: Part, values: Sequence[Leaf], f: Field, old: Any) -> Leaf | str:
    """The one leaf of ``values`` that renders as ``old`` in ``f`` (rules 2 and 3), or why there is none."""
    found = [leaf for leaf in values if part.key_ok(leaf) and part.same(leaf.value, old)]
    if not found:
        return f"no key of spec.values named for the {part.what} holds {_short(old)}"
    if len(found) > 1:
        named = [leaf for leaf in found if leaf.names(f.context)]
        if len(named) != 1:
            which = ", ".join(leaf.rendered for leaf in found)
            return f"{len(found)} values hold {_short(old)} ({which}); which one the chart renders here is not known"
        found = named
    leaf = found[0]
    if leaf.own_parents and not leaf.names(f.context):
        return f"{leaf.rendered} holds {_short(old)}, but {'.'.join(leaf.own_parents)} does not name {f.ref}"
    return leaf


def map_field(
    target: Target,
    values: Sequence[Leaf],
    rendered: Sequence[Field],
    drifted: Mapping[tuple[ObjectRef, FieldPath], Any],
    value_source: Callable[[ValuesPath], Any],
) -> tuple[ValueEdit, ...] | str:
    """The values edits that make the chart render ``target.live`` (rules 1-4), or why there are none.

    ``rendered`` is every scalar field of the release's rendered objects; ``drifted`` the live
    value of every other drifted field of the release, by (object, path); ``value_source`` gives
    the :class:`~rebuild.core.model.Source` of a leaf.
    """
    f = target.field
    options = parts_for(f.path)
    if not options:
        return "only a single value maps to spec.values"
    # The first way that some value could set (an `image:` value holding the whole reference),
    # else the last (its repository and tag).
    parts = next((o for o in options if _any_candidate(o[0], values, f)), options[-1])
    return _map_parts(parts, target, values, rendered, drifted, value_source)


def _any_candidate(part: Part, values: Sequence[Leaf], f: Field) -> bool:
    old = part.read(f.path, f.value)
    return old is not None and any(part.key_ok(leaf) and part.same(leaf.value, old) for leaf in values)


def _map_parts(
    parts: Sequence[Part],
    target: Target,
    values: Sequence[Leaf],
    rendered: Sequence[Field],
    drifted: Mapping[tuple[ObjectRef, FieldPath], Any],
    value_source: Callable[[ValuesPath], Any],
) -> tuple[ValueEdit, ...] | str:
    f = target.field
    edits: list[ValueEdit] = []
    for part in parts:
        old, new = part.read(f.path, f.value), part.read(f.path, target.live)
        if old is None or new is None:
            return f"the {part.what} is not a plain value on both sides (git {_short(f.value)}, live {_short(target.live)})"
        if old == new:
            continue  # this part did not change
        leaf = choose(part, values, f, old)
        if isinstance(leaf, str):
            return leaf
        shared = _shared(part, leaf, f, values, rendered, drifted, old, new)
        if shared:
            return shared
        written = part.write(leaf.value, new)
        if written is None:
            return f"{leaf.rendered} is {_short(leaf.value)}; the live {part.what} {_short(new)} is not of that type"
        edits.append(ValueEdit(leaf.path, leaf.value, written, value_source(leaf.path)))
    if not edits:
        return "no part of the field that values set has changed"
    return tuple(edits)


def _shared(
    part: Part,
    leaf: Leaf,
    f: Field,
    values: Sequence[Leaf],
    rendered: Sequence[Field],
    drifted: Mapping[tuple[ObjectRef, FieldPath], Any],
    old: Any,
    new: Any,
) -> str:
    """Rule 4: another rendered field that the same leaf sets, and that did not drift with it."""
    for other in rendered:
        if other.ref == f.ref and other.path == f.path:
            continue
        if part.read(other.path, other.value) != old or choose(part, values, other, old) != leaf:
            continue
        live = drifted.get((other.ref, other.path))
        if live is None or part.read(other.path, live) != new:
            where = render_path(other.path)
            return f"{leaf.rendered} also renders {other.ref} {where}, which did not change with it"
    return ""


# --------------------------------------------------------------------------- findings


def why_not(f: Finding, rel: RenderedRelease) -> str:
    """The reasons, before any value is looked at, that a finding cannot map to values (rule 5)."""
    if f.kind == "deleted":
        return (
            "deleted live; to keep it deleted the chart must stop rendering it, to bring it back run "
            f"`flux reconcile helmrelease -n {rel.release.ref.namespace} {rel.release.ref.name} --force`"
        )
    if f.kind == "created":
        return "created live"
    if f.secret_value:
        return "a Secret's values are never written to git"
    if f.kind == "added":
        return "the chart does not render this field, so no value of the HelmRelease sets it today"
    if f.live is None:
        return "the field is gone live"
    if rel.stale:
        return rel.stale
    spec = rel.release.body.get("spec")
    if isinstance(spec, Mapping) and spec.get("postRenderers"):
        return "the HelmRelease has spec.postRenderers, which may set this field"
    return ""


def origin(
    f: Finding,
    rel: RenderedRelease,
    drifted: Mapping[tuple[ObjectRef, FieldPath], Any],
    rendered: Sequence[Field] | None = None,
) -> HelmOrigin:
    """The :class:`HelmOrigin` of a finding on an object ``rel`` rendered (``rendered``: every
    field of ``rel``'s objects, when the caller has them already)."""
    hr = rel.release
    base = HelmOrigin(hr.ref, hr.source)
    why = why_not(f, rel)
    if why:
        return dataclasses.replace(base, reason=why)
    assert f.path is not None
    spec = hr.body.get("spec")
    values = leaves(spec.get("values") if isinstance(spec, Mapping) else None)
    if rendered is None:
        rendered = [fld for obj in rel.objects for fld in fields(obj)]
    target = Target(Field(f.ref, f.path, f.git, context_of(f.ref, f.path)), f.live)
    got = map_field(target, values, rendered, drifted, lambda p: hr.source_of(("spec", "values", *p)))
    if isinstance(got, str):
        return dataclasses.replace(base, reason=got)
    return dataclasses.replace(base, edits=got)


def attribute(report: DriftReport, releases: Sequence[RenderedRelease]) -> None:
    """Give every finding on an object a HelmRelease rendered its :class:`HelmOrigin` (in place)."""
    owner: dict[tuple[str, str], RenderedRelease] = {(r.release.ref.namespace, r.release.ref.name): r for r in releases}
    drifted = {(f.ref, f.path): f.live for f in report.findings if f.kind == "changed" and f.path is not None}
    walked: dict[tuple[str, str], list[Field]] = {}  # each release's fields, walked once
    out: list[Finding] = []
    for f in report.findings:
        rel = _release_of(f, owner)
        if rel is None:
            out.append(f)
            continue
        key = (rel.release.ref.namespace, rel.release.ref.name)
        if key not in walked:
            walked[key] = [fld for obj in rel.objects for fld in fields(obj)]
        out.append(dataclasses.replace(f, helm=origin(f, rel, drifted, walked[key])))
    report.findings = out


def _release_of(f: Finding, owner: Mapping[tuple[str, str], RenderedRelease]) -> RenderedRelease | None:
    src = f.source
    if src is None or src.via != RENDERED_BY_HELM or len(src.locator) != 2:
        return None
    return owner.get((str(src.locator[0]), str(src.locator[1])))
