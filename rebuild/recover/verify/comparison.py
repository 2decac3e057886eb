"""Desired (git) versus live: did the cluster converge to exactly what git declares?

Why this exists: after a rebuild (or at any time) rebuild has to prove that every object git
declares is in the cluster *as declared*, and every difference it reports must be one a person
can act on. A naive deep-diff drowns that in noise: the API server defaults dozens of fields,
controllers write replicas and annotations, lists come back in another order. So objects are
compared the way server-side apply sees ownership:

- Only fields git declares are compared. Identity (apiVersion, kind, metadata.name and
  namespace), ``status`` and server bookkeeping (managedFields, resourceVersion, uid,
  generation, creationTimestamp, ...) are skipped; server defaults git does not mention are
  therefore ignored without a list of defaults.
- Maps recurse. Lists Kubernetes merges by key (``x-kubernetes-list-map-keys`` of the core
  types: containers and env by name, container ports by containerPort+protocol, Service ports
  by port+protocol, volumeMounts by mountPath, ...) are matched item by item, so order does
  not matter and items others added are not compared. Set-lists (finalizers) need each git
  item present. Every other list is atomic: a list of scalars (args, command) is compared
  whole; a list of maps of the same length is compared element by element with the same
  "git-declared fields only" rule (tolerations, RBAC rules, ingress rules); a list of a
  different length is one difference holding both lists.
- Values are normalised only where Kubernetes itself treats them as equal: resource
  quantities (``500m`` == ``0.5``, ``1Gi`` == ``1073741824``, ``1`` == ``"1"``), IntOrString
  fields when both sides are numbers, int vs float of the same number, and a zero value in git
  (``{}``, ``[]``, ``""``, ``false``, ``0``) against a field absent live (Go ``omitempty``
  drops it). Everything else is strict; booleans are never numbers.
- Additions: a field git does not declare is still reported when a *human* field manager
  introduced it (``kubectl label``, a key added with ``kubectl patch``, an env var added with
  ``kubectl edit``): ownership, not presence, decides. The last-applied-configuration
  annotation is never reported.
- Ownership decides what is noise: a difference owned only by controllers (an HPA's replicas)
  is suppressed by default, while one owned by a person is kept, with its owners, so the
  message can say who changed it and when.
- Secrets: values never leave this module. ``stringData`` in git is compared with the
  base64-decoded ``data`` live and every Secret value in a difference is replaced by
  ``<redacted sha256:xxxxxxxx>`` (the first 8 hex digits of the SHA-256 of the value, enough to
  tell two values apart, too short to look one up in a table; a weak password could still be
  guessed by brute force against it, so treat reports as internal).

Not supported: strategic-merge directives (``$patch``) in rendered objects, list-map keys
of custom resources (their lists are atomic here), ``x-kubernetes-list-type: set`` other than
finalizers, JSON-path globs in ignore rules (a rule's path is a rendered prefix).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from rebuild.core.config import IgnoreRule
from rebuild.core.managedfields import (
    DEFAULT_CLASSIFIER,
    ManagerClassifier,
    Owner,
    Ownership,
    canonical_json,
    latest,
    ownership,
    selector,
    set_item,
)
from rebuild.core.model import (
    CONTAINER_PORT_KEYS,
    LIST_KEYS,
    SERVICE_PORT_KEYS,
    DesiredObject,
    FieldPath,
    ObjectRef,
    Source,
    render_path,
)

# `ports` is keyed only inside a container (vs a Service); elsewhere such names are atomic lists.
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

__all__ = [
    "LIST_KEYS",
    "FieldDiff",
    "IgnoreRule",
    "ObjectResult",
    "Suppressed",
    "compare",
    "describe",
    "message",
    "parse_quantity",
    "redact",
]

Change = Literal["changed", "missing", "added"]

WEBHOOK_KINDS = {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
# Merge-key defaults the API server fills in when git leaves them out.
KEY_DEFAULTS = {"protocol": "TCP"}
SET_LISTS = {"finalizers"}

SKIP_TOP = {"apiVersion", "kind", "status"}
SKIP_META = {
    "name",
    "namespace",
    "generateName",
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
}
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Client-side apply's copy of the whole object (a Secret's values included): never reported.
LAST_APPLIED_PATH: FieldPath = ("metadata", "annotations", LAST_APPLIED)

# Maps whose values are resource quantities (resources.limits/requests, ResourceQuota hard,
# LimitRange min/max/default..., pod overhead) and scalar quantity fields.
QUANTITY_MAPS = {"limits", "requests", "hard", "min", "max", "default", "defaultRequest", "maxLimitRequestRatio", "overhead"}
QUANTITY_FIELDS = {"sizeLimit"}
INT_OR_STRING_FIELDS = {"targetPort", "port", "maxSurge", "maxUnavailable", "minAvailable"}


@dataclass
class FieldDiff:
    """One field that differs. ``git``/``live`` are None when that side lacks the field."""

    path: FieldPath
    git: Any
    live: Any
    source: Source
    owners: list[Owner] = field(default_factory=list)
    change: Change = "changed"

    @property
    def rendered(self) -> str:
        return render_path(self.path)

    @property
    def changed_by(self) -> Owner | None:
        """The most recent owner of the live value, if any."""
        return latest(self.owners)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.rendered,
            "change": self.change,
            "git": self.git,
            "live": self.live,
            "source": str(self.source),
            "owners": [
                {"manager": o.manager, "operation": o.operation, "subresource": o.subresource, "time": o.time}
                for o in self.owners
            ],
        }


@dataclass
class Suppressed:
    """A difference that was found and deliberately not reported, and why (no silent skips)."""

    diff: FieldDiff
    reason: str


@dataclass
class ObjectResult:
    ref: ObjectRef
    present: bool
    diffs: list[FieldDiff] = field(default_factory=list)
    suppressed: list[Suppressed] = field(default_factory=list)
    source: Source | None = None

    @property
    def ok(self) -> bool:
        return self.present and not self.diffs

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": str(self.ref),
            "present": self.present,
            "ok": self.ok,
            "source": str(self.source) if self.source else None,
            "diffs": [d.to_dict() for d in self.diffs],
            "suppressed": [{**s.diff.to_dict(), "reason": s.reason} for s in self.suppressed],
        }


ControllerOwnedOk = Callable[[FieldPath, dict[str, Any]], bool]


def _always(_path: FieldPath, _live: dict[str, Any]) -> bool:
    return True


def compare(
    desired: DesiredObject,
    live: dict[str, Any] | None,
    *,
    ignore: Sequence[IgnoreRule] = (),
    controller_owned_ok: ControllerOwnedOk | None = None,
    classifier: ManagerClassifier = DEFAULT_CLASSIFIER,
    report_additions: bool = True,
) -> ObjectResult:
    """Compare one desired object with its live counterpart (None: not in the cluster).

    A difference owned only by controllers is suppressed when ``controller_owned_ok(path,
    live)`` is true (default: always). Differences matching an ignore rule are suppressed.
    Suppressed differences are kept in ``ObjectResult.suppressed`` with the reason.
    """
    result = ObjectResult(desired.ref, live is not None, source=desired.source)
    if live is None:
        return result
    # Additions are only ever reported when a human manager introduced them: without one in
    # managedFields there is nothing to look for (most objects of a big cluster), and ownership
    # is only parsed when a difference needs its owners.
    cmp = _Comparer(desired, live, None, classifier, report_additions and _any_human_manager(live, classifier))
    cmp.run()
    allow = controller_owned_ok or _always
    for d in cmp.diffs:
        rule = next((r for r in ignore if r.matches(desired.ref.kind, desired.ref.namespace, desired.ref.name, d.rendered)), None)
        if rule is not None:
            result.suppressed.append(Suppressed(d, f"ignored by verify.ignore rule {_rule_text(rule)}"))
            continue
        classes = {classifier(o) for o in d.owners}
        if d.owners and classes == {"controller"} and allow(d.path, live):
            who = ", ".join(sorted({o.manager for o in d.owners}))
            result.suppressed.append(Suppressed(d, f"owned only by controllers ({who})"))
            continue
        result.diffs.append(d)
    return result


def _any_human_manager(live: Mapping[str, Any], classifier: ManagerClassifier) -> bool:
    meta = live.get("metadata")
    entries = meta.get("managedFields") if isinstance(meta, Mapping) else None
    for e in entries or []:
        if isinstance(e, Mapping):
            owner = Owner(str(e.get("manager") or ""), str(e.get("operation") or ""), str(e.get("subresource") or ""))
            if classifier(owner) == "human":
                return True
    return False


def _rule_text(rule: IgnoreRule) -> str:
    return f"kind={rule.kind} namespace={rule.namespace} name={rule.name} path={rule.path or '*'}"


# --------------------------------------------------------------------------- comparison


class _Absent:
    """Marks a field missing on the live side (distinct from an explicit null)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


class _Comparer:
    def __init__(
        self,
        desired: DesiredObject,
        live: Mapping[str, Any],
        owned: Ownership | None,
        classifier: ManagerClassifier,
        report_additions: bool,
    ) -> None:
        self.desired = desired
        self.live = live
        self._owned = owned
        self.classifier = classifier
        self.report_additions = report_additions
        self.kind = desired.ref.kind
        self.is_secret = desired.ref.kind == "Secret" and desired.ref.group == ""
        self.diffs: list[FieldDiff] = []

    @property
    def owned(self) -> Ownership:
        if self._owned is None:
            self._owned = ownership(self.live)
        return self._owned

    # ---- emit

    def _diff(self, path: FieldPath, git: Any, live: Any, change: Change) -> None:
        owners = [] if change == "missing" else self.owned.of(path)
        self.diffs.append(FieldDiff(path, git, live, self.desired.source_of(path), owners, change))

    def _human(self, owners: Sequence[Owner]) -> bool:
        return any(self.classifier(o) == "human" for o in owners)

    # ---- walk

    def run(self) -> None:
        body = self.desired.body
        for key, g in body.items():
            if key in SKIP_TOP or (self.is_secret and key in ("data", "stringData")):
                continue
            if key == "metadata":
                self._metadata(g)
                continue
            self._value((key,), g, self.live.get(key, ABSENT), atomic=False)
        if self.is_secret:
            self._secret_data()
        if self.report_additions:
            skip = SKIP_TOP | {"metadata"} | ({"data", "stringData"} if self.is_secret else set())
            self._additions((), set(body) | skip, self.live)

    def _metadata(self, g: Any) -> None:
        lm = self.live.get("metadata")
        live_meta: Mapping[str, Any] = lm if isinstance(lm, Mapping) else {}
        if not isinstance(g, Mapping):
            return
        for key, gv in g.items():
            if key in SKIP_META:
                continue
            self._value(("metadata", key), gv, live_meta.get(key, ABSENT), atomic=False)
        if self.report_additions:
            self._additions(("metadata",), set(g) | SKIP_META, live_meta)

    def _value(self, path: FieldPath, g: Any, lv: Any, *, atomic: bool) -> None:
        if g is None:
            return  # `field: null` in git asks for nothing (kustomize drops it; SSA removes it)
        if lv is ABSENT or lv is None:
            if not _is_zero(g):
                self._diff(path, g, None, "missing")
            return
        if isinstance(g, Mapping):
            if not isinstance(lv, Mapping):
                self._diff(path, g, lv, "changed")
                return
            for key, gv in g.items():
                self._value((*path, key), gv, lv.get(key, ABSENT), atomic=atomic)
            if self.report_additions and not atomic:
                self._additions(path, set(g), lv)
            return
        if isinstance(g, list):
            if not isinstance(lv, list):
                self._diff(path, g, lv, "changed")
                return
            self._list(path, g, lv, atomic=atomic)
            return
        if not _equal(path, g, lv):
            self._diff(path, g, lv, "changed")

    def _list(self, path: FieldPath, g: list[Any], lv: list[Any], *, atomic: bool) -> None:
        name = path[-1] if path and isinstance(path[-1], str) else ""
        keys = None if atomic else self._list_keys(path, name)
        if name in SET_LISTS and not atomic:
            present = {canonical_json(x) for x in lv}
            for item in g:
                if canonical_json(item) not in present:
                    self._diff((*path, set_item(item)), item, None, "missing")
            if self.report_additions:
                mine = {canonical_json(x) for x in g}
                for item in lv:
                    if canonical_json(item) not in mine:
                        self._added_at((*path, set_item(item)), item)
            return
        if keys is not None:
            git_sel = [_item_selector(item, keys) for item in g]
            if all(s is not None for s in git_sel):
                live_by: dict[tuple[str, str], Any] = {}
                for item in lv:
                    s = _item_selector(item, keys)
                    if s is not None:
                        live_by.setdefault(s, item)
                for item, sel in zip(g, git_sel, strict=True):
                    assert sel is not None
                    self._value((*path, sel), item, live_by.get(sel, ABSENT), atomic=False)
                if self.report_additions:
                    declared = {s for s in git_sel if s is not None}
                    for s, item in live_by.items():
                        if s not in declared:
                            self._added_at((*path, s), item)
                return
            # an item without its merge key: fall through and compare the list as atomic
        if all(not isinstance(x, Mapping | list) for x in g):
            if len(g) != len(lv) or not all(_equal(path, a, b) for a, b in zip(g, lv, strict=True)):
                self._diff(path, g, lv, "changed")
            return
        if len(g) != len(lv):
            self._diff(path, g, lv, "changed")
            return
        for i, (a, b) in enumerate(zip(g, lv, strict=True)):
            self._value((*path, i), a, b, atomic=True)

    def _list_keys(self, path: FieldPath, name: str) -> tuple[str, ...] | None:
        if name == "ports":
            in_container = len(path) >= 3 and isinstance(path[-2], tuple) and path[-3] in CONTAINER_LISTS
            if in_container:
                return CONTAINER_PORT_KEYS
            if self.kind == "Service" and path == ("spec", "ports"):
                return SERVICE_PORT_KEYS
            return None
        if name == "webhooks":
            return ("name",) if self.kind in WEBHOOK_KINDS and path == ("webhooks",) else None
        return LIST_KEYS.get(name)

    # ---- additions owned by people

    def _additions(self, path: FieldPath, declared: set[str], live_map: Mapping[str, Any]) -> None:
        for key in live_map:
            if key in declared:
                continue
            if path == ("metadata", "annotations") and key == LAST_APPLIED:
                continue
            self._added_at((*path, key), live_map[key])

    def _added_at(self, path: FieldPath, value: Any) -> None:
        for p, owners in self.owned.introduced(path):
            if p == LAST_APPLIED_PATH or not self._human(owners):
                continue
            found = _resolve(value, p[len(path) :])
            if found is ABSENT:
                continue  # managedFields names a field that is no longer there
            everyone = self.owned.exact(p) or owners
            self.diffs.append(FieldDiff(p, None, found, self.desired.source_of(p), everyone, "added"))

    # ---- Secrets: compare decoded values, never emit one

    def _secret_data(self) -> None:
        body = self.desired.body
        declared: dict[str, tuple[FieldPath, bytes]] = {}
        for key, v in _mapping(body.get("data")).items():
            if v is not None:
                declared[str(key)] = (("data", str(key)), _b64(v))
        for key, v in _mapping(body.get("stringData")).items():
            if v is not None:  # stringData wins over data for the same key, as in the API
                declared[str(key)] = (("stringData", str(key)), str(v).encode())
        live_data = _mapping(self.live.get("data"))
        for key, (path, want) in declared.items():
            raw = live_data.get(key)
            if raw is None:
                self._diff(path, redact(want), None, "missing")
                continue
            have = _b64(raw)
            if have != want:
                owners = self.owned.exact(("data", key)) or self.owned.of(path)
                self.diffs.append(FieldDiff(path, redact(want), redact(have), self.desired.source_of(path), owners, "changed"))
        if self.report_additions:
            for key, raw in live_data.items():
                if key in declared:
                    continue
                owners = self.owned.exact(("data", key))
                if owners and self._human(owners):
                    p: FieldPath = ("data", key)
                    self.diffs.append(FieldDiff(p, None, redact(_b64(raw)), self.desired.source_of(p), owners, "added"))


def _mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _b64(v: Any) -> bytes:
    text = str(v)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode()  # not base64 (a mistake in git): compare the text as written


def redact(value: bytes | str) -> str:
    """The marker that stands for a Secret value: ``<redacted sha256:1a2b3c4d>``."""
    data = value.encode() if isinstance(value, str) else value
    return f"<redacted sha256:{hashlib.sha256(data).hexdigest()[:8]}>"


def _item_selector(item: Any, keys: tuple[str, ...]) -> tuple[str, str] | None:
    if not isinstance(item, Mapping):
        return None
    values: dict[str, Any] = {}
    for k in keys:
        v = item.get(k, KEY_DEFAULTS.get(k))
        if v is None:
            return None
        values[k] = v
    return selector(values)


def _resolve(value: Any, rest: FieldPath) -> Any:
    """Follow ``rest`` into a live value; ABSENT when it is not there."""
    node = value
    for seg in rest:
        if isinstance(seg, str):
            if not isinstance(node, Mapping) or seg not in node:
                return ABSENT
            node = node[seg]
        elif isinstance(seg, int):
            if not isinstance(node, list) or not 0 <= seg < len(node):
                return ABSENT
            node = node[seg]
        else:
            if not isinstance(node, list):
                return ABSENT
            node = _find_item(node, seg)
            if node is ABSENT:
                return ABSENT
    return node


def _find_item(items: list[Any], seg: tuple[str, str]) -> Any:
    if seg[0] == "value":
        for x in items:
            if canonical_json(x) == seg[1]:
                return x
    keys = tuple(seg[0].split(","))
    for x in items:
        if _item_selector(x, keys) == seg:
            return x
    return ABSENT


# --------------------------------------------------------------------------- values


def _is_zero(v: Any) -> bool:
    return v in ({}, [], "") or v is False or (type(v) is int and v == 0)


_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")
_SUFFIX: dict[str, Fraction] = {
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}


def parse_quantity(v: Any) -> Fraction | None:
    """A Kubernetes resource quantity as an exact number (None when it is not one)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return Fraction(v)
    if isinstance(v, float):
        return Fraction(str(v))
    if not isinstance(v, str):
        return None
    m = _QUANTITY.match(v.strip())
    if not m:
        return None
    number = Fraction(m.group(1))
    if m.group(2) is not None:
        return number * Fraction(10) ** int(m.group(2))
    if m.group(3):
        return number * _SUFFIX[m.group(3)]
    return number


def _is_quantity_path(path: FieldPath) -> bool:
    if path and path[-1] in QUANTITY_FIELDS:
        return True
    return len(path) >= 2 and isinstance(path[-2], str) and path[-2] in QUANTITY_MAPS


def _number(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return None


def _equal(path: FieldPath, g: Any, lv: Any) -> bool:
    if isinstance(g, bool) or isinstance(lv, bool):
        return isinstance(g, bool) and isinstance(lv, bool) and g == lv
    if _is_quantity_path(path):
        a, b = parse_quantity(g), parse_quantity(lv)
        if a is not None and b is not None:
            return a == b
    last = path[-1] if path else None
    if last in INT_OR_STRING_FIELDS:
        a2, b2 = _number(g), _number(lv)
        if a2 is not None and b2 is not None:
            return a2 == b2
    if isinstance(g, int | float) and isinstance(lv, int | float):
        return g == lv
    return type(g) is type(lv) and bool(g == lv)


# --------------------------------------------------------------------------- messages


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, str):
        if v.startswith("<redacted sha256:") or re.fullmatch(r"[\w.:/@+=-]+", v):
            return v
        return json.dumps(v)
    text = json.dumps(v, separators=(",", ":"), sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def message(diff: FieldDiff, ref: ObjectRef) -> str:
    """One line for a person: what differs, where git declares it, and who changed it live.

    ``Deployment/shop/cart: field spec.replicas is 5 live, 2 in git (apps/cart.yaml:14);
    changed by kubectl (Update, scale) at 2026-11-26T10:42:00Z``
    """
    p = diff.rendered
    if diff.change == "missing":
        text = f"{ref}: field {p} is missing live, {_fmt(diff.git)} in git ({diff.source})"
    elif diff.change == "added":
        text = f"{ref}: field {p} is {_fmt(diff.live)} live, not in git ({diff.source})"
    else:
        text = f"{ref}: field {p} is {_fmt(diff.live)} live, {_fmt(diff.git)} in git ({diff.source})"
    who = latest(diff.owners)
    if who is not None:
        text += f"; changed by {who.describe()}"
        others = sorted({o.manager for o in diff.owners if o != who})
        if others:
            text += f" (also owned by {', '.join(others)})"
    return text


def describe(result: ObjectResult) -> list[str]:
    """All messages for one object: a missing object is one line, else one line per diff."""
    if not result.present:
        where = f" (declared in {result.source})" if result.source else ""
        return [f"{result.ref}: not found in the cluster{where}"]
    return [message(d, result.ref) for d in result.diffs]
