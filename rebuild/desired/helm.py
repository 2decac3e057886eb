"""A Flux HelmRelease as `plan` shows it: chart, version, source, values and their digest.

Why: a HelmRelease is one object in git but a whole release in the cluster, so a plan that
lists it as "one more object" hides what a recovery will install. This module reads a rendered
HelmRelease (``helm.toolkit.fluxcd.io/v2``, after kustomize, so a per-cluster patch of its
values is already in) and says which chart, at which version, from which source, with which
values; the same plan later lets `verify` compare the live release with git.

Values in, values out: no I/O. A HelmRelease that cannot be planned (no ``spec.chart`` and no
``spec.chartRef``, a source of a kind Flux does not support, values that are not a mapping)
is a :class:`~rebuild.desired.render.Problem` naming its file:line and the fix, never an
exception that stops `plan`.

The values digest is the one helm-controller records for a release (``status.history[*].
configDigest``, ``status.lastAttemptedConfigDigest``), so `verify` can compare it with what
the cluster reports. It is computed the way helm-controller computes it; the Go source this
follows (read in the stored copies of the repositories):

- fluxcd/helm-controller ``api/v2/helmrelease_types.go`` ``HelmRelease.GetValues``: the raw
  ``spec.values`` are decoded with ``json.Unmarshal`` into ``map[string]interface{}``, so
  every number is a float64 (an integer above 2**53 loses precision).
- fluxcd/helm-controller ``internal/reconcile/release.go`` (``ConfigDigest:
  intchartutil.DigestValues(digest.SHA256, rls.Config)``) and
  ``internal/controller/helmrelease_controller.go`` (``LastAttemptedConfigDigest =
  chartutil.DigestValues(digest.Canonical, values)``); ``digest.Canonical`` is SHA-256.
- fluxcd/pkg ``chartutil/digest.go`` ``DigestValues``: empty values digest as nothing at all
  (``valuesOrNil``), else the hash of ``Encode(values, SortMapSlice)``.
- fluxcd/pkg ``chartutil/encode.go`` ``Encode``: ``sigs.k8s.io/yaml.JSONObjectToYAMLObject``
  then the ``goyaml.v2`` encoder: the digest is over **YAML**, not JSON. JSONObjectToYAMLObject
  turns a float64 that holds an integer (int64 or uint64 range) into an integer.
- fluxcd/pkg ``chartutil/sort.go`` ``SortMapSlice``: keys sorted bytewise, recursively into
  mappings and into mappings that are items of a list (not into lists nested in lists: Go's
  map order decides those, so helm-controller's own digest is not stable there; we sort).
- go.yaml.in/yaml/v2 v2.4.2 (what sigs.k8s.io/yaml v1.6.0's ``goyaml.v2`` is) ``encode.go``
  (``stringv``: strings that would read back as another type are double-quoted, strings with a
  newline are literal blocks; ``floatv``: ``strconv.FormatFloat(f, 'g', -1, 64)``),
  ``resolve.go`` (what reads back as bool, null, int, float, timestamp), ``emitterc.go``
  (``yaml_emitter_analyze_scalar``, ``select_scalar_style``, the plain, single-quoted,
  double-quoted and literal writers, line folding at 80 columns, indentation 2, block
  sequences under a mapping key not indented) and ``yamlprivateh.go`` (printable, break).

Checked against fluxcd/pkg's ``chartutil/digest_test.go`` vectors and against that Go code run
on the values of tests/unit/test_helm_plan.py.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rebuild.core.model import DesiredObject, Source
from rebuild.desired.render.results import Problem

GROUP = "helm.toolkit.fluxcd.io"
KIND = "HelmRelease"
# spec.chart.spec.sourceRef kinds (HelmChartTemplateSpec) and spec.chartRef kinds (CrossNamespaceSourceReference).
CHART_SOURCE_KINDS = ("HelmRepository", "GitRepository", "Bucket")
CHART_REF_KINDS = ("OCIRepository", "HelmChart")
VALUES_FROM_KINDS = ("ConfigMap", "Secret")
EMPTY_DIGEST = "sha256:" + hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class ValuesRef:
    """One ``spec.valuesFrom`` entry: values read from a ConfigMap or Secret when the release is made."""

    kind: str
    name: str
    values_key: str = "values.yaml"
    target_path: str = ""
    optional: bool = False

    def __str__(self) -> str:
        key = f" key {self.values_key}" if self.values_key != "values.yaml" else ""
        at = f" at {self.target_path}" if self.target_path else ""
        return f"{self.kind} {self.name}{key}{at}{' (optional)' if self.optional else ''}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "values_key": self.values_key,
            "target_path": self.target_path,
            "optional": self.optional,
        }


@dataclass(frozen=True)
class HelmReleasePlan:
    """What a HelmRelease in git asks helm-controller to install.

    ``shape`` is ``"chart"`` (``spec.chart.spec``: chart name, version, sourceRef) or
    ``"chartRef"`` (``spec.chartRef`` to an OCIRepository or HelmChart, which then decides chart
    and version: ``chart`` and ``version`` are empty). ``version`` ``"*"`` is the latest.
    ``values_digest`` is helm-controller's config digest of the inline values; empty when values
    also come from ``values_from`` (their content is in the cluster, not in git).
    """

    namespace: str
    name: str
    source: Source
    shape: str
    chart: str
    version: str
    source_kind: str
    source_name: str
    source_namespace: str
    reconcile_strategy: str
    target_namespace: str
    release_name: str
    values_from: tuple[ValuesRef, ...] = ()
    values_digest: str = ""
    has_values: bool = False
    values_source: Source | None = None

    @property
    def latest(self) -> bool:
        return self.shape == "chart" and self.version in ("", "*")

    def describe(self) -> str:
        """One plan line: ``ns/name (file:line) chart C V from Kind ns/name, values ...``."""
        if self.shape == "chart":
            version = "* (latest)" if self.latest else self.version
            what = f"chart {self.chart} {version} from {self.source_kind} {self.source_namespace}/{self.source_name}"
        else:
            what = f"chart from {self.source_kind} {self.source_namespace}/{self.source_name} (chartRef)"
        if self.values_from:
            values = "values from " + ", ".join(str(v) for v in self.values_from)
            if self.has_values:
                values += " and inline values"
        elif self.has_values:
            values = f"values {self.values_digest[:19]}…"
            if self.values_source and self.values_source.file != self.source.file:
                values += f" (set in {self.values_source})"  # a per-cluster patch, say where
        else:
            values = "no values"
        into = f" into {self.target_namespace}" if self.target_namespace != self.namespace else ""
        return f"{self.namespace}/{self.name} ({self.source}) {what}{into}, {values}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "source": str(self.source),
            "shape": self.shape,
            "chart": self.chart,
            "version": self.version,
            "latest": self.latest,
            "chart_source": {"kind": self.source_kind, "name": self.source_name, "namespace": self.source_namespace},
            "reconcile_strategy": self.reconcile_strategy,
            "target_namespace": self.target_namespace,
            "release_name": self.release_name,
            "values_from": [v.to_dict() for v in self.values_from],
            "values": "inline" if self.has_values else "none",
            "values_source": str(self.values_source) if self.values_source else "",
            "values_digest": self.values_digest,
        }


@dataclass(frozen=True)
class HelmPlan:
    """Every HelmRelease of a desired state, planned, and the ones that cannot be, as problems."""

    releases: tuple[HelmReleasePlan, ...] = ()
    problems: tuple[Problem, ...] = ()


def is_helm_release(obj: DesiredObject) -> bool:
    return obj.ref.group == GROUP and obj.ref.kind == KIND


def plan_releases(objects: Iterable[DesiredObject]) -> HelmPlan:
    """Plan every HelmRelease among ``objects`` (others are ignored), in namespace/name order."""
    releases: list[HelmReleasePlan] = []
    problems: list[Problem] = []
    for obj in objects:
        if not is_helm_release(obj):
            continue
        got = plan_release(obj)
        if isinstance(got, Problem):
            problems.append(got)
        else:
            releases.append(got)
    releases.sort(key=lambda r: (r.namespace, r.name))
    return HelmPlan(tuple(releases), tuple(problems))


def plan_release(obj: DesiredObject) -> HelmReleasePlan | Problem:
    """One rendered HelmRelease to its plan, or the problem that keeps helm-controller from installing it."""
    namespace = obj.ref.namespace or "default"
    who = f"HelmRelease {namespace}/{obj.ref.name}"
    spec = obj.body.get("spec")
    spec = spec if isinstance(spec, dict) else {}

    def problem(path: tuple[str, ...], message: str) -> Problem:
        where = obj.source_of(path)
        return Problem(where.file, where.line, f"{who}: {message}")

    chart = spec.get("chart")
    chart_ref = spec.get("chartRef")
    if chart and chart_ref:
        return problem(("spec", "chartRef"), "sets both spec.chart and spec.chartRef; fix: keep one of them")
    if isinstance(chart_ref, dict) and chart_ref:
        kind = str(chart_ref.get("kind") or "")
        if kind not in CHART_REF_KINDS:
            return problem(
                ("spec", "chartRef", "kind"),
                f"spec.chartRef.kind {kind or '(none)'} is not supported; fix: point it at an "
                f"{' or a '.join(CHART_REF_KINDS)}, or use spec.chart.spec with a sourceRef",
            )
        if not chart_ref.get("name"):
            return problem(("spec", "chartRef"), "spec.chartRef has no name; fix: name the OCIRepository or HelmChart")
        shape, chart_name, version, strategy = "chartRef", "", "", ""
        ref: dict[str, Any] = chart_ref
    elif isinstance(chart, dict) and isinstance(chart.get("spec"), dict):
        cspec: dict[str, Any] = chart["spec"]
        source_ref = cspec.get("sourceRef")
        ref = source_ref if isinstance(source_ref, dict) else {}
        kind = str(ref.get("kind") or "")
        if kind not in CHART_SOURCE_KINDS:
            return problem(
                ("spec", "chart", "spec", "sourceRef"),
                f"spec.chart.spec.sourceRef.kind {kind or '(none)'} is not supported; fix: use one of "
                f"{', '.join(CHART_SOURCE_KINDS)} (an OCI chart: spec.chartRef to an OCIRepository)",
            )
        if not cspec.get("chart") or not ref.get("name"):
            return problem(
                ("spec", "chart", "spec"),
                "spec.chart.spec needs chart and sourceRef.name; fix: name the chart and its source",
            )
        shape, chart_name = "chart", str(cspec["chart"])
        version = str(cspec.get("version") or "*")
        strategy = str(cspec.get("reconcileStrategy") or "ChartVersion")
    else:
        return problem(
            ("spec",),
            "has neither spec.chart.spec nor spec.chartRef, so helm-controller has no chart to install; "
            "fix: add spec.chart.spec (chart, version, sourceRef to a HelmRepository, GitRepository or Bucket) "
            "or spec.chartRef (kind OCIRepository or HelmChart, name)",
        )

    values_from: list[ValuesRef] = []
    for i, entry in enumerate(spec.get("valuesFrom") or []):
        if not isinstance(entry, dict) or entry.get("kind") not in VALUES_FROM_KINDS or not entry.get("name"):
            return problem(
                ("spec", "valuesFrom"),
                f"spec.valuesFrom[{i}] must name a ConfigMap or Secret (kind, name); fix: set kind and name",
            )
        values_from.append(
            ValuesRef(
                str(entry["kind"]),
                str(entry["name"]),
                str(entry.get("valuesKey") or "values.yaml"),
                str(entry.get("targetPath") or ""),
                bool(entry.get("optional") or False),
            )
        )
    values = spec.get("values")
    if values is not None and not isinstance(values, dict):
        return problem(("spec", "values"), "spec.values must be a mapping of chart values; fix: write them as key: value")
    digest = "" if values_from else values_digest(values)
    return HelmReleasePlan(
        namespace=namespace,
        name=obj.ref.name,
        source=obj.source,
        shape=shape,
        chart=chart_name,
        version=version,
        source_kind=str(ref.get("kind")),
        source_name=str(ref.get("name")),
        source_namespace=str(ref.get("namespace") or namespace),
        reconcile_strategy=strategy,
        target_namespace=str(spec.get("targetNamespace") or namespace),
        release_name=release_name(obj.ref.name, spec),
        values_from=tuple(values_from),
        values_digest=digest,
        has_values=bool(values),
        values_source=obj.source_of(("spec", "values")) if values else None,
    )


def release_name(name: str, spec: Mapping[str, Any]) -> str:
    """helm-controller's ``GetReleaseName``: spec.releaseName, else ``[targetNamespace-]name``."""
    if spec.get("releaseName"):
        return str(spec["releaseName"])
    target = spec.get("targetNamespace")
    return f"{target}-{name}" if target else name


# --------------------------------------------------------------------------- the digest


def values_digest(values: Mapping[str, Any] | None) -> str:
    """``chartutil.DigestValues(digest.Canonical, values)``: ``sha256:<hex>`` of their goyaml.v2 encoding."""
    return "sha256:" + hashlib.sha256(encode_values(values)).hexdigest()


def encode_values(values: Mapping[str, Any] | None) -> bytes:
    """The bytes helm-controller hashes: empty for no values, else the sorted goyaml.v2 document."""
    if not values:
        return b""
    em = _Emitter()
    em.node(_normalise(dict(values)), root=True)
    em.write_indent()  # document end
    return "".join(em.out).encode("utf-8")


def _normalise(value: Any) -> Any:
    """The value as Go holds it after json.Unmarshal and JSONObjectToYAMLObject, mappings sorted.

    Returns dicts (sorted), lists, or scalars as ``(text, requested_style)``.
    """
    if isinstance(value, Mapping):
        items = {_key(k): _normalise(v) for k, v in value.items()}
        return {k: items[k] for k in sorted(items)}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if value is None:
        return ("null", _PLAIN)
    if isinstance(value, bool):
        return ("true" if value else "false", _PLAIN)
    if isinstance(value, (int, float)):
        return (_number(value), _PLAIN)
    if isinstance(value, (datetime.date, datetime.datetime)):
        value = value.isoformat()  # Kubernetes keeps an unquoted timestamp a string
    return _string(str(value))


def _key(k: Any) -> str:
    if isinstance(k, bool):
        return "true" if k else "false"
    if k is None:
        return "null"
    return str(k)


class GoInt(int):
    """An integer Go holds as an int64 (Helm's strvals typing of a ``targetPath`` value), not a
    float64 from JSON: encoded exactly, however large."""


def _number(n: int | float) -> str:
    if isinstance(n, GoInt):
        return str(int(n))
    try:
        f = float(n)  # json.Unmarshal: every number is a float64
    except OverflowError:
        f = math.inf if n > 0 else -math.inf
    if math.isnan(f):
        return ".nan"
    if math.isinf(f):
        return ".inf" if f > 0 else "-.inf"
    if f.is_integer() and -(2**63) <= f < 2**64:
        return str(int(f))  # JSONObjectToYAMLObject: an integral float64 becomes int64 (or uint64)
    return _format_g(f)


def _format_g(f: float) -> str:
    """``strconv.FormatFloat(f, 'g', -1, 64)``: shortest digits; %e when the exponent is < -4 or >= 6."""
    sign, digit_tuple, exponent = Decimal(repr(f)).as_tuple()
    digits = "".join(str(d) for d in digit_tuple).rstrip("0") or "0"
    assert isinstance(exponent, int)
    dp = len(digit_tuple) + exponent  # position of the decimal point relative to the digits
    neg = "-" if sign else ""
    exp = dp - 1
    if exp < -4 or exp >= 6:  # shortest: eprec = 6 (strconv/ftoa.go)
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{neg}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return f"{neg}{digits}{'0' * (dp - len(digits))}"
    return f"{neg}{digits[:dp]}.{digits[dp:]}"


# goyaml.v2 scalar styles (yamlh.go).
_PLAIN, _SINGLE, _DOUBLE, _LITERAL = "plain", "single", "double", "literal"
_BEST_WIDTH = 80
_BEST_INDENT = 2

_BASE60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_GO_INT = re.compile(r"^[-+]?(0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)$")
_GO_DOT_FLOAT = re.compile(r"^\.[0-9]+([eE][-+]?[0-9]+)?$")
_TS_DATE = r"(\d{4})-(\d{1,2})-(\d{1,2})"
_TS_FRAC = r"(?:[.,]\d+)?"
_TIMESTAMPS = (
    re.compile(rf"^{_TS_DATE}[Tt](\d{{1,2}}):(\d{{1,2}}):(\d{{1,2}}){_TS_FRAC}(?:Z|[+-](\d{{2}}):(\d{{2}}))$"),
    re.compile(rf"^{_TS_DATE} (\d{{1,2}}):(\d{{1,2}}):(\d{{1,2}}){_TS_FRAC}()()$"),
    re.compile(rf"^{_TS_DATE}()()()()()$"),
)


def _string(s: str) -> tuple[str, str]:
    """``encoder.stringv``: the style goyaml.v2 asks for before the emitter's own checks."""
    if "\n" in s:
        return (s, _LITERAL)
    if _resolves_to_str(s) and not (s[:1] in "+-0123456789" and s and ":" in s and _BASE60.match(s)):
        return (s, _PLAIN)
    return (s, _DOUBLE)


def _resolves_to_str(s: str) -> bool:
    """``resolve("", s)`` returns !!str: written plain, ``s`` would read back as the same string."""
    return _go_resolve(s)[0]


_GO_RESOLVE_VALUES: dict[str, Any] = {
    **dict.fromkeys("y Y yes Yes YES true True TRUE on On ON".split(), True),
    **dict.fromkeys("n N no No NO false False FALSE off Off OFF".split(), False),
    **dict.fromkeys(["", "~", "null", "Null", "NULL"], None),
    **dict.fromkeys(".nan .NaN .NAN".split(), math.nan),
    **dict.fromkeys(".inf .Inf .INF +.inf +.Inf +.INF".split(), math.inf),
    **dict.fromkeys("-.inf -.Inf -.INF".split(), -math.inf),
}


def go_scalar(s: str) -> Any:
    """goyaml.v2 ``resolve("", s)`` of a plain scalar as sigs.k8s.io/yaml hands it on (YAML 1.1:
    ``y``/``on``/``no`` are booleans, ``1e3`` a float, ``0x1F`` and ``012`` integers, ``12:30``
    and timestamps stay text), unlike PyYAML's resolver (``y`` text, ``1e3`` text, ``12:30`` an int)."""
    return _go_resolve(s)[1]


def _go_resolve(s: str) -> tuple[bool, Any]:
    """``(resolves to !!str, value)`` by go.yaml.in/yaml/v2 v2.4.2 ``resolve.go``; a timestamp is
    not !!str but its value is its text (decoded into interface{}, goyaml.v2 keeps it as text)."""
    if s in _GO_RESOLVE_VALUES:
        return False, _GO_RESOLVE_VALUES[s]
    first = s[:1]
    if first == ".":
        dot_float = bool(_GO_DOT_FLOAT.match(s)) and not math.isinf(float(s))
        return (False, float(s)) if dot_float else (True, s)
    if first not in "+-0123456789":  # "yYnNtTfFoO~" not in the map, and any other first character
        return True, s
    if _timestamp(s):
        return False, s
    plain = s.replace("_", "")
    if _GO_INT.match(plain):
        body = plain.lstrip("+-")
        value = int(body, 0) if body[:2].lower() in ("0x", "0b", "0o") else int(body, 8 if body.startswith("0") else 10)
        value = -value if plain.startswith("-") else value
        if -(2**63) <= value < 2**63 or (not plain.startswith(("+", "-")) and 0 <= value < 2**64):
            return False, value
    if _YAML_FLOAT.match(plain) and not math.isinf(float(plain)):
        return False, float(plain)
    return True, s


def _timestamp(s: str) -> bool:
    """``parseTimestamp``: the time.Parse layouts goyaml.v2 tries, with Go's range checks."""
    for pattern in _TIMESTAMPS:
        m = pattern.match(s)
        if not m:
            continue
        year, month, day = int(m[1]), int(m[2]), int(m[3])
        try:
            datetime.date(year or 2000, month, day)  # Go accepts year 0 (a leap year, like 2000)
        except ValueError:
            return False
        nums = [int(g) for g in m.groups()[3:] if g]
        limits = (24, 60, 60, 25, 61)  # time.Parse: zone offsets up to 24:60
        return all(n < lim for n, lim in zip(nums, limits, strict=False))
    return False


def _printable(c: str) -> bool:
    o = ord(c)
    return o == 0x0A or 0x20 <= o <= 0x7E or 0xA0 <= o <= 0xD7FF or (0xE000 <= o <= 0xFFFD and o != 0xFEFF)


def _is_break(c: str) -> bool:
    return c in "\r\n\x85\u2028\u2029"


def _is_blank(c: str) -> bool:
    return c in " \t"


@dataclass
class _Scalar:
    """``yaml_emitter_analyze_scalar``'s findings."""

    multiline: bool
    flow_plain: bool
    block_plain: bool
    single_quoted: bool
    block: bool


def _analyse(value: str) -> _Scalar:
    if not value:
        return _Scalar(False, False, True, True, False)
    block_ind = flow_ind = line_breaks = special = False
    leading_space = leading_break = trailing_space = trailing_break = break_space = space_break = False
    previous_space = previous_break = False
    if value.startswith(("---", "...")):
        block_ind = flow_ind = True
    preceded_by_ws = True
    n = len(value)
    for i, c in enumerate(value):
        followed_by_ws = i + 1 >= n or _is_blank(value[i + 1]) or _is_break(value[i + 1])
        if i == 0:
            if c in "#,[]{}&*!|>'\"%@`":
                flow_ind = block_ind = True
            elif c in "?:":
                flow_ind = True
                block_ind = block_ind or followed_by_ws
            elif c == "-" and followed_by_ws:
                flow_ind = block_ind = True
        else:
            if c in ",?[]{}":
                flow_ind = True
            elif c == ":":
                flow_ind = True
                block_ind = block_ind or followed_by_ws
            elif c == "#" and preceded_by_ws:
                flow_ind = block_ind = True
        if not _printable(c):
            special = True
        if c == " ":
            leading_space = leading_space or i == 0
            trailing_space = trailing_space or i == n - 1
            break_space = break_space or previous_break
            previous_space, previous_break = True, False
        elif _is_break(c):
            line_breaks = True
            leading_break = leading_break or i == 0
            trailing_break = trailing_break or i == n - 1
            space_break = space_break or previous_space
            previous_space, previous_break = False, True
        else:
            previous_space = previous_break = False
        preceded_by_ws = _is_blank(c) or _is_break(c)
    s = _Scalar(line_breaks, True, True, True, True)
    if leading_space or leading_break or trailing_space or trailing_break:
        s.flow_plain = s.block_plain = False
    if trailing_space:
        s.block = False
    if break_space:
        s.flow_plain = s.block_plain = s.single_quoted = False
    if space_break or special:
        s.flow_plain = s.block_plain = s.single_quoted = s.block = False
    if line_breaks:
        s.flow_plain = s.block_plain = False
    if flow_ind:
        s.flow_plain = False
    if block_ind:
        s.block_plain = False
    return s


_ESCAPES = {
    0x00: "0", 0x07: "a", 0x08: "b", 0x09: "t", 0x0A: "n", 0x0B: "v", 0x0C: "f", 0x0D: "r", 0x1B: "e",
    0x22: '"', 0x5C: "\\", 0x85: "N", 0xA0: "_", 0x2028: "L", 0x2029: "P",
}  # fmt: skip


class _Emitter:
    """The part of goyaml.v2's emitter (emitterc.go) a block document of mappings, lists and scalars uses."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.column = 0
        self.indent = -1
        self.indents: list[int] = []
        self.whitespace = True
        self.indention = True
        self.flow_level = 0
        self.mapping_context = False
        self.simple_key_context = False

    def put(self, c: str) -> None:
        self.out.append(c)
        self.column += 1

    def put_break(self) -> None:
        self.out.append("\n")
        self.column = 0

    def write_break(self, c: str) -> None:
        if c == "\n":
            self.put_break()
        else:
            self.put(c)
            self.column = 0

    def write_indent(self) -> None:
        indent = max(self.indent, 0)
        if not self.indention or self.column > indent or (self.column == indent and not self.whitespace):
            self.put_break()
        while self.column < indent:
            self.put(" ")
        self.whitespace = self.indention = True

    def indicator(self, text: str, need_ws: bool, is_ws: bool, is_indention: bool) -> None:
        if need_ws and not self.whitespace:
            self.put(" ")
        for c in text:
            self.put(c)
        self.whitespace = is_ws
        self.indention = self.indention and is_indention

    def increase_indent(self, flow: bool, indentless: bool) -> None:
        self.indents.append(self.indent)
        if self.indent < 0:
            self.indent = _BEST_INDENT if flow else 0
        elif not indentless:
            self.indent += _BEST_INDENT

    def node(self, node: Any, *, root: bool = False, mapping: bool = False, simple_key: bool = False) -> None:
        self.mapping_context = mapping
        self.simple_key_context = simple_key
        if isinstance(node, dict):
            if not node or self.flow_level:
                self.indicator("{", True, True, False)
                self.indicator("}", False, False, False)
                return
            self.increase_indent(False, False)
            for k, v in node.items():
                self.write_indent()
                key = _string(k)
                if not _analyse(key[0]).multiline and len(key[0].encode("utf-8")) <= 128:
                    self.node(key, mapping=True, simple_key=True)
                    self.indicator(":", False, False, False)
                else:
                    self.indicator("?", True, False, True)
                    self.node(key, mapping=True)
                    self.write_indent()
                    self.indicator(":", True, False, True)
                self.node(v, mapping=True)
            self.indent = self.indents.pop()
        elif isinstance(node, list):
            if not node:
                self.indicator("[", True, True, False)
                self.indicator("]", False, False, False)
                return
            self.increase_indent(False, self.mapping_context and not self.indention)
            for item in node:
                self.write_indent()
                self.indicator("-", True, False, True)
                self.node(item)
            self.indent = self.indents.pop()
        else:
            self.scalar(*node)

    def scalar(self, value: str, style: str) -> None:
        a = _analyse(value)
        if self.simple_key_context and a.multiline:
            style = _DOUBLE
        if style == _PLAIN:
            if (self.flow_level and not a.flow_plain) or (not self.flow_level and not a.block_plain):
                style = _SINGLE
            if not value and (self.flow_level or self.simple_key_context):
                style = _SINGLE
        if style == _SINGLE and not a.single_quoted:
            style = _DOUBLE
        if style == _LITERAL and (not a.block or self.flow_level or self.simple_key_context):
            style = _DOUBLE
        self.increase_indent(True, False)
        breaks = not self.simple_key_context
        if style == _PLAIN:
            self.plain(value, breaks)
        elif style == _SINGLE:
            self.single_quoted(value, breaks)
        elif style == _DOUBLE:
            self.double_quoted(value, breaks)
        else:
            self.literal(value)
        self.indent = self.indents.pop()

    def plain(self, value: str, allow_breaks: bool) -> None:
        if not self.whitespace:
            self.put(" ")
        spaces = breaks = False
        for i, c in enumerate(value):
            if c == " ":
                nxt = value[i + 1] if i + 1 < len(value) else ""
                if allow_breaks and not spaces and self.column > _BEST_WIDTH and nxt != " ":
                    self.write_indent()
                else:
                    self.put(c)
                spaces = True
            elif _is_break(c):
                if not breaks and c == "\n":
                    self.put_break()
                self.write_break(c)
                self.indention = breaks = True
            else:
                if breaks:
                    self.write_indent()
                self.put(c)
                self.indention = spaces = breaks = False
        self.whitespace = self.indention = False

    def single_quoted(self, value: str, allow_breaks: bool) -> None:
        self.indicator("'", True, False, False)
        spaces = breaks = False
        n = len(value)
        for i, c in enumerate(value):
            if c == " ":
                if allow_breaks and not spaces and self.column > _BEST_WIDTH and 0 < i < n - 1 and value[i + 1] != " ":
                    self.write_indent()
                else:
                    self.put(c)
                spaces = True
            elif _is_break(c):
                if not breaks and c == "\n":
                    self.put_break()
                self.write_break(c)
                self.indention = breaks = True
            else:
                if breaks:
                    self.write_indent()
                if c == "'":
                    self.put("'")
                self.put(c)
                self.indention = spaces = breaks = False
        self.indicator("'", False, False, False)
        self.whitespace = self.indention = False

    def double_quoted(self, value: str, allow_breaks: bool) -> None:
        spaces = False
        self.indicator('"', True, False, False)
        bom = value.startswith("\ufeff")
        n = len(value)
        for i, c in enumerate(value):
            if not _printable(c) or bom or _is_break(c) or c in '"\\':
                v = ord(c)
                self.put("\\")
                if v in _ESCAPES:
                    self.put(_ESCAPES[v])
                else:
                    digits = f"x{v:02X}" if v <= 0xFF else (f"u{v:04X}" if v <= 0xFFFF else f"U{v:08X}")
                    for d in digits:
                        self.put(d)
                spaces = False
            elif c == " ":
                if allow_breaks and not spaces and self.column > _BEST_WIDTH and 0 < i < n - 1:
                    self.write_indent()
                    if value[i + 1] == " ":
                        self.put("\\")
                else:
                    self.put(c)
                spaces = True
            else:
                self.put(c)
                spaces = False
        self.indicator('"', False, False, False)
        self.whitespace = self.indention = False

    def literal(self, value: str) -> None:
        self.indicator("|", True, False, False)
        if value[:1] == " " or _is_break(value[:1] or "x"):
            self.indicator(str(_BEST_INDENT), False, False, False)
        if not _is_break(value[-1]):
            chomp = "-"
        elif len(value) == 1 or _is_break(value[-2]):
            chomp = "+"
        else:
            chomp = ""
        if chomp:
            self.indicator(chomp, False, False, False)
        self.put_break()
        self.indention = self.whitespace = True
        breaks = True
        for c in value:
            if _is_break(c):
                self.write_break(c)
                self.indention = breaks = True
            else:
                if breaks:
                    self.write_indent()
                self.put(c)
                self.indention = breaks = False
