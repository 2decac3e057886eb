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
- without ``targetPath`` the text is read by ``chartutil.ReadValues`` (sigs.k8s.io/yaml v1.6.0:
  goyaml.v2's YAML 1.1 resolution, where ``y``/``on``/``no`` are booleans, ``1e3`` a float and
  ``12:30:00`` text, unlike PyYAML's; keys made text (``true``, ``1``); the first document; a
  mapping; numbers become float64) and deep-merged over what came before (``MergeMaps``:
  mappings merge key by key into new maps, anything else, a map of ``b`` included, is taken as
  is, the same object);
- with ``targetPath`` the inline values are first merged in, then the text is set at that path by
  Helm's ``strvals.ParseInto`` (``ParseIntoString`` when the text is wrapped in quotes, which are
  trimmed): ``true``/``false``/``null`` and decimal integers without a leading zero are typed
  (an exact int64), anything else is a string. strvals writes into the maps on its path, and
  when one of them is a map of ``spec.values`` that ``MergeMaps`` took as is, git's own values
  are changed: the final merge then keeps the targetPath's value (this module copies git's
  values first and writes through the copy alike);
- last, ``spec.values`` are merged over the result.

tests/unit/test_helm_values_from.py holds digests that helm-controller's own Go functions computed
for the same inputs (a throwaway program built from the module cache its build fills).

Not modelled (the digest is then "not computed", with the reason): an object git does not
declare (made by a Pulumi stack or by hand: rebuild cannot know its content), a ``targetPath``
with list indexes or escapes, a value with a comma or a ``{`` list (strvals syntax), YAML merge
keys, explicit tags other than ``!!str``/``!!int``/``!!float``/``!!bool``/``!!null``; values
helm-controller itself cannot read (``.inf``/``.nan``, a ``null`` or duplicate key) are
"not computed" too, with the release failing in the cluster.
"""

from __future__ import annotations

import base64
import binascii
import copy
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import yaml

from rebuild.adapters.sops import is_sops_document
from rebuild.core.model import DesiredObject, ObjectRef
from rebuild.core.yamlload import MAX_NODES
from rebuild.desired.helm import VALUES_FROM_KINDS, GoInt, HelmReleasePlan, ValuesRef, go_scalar, values_digest

# (kind, namespace, name) -> the object as git declares it (a Secret decrypted), or None: not in git
ValuesLookup = Callable[[str, str, str], Mapping[str, Any] | None]

# libyaml's composer when present, as rebuild.core.yamlload uses it
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# PyYAML's implicit tag of a scalar (typed here: PyYAML's resolver is not)
_implicit_tag = cast(Callable[[type, str, tuple[bool, bool]], str], yaml.resolver.Resolver().resolve)
_STR, _BOOL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:bool"
_TYPED: dict[str, type | tuple[type, ...]] = {
    "tag:yaml.org,2002:int": int,
    "tag:yaml.org,2002:float": (int, float),
    _BOOL: bool,
    "tag:yaml.org,2002:null": type(None),
}
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
    # a copy of git's values that a targetPath may write through, as in helm-controller (set_path)
    spec_values: dict[str, Any] = copy.deepcopy(dict(inline or {}))
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
    """``chartutil.ReadValues``: the first YAML document, a mapping (empty text: no values), its
    plain scalars resolved as goyaml.v2 resolves them (:func:`rebuild.desired.helm.go_scalar`) and
    its keys turned into text as sigs.k8s.io/yaml turns them (``true``, ``null``, ``1``)."""
    if not text.strip():
        return {}
    try:
        node = next(iter(yaml.compose_all(text, Loader=_Loader)), None)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}" if mark is not None else "a parse error"
        raise _Unresolved(f"{what}: its values are not valid YAML ({at})") from None
    walker = _GoYaml(what)
    data = walker.value(node) if node is not None else None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _Unresolved(f"{what}: its values are not a YAML mapping")
    return data


class _GoYaml:
    """PyYAML's node tree read with goyaml.v2's scalar rules (see :func:`read_values`)."""

    def __init__(self, what: str) -> None:
        self.what, self.count = what, 0

    def value(self, node: yaml.Node) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _Unresolved(f"{self.what}: its values expand to too many YAML nodes")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(n) for n in node.value]
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in node.value:
                if k.tag == "tag:yaml.org,2002:merge":
                    raise _Unresolved(f"{self.what}: its values use a YAML merge key (<<), not modelled here")
                key = self.value(k)
                text = "true" if key is True else "false" if key is False else "null" if key is None else str(key)
                if isinstance(key, (dict, list)) or text in out:
                    line = k.start_mark.line + 1
                    raise _Unresolved(f"{self.what}: its values have a duplicate or non-scalar key (line {line})")
                out[text] = self.value(v)
            return out
        raise _Unresolved(f"{self.what}: its values hold a YAML node not modelled here")

    def scalar(self, node: yaml.ScalarNode) -> Any:
        plain = not node.style  # libyaml gives "" for plain, PyYAML None
        implicit = _implicit_tag(yaml.ScalarNode, node.value, (plain, not plain))
        if node.tag == implicit:  # no explicit tag: goyaml.v2 resolves a plain scalar, the rest is text
            value = go_scalar(node.value) if plain else node.value
        elif node.tag == _STR:
            value = node.value
        elif node.tag in _TYPED:  # !!int '7' and the like: what goyaml.v2 reads the text as, if that type
            value = go_scalar(node.value)
            if not isinstance(value, _TYPED[node.tag]) or isinstance(value, bool) != (node.tag == _BOOL):
                raise _Unresolved(f"{self.what}: a value tagged {node.tag} (line {node.start_mark.line + 1}) not modelled here")
        else:
            raise _Unresolved(f"{self.what}: a value tagged {node.tag} (line {node.start_mark.line + 1}) not modelled here")
        if isinstance(value, float) and not math.isfinite(value):
            # sigs.k8s.io/yaml converts the values to JSON, which has no .inf or .nan: helm-controller fails
            raise _Unresolved(f"{self.what}: its values hold .inf or .nan (line {node.start_mark.line + 1}), which JSON cannot")
        return value


def merge_maps(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """fluxcd/pkg ``chartutil.MergeMaps``: ``b`` over ``a``, mappings merged key by key into new
    maps; any other value of ``b``, a mapping included, is taken as is (the same object, as Go
    takes the same map), which :func:`set_path` then writes through."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_maps(out[k], v)
        else:
            out[k] = v
    return out


def set_path(values: dict[str, Any], path: str, text: str, what: str) -> None:
    """``ReplacePathValue``: ``strvals.ParseInto("<path>=<text>")`` for the syntax modelled here.

    Like strvals, it writes into the maps it walks through, even when one of them is a map of
    ``spec.values`` that ``merge_maps`` handed over as is: helm-controller's composition then sees
    the value there too, so the final merge of ``spec.values`` does not take it back."""
    quoted = len(text) >= 1 and text[0] == text[-1] and text[0] in "'\""
    if quoted:
        text = text.strip("'\"")  # strings.Trim with both quote characters, as ReplacePathValue does
    segments = path.split(".")
    if not all(_PATH_SEGMENT.match(seg) for seg in segments):
        raise _Unresolved(f"{what}: targetPath {path!r} uses list indexes or escapes, not modelled here")
    if "," in text or "\\" in text or text.startswith("{"):
        raise _Unresolved(f"{what}: the value for targetPath {path} uses strvals list or escape syntax, not modelled here")
    node = values
    for seg in segments[:-1]:
        nxt = node.setdefault(seg, {})
        if not isinstance(nxt, dict):
            raise _Unresolved(f"{what}: targetPath {path} goes through {seg}, which is not a mapping; helm-controller fails")
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
        return GoInt(0)
    if text and text[0] != "0" and _DECIMAL.match(text):
        n = int(text)
        if -(2**63) <= n < 2**63:
            return GoInt(n)
    return text
