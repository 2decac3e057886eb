"""The values helm-controller gives a HelmRelease with ``spec.valuesFrom``, composed from what git declares.

Why: real Flux repositories keep a release's values in a ConfigMap (often from a kustomize
``configMapGenerator``) or in a SOPS-encrypted Secret and point ``spec.valuesFrom`` at them. Those
objects are in git too, so the values are not "in the cluster only": composed the way
helm-controller composes them, their digest is the ``configDigest`` a release installed from git
must carry, and `verify` can tell a release installed from git's values from one installed from
a ConfigMap someone edited by hand (or from a reconcile that has not happened yet).

Values in, values out: the caller gives a lookup of the objects git declares (Secrets already
decrypted in memory, :mod:`rebuild.recover.encrypted`); nothing here reads a file or the cluster,
and no value ever reaches a message (a Secret's values are composed only to be hashed).

helm-controller v1.4.3 calls fluxcd/pkg ``chartutil.ChartValuesFromReferences`` (v1.15.0,
``values.go``), which this follows:

- refs are read in order from the HelmRelease's namespace; a ConfigMap's ``data[valuesKey]``, a
  Secret's ``data[valuesKey]`` (``stringData`` is merged into ``data`` by the API server, so it
  counts, and wins); ``valuesKey`` defaults to ``values.yaml``;
- a missing object or key is skipped when ``optional``, else the release fails (nothing to compare);
- without ``targetPath`` the text is read by ``chartutil.ReadValues`` (sigs.k8s.io/yaml: YAML 1.1,
  the first document, a mapping, numbers as float64) and deep-merged over what came before
  (``MergeMaps``: mappings merge key by key, anything else replaces);
- with ``targetPath`` the inline values are first merged in, then the text is set at that path by
  Helm's ``strvals.ParseInto`` (``ParseIntoString`` when the text is wrapped in quotes, which are
  trimmed): ``true``/``false``/``null`` and decimal integers without a leading zero are typed,
  anything else is a string;
- last, ``spec.values`` are merged over the result.

Not modelled (the digest is then "not computed", with the reason): an object git does not
declare (made by a Pulumi stack or by hand: rebuild cannot know its content), a ``targetPath``
with list indexes or escapes, a value with a comma or a ``{`` list (strvals syntax), and integers
above 2**53 in a targetPath value (the digest code reads every number as a float64).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rebuild.adapters.sops import is_sops_document
from rebuild.core.model import DesiredObject, ObjectRef
from rebuild.core.yamlload import YamlLoadError, load_all
from rebuild.desired.helm import VALUES_FROM_KINDS, HelmReleasePlan, ValuesRef, values_digest

# (kind, namespace, name) -> the object as git declares it (a Secret decrypted), or None: not in git
ValuesLookup = Callable[[str, str, str], Mapping[str, Any] | None]

_PATH_SEGMENT = re.compile(r"\A[^=\[\],.\\]+\Z")
_DECIMAL = re.compile(r"\A[-+]?[0-9]+\Z")


@dataclass(frozen=True)
class ComposedValues:
    """The digest of the values helm-controller would compose, or why it cannot be computed."""

    digest: str = ""
    unresolved: str = ""


class _Unresolved(Exception):
    pass


def values_lookup(desired: Sequence[DesiredObject], decrypted: Mapping[ObjectRef, DesiredObject]) -> ValuesLookup:
    """The ConfigMaps and Secrets git declares, by (kind, namespace, name), for ``spec.valuesFrom``.

    ``decrypted``: SOPS-encrypted objects as decrypted in memory (rebuild.recover.encrypted); one
    is found under its git name and, when decrypting renamed it (a generator's hash suffix), under
    the name the cluster has too. An encrypted one not decrypted is left out (values unknown).
    """
    found: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for o in desired:
        if o.ref.group or o.ref.kind not in VALUES_FROM_KINDS:
            continue
        plain = decrypted.get(o.ref, o)
        if is_sops_document(plain.body):
            continue
        for ref in (o.ref, plain.ref):
            found[(ref.kind, ref.namespace, ref.name)] = plain.body

    def lookup(kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        return found.get((kind, namespace, name))

    return lookup


def compose_release(release: DesiredObject, plan: HelmReleasePlan, lookup: ValuesLookup) -> ComposedValues:
    """:func:`compose` for a rendered HelmRelease and its plan (its inline ``spec.values`` last)."""
    spec = release.body.get("spec")
    inline = spec.get("values") if isinstance(spec, Mapping) else None
    return compose(plan.namespace, plan.values_from, inline if isinstance(inline, Mapping) else None, lookup)


def compose(
    namespace: str,
    refs: Sequence[ValuesRef],
    inline: Mapping[str, Any] | None,
    lookup: ValuesLookup,
) -> ComposedValues:
    """``ChartValuesFromReferences`` over the objects git declares; see the module docstring."""
    try:
        values = compose_values(namespace, refs, inline, lookup)
    except _Unresolved as why:
        return ComposedValues(unresolved=str(why))
    return ComposedValues(digest=values_digest(values))


def compose_values(
    namespace: str,
    refs: Sequence[ValuesRef],
    inline: Mapping[str, Any] | None,
    lookup: ValuesLookup,
) -> dict[str, Any]:
    """The composed values (raises ``_Unresolved`` with a reason that never quotes a value)."""
    spec_values: dict[str, Any] = dict(inline or {})
    result: dict[str, Any] = {}
    for ref in refs:
        what = f"{ref.kind} {namespace}/{ref.name}"
        obj = lookup(ref.kind, namespace, ref.name)
        if obj is None:
            raise _Unresolved(
                f"{what} is not declared in git (or is SOPS-encrypted and not decrypted), so its values are not known here"
            )
        data = object_data(ref.kind, obj)
        if data is None:
            raise _Unresolved(f"{what} key {ref.values_key} is not text (UTF-8) or not valid base64")
        if ref.values_key not in data:
            if ref.optional:
                continue
            raise _Unresolved(f"{what} has no key {ref.values_key}, so helm-controller cannot compose the values")
        text = data[ref.values_key]
        if ref.target_path:
            result = merge_maps(result, spec_values)
            set_path(result, ref.target_path, text, what)
            continue
        result = merge_maps(result, read_values(text, what))
    return merge_maps(result, spec_values)


def object_data(kind: str, obj: Mapping[str, Any]) -> dict[str, str] | None:
    """The key -> text a ConfigMap or Secret holds once applied (a Secret's data decoded, stringData over it)."""
    data = obj.get("data")
    out: dict[str, str] = {}
    if kind == "ConfigMap":
        for k, v in (data if isinstance(data, Mapping) else {}).items():
            out[str(k)] = "" if v is None else str(v)
        return out
    for k, v in (data if isinstance(data, Mapping) else {}).items():
        try:
            out[str(k)] = base64.b64decode(str(v or ""), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    string_data = obj.get("stringData")
    for k, v in (string_data if isinstance(string_data, Mapping) else {}).items():
        out[str(k)] = "" if v is None else str(v)
    return out


def read_values(text: str, what: str) -> dict[str, Any]:
    """``chartutil.ReadValues``: the first YAML document, a mapping (empty text: no values)."""
    if not text.strip():
        return {}
    try:
        docs = load_all(text)
    except YamlLoadError as exc:
        lines = ", ".join(f"line {p.line}" for p in exc.problems) or "a parse error"
        raise _Unresolved(f"{what}: its values are not valid YAML ({lines})") from None
    first = docs[0].data if docs else None
    if first is None:
        return {}
    if not isinstance(first, dict):
        raise _Unresolved(f"{what}: its values are not a YAML mapping")
    return first


def merge_maps(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """fluxcd/pkg ``chartutil.MergeMaps``: ``b`` over ``a``, mappings merged key by key."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge_maps(out[k], v)
        else:
            out[k] = v
    return out


def set_path(values: dict[str, Any], path: str, text: str, what: str) -> None:
    """``ReplacePathValue``: ``strvals.ParseInto("<path>=<text>")`` for the syntax modelled here."""
    quoted = len(text) >= 1 and text[0] == text[-1] and text[0] in "'\""
    if quoted:
        text = text.strip("'\"")  # strings.Trim with both quote characters, as ReplacePathValue does
    segments = path.split(".")
    if not all(_PATH_SEGMENT.match(s) for s in segments):
        raise _Unresolved(f"{what}: targetPath {path!r} uses list indexes or escapes, not modelled here")
    if "," in text or "\\" in text or text.startswith("{"):
        raise _Unresolved(f"{what}: the value for targetPath {path} uses strvals list or escape syntax, not modelled here")
    node = values
    for seg in segments[:-1]:
        nxt = node.get(seg, {})
        if not isinstance(nxt, dict):
            raise _Unresolved(f"{what}: targetPath {path} goes through {seg}, which is not a mapping; helm-controller fails")
        nxt = dict(nxt)
        node[seg] = nxt
        node = nxt
    node[segments[-1]] = text if quoted else typed_value(text)


def typed_value(text: str) -> Any:
    """Helm's ``strvals.typedVal`` for an unquoted value."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "null":
        return None
    if text == "0":
        return 0
    if text and text[0] != "0" and _DECIMAL.match(text):
        n = int(text)
        if -(2**63) <= n < 2**63:
            return n
    return text
