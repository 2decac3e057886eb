"""The walk over one desired object and its live counterpart: ownership, list keys, Secrets, additions.

:func:`compare` is verify's entry point; the rules it follows are in the package docstring
(:mod:`rebuild.recover.verify`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rebuild.core.config import IgnoreRule
from rebuild.core.managedfields import (
    DEFAULT_CLASSIFIER,
    ManagerClassifier,
    Owner,
    Ownership,
    canonical_json,
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
)
from rebuild.recover.verify.results import Change, FieldDiff, ObjectResult, Suppressed
from rebuild.recover.verify.values import equal, is_zero

# `ports` is keyed only inside a container (vs a Service); elsewhere such names are atomic lists.
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")

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
            manager, operation, sub = (str(e.get(k) or "") for k in ("manager", "operation", "subresource"))
            if classifier.classify(manager, operation, sub) == "human":
                return True
    return False


def _rule_text(rule: IgnoreRule) -> str:
    return f"kind={rule.kind} namespace={rule.namespace} name={rule.name} path={rule.path or '*'}"


# Values the shortcut compares by type and value (what JSON and YAML decode to).
_SCALARS = (str, int, float, bool)
_PLAIN = (*_SCALARS, type(None), dict, list)
_LONE_ITEM = ("", "")


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
        if not self.report_additions and not self.is_secret and self._unchanged():
            return  # most objects of a big cluster: what git declares is there as written
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
            if not is_zero(g):
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
        if not equal(path, g, lv):
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
            if len(g) != len(lv) or not all(equal(path, a, b) for a, b in zip(g, lv, strict=True)):
                self._diff(path, g, lv, "changed")
            return
        if len(g) != len(lv):
            self._diff(path, g, lv, "changed")
            return
        for i, (a, b) in enumerate(zip(g, lv, strict=True)):
            self._value((*path, i), a, b, atomic=True)

    # ---- the shortcut: nothing to report

    def _unchanged(self) -> bool:
        """True only when the walk would find no difference: every value git declares is in the
        live object with the same type and value, so no normalisation (quantities, IntOrString,
        numbers, zero values) is needed. On any doubt it answers False and the walk decides, so
        the findings are exactly the walk's. Not used when additions are looked for (a person's
        manager) nor for Secrets (compared decoded)."""
        lm = self.live.get("metadata")
        live_meta: Mapping[str, Any] = lm if isinstance(lm, Mapping) else {}
        for key, g in self.desired.body.items():
            if key in SKIP_TOP:
                continue
            if key == "metadata":
                if isinstance(g, Mapping):  # (else the walk compares nothing of it)
                    for mk, gv in g.items():
                        if mk not in SKIP_META and not self._same(("metadata", mk), gv, live_meta.get(mk, ABSENT), False):
                            return False
                continue
            if not self._same((key,), g, self.live.get(key, ABSENT), False):
                return False
        return True

    def _same(self, path: FieldPath, g: Any, lv: Any, atomic: bool) -> bool:
        """:meth:`_value` would emit nothing for ``g`` and ``lv`` (False: it might)."""
        if g is None:
            return True
        if lv is ABSENT or lv is None:
            return is_zero(g)
        tg = type(g)
        if tg is dict:
            if type(lv) is not dict:
                return False
            for key, gv in g.items():
                if not self._same((*path, key), gv, lv.get(key, ABSENT), atomic):
                    return False
            return True
        if tg is list:
            return type(lv) is list and len(g) == len(lv) and self._same_list(path, g, lv, atomic)
        return tg in _SCALARS and tg is type(lv) and g == lv

    def _same_list(self, path: FieldPath, g: list[Any], lv: list[Any], atomic: bool) -> bool:
        """:meth:`_list` would emit nothing; ``g`` and ``lv`` have the same length."""
        if any(type(x) not in _PLAIN for x in g):
            return False
        name = path[-1] if path and isinstance(path[-1], str) else ""
        keys = None if atomic else self._list_keys(path, name)
        if name in SET_LISTS and not atomic:
            return all(type(x) is str for x in g) and g == lv
        if keys is not None:
            # The walk pairs each git item with the first live item of the same merge key: the
            # items must pair up in order, each key once.
            seen: set[tuple[str, str] | None] = set()
            for a, b in zip(g, lv, strict=True):
                if type(a) is not dict or type(b) is not dict:
                    return False
                for k in keys:
                    want, have = a.get(k, KEY_DEFAULTS.get(k)), b.get(k, KEY_DEFAULTS.get(k))
                    if want is None or type(want) is not type(have) or want != have:
                        return False
                # a stand-in segment for a lone item (only its being a selector matters below it)
                sel = _item_selector(a, keys) if len(g) > 1 else _LONE_ITEM
                if sel in seen:
                    return False
                seen.add(sel)
                if not self._same((*path, sel or _LONE_ITEM), a, b, False):
                    return False
            return True
        if all(type(x) in _SCALARS or x is None for x in g):
            return all(type(a) is type(b) and a == b for a, b in zip(g, lv, strict=True))
        return all(self._same((*path, i), a, b, True) for i, (a, b) in enumerate(zip(g, lv, strict=True)))

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
