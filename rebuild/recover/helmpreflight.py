"""Helm preflight: a HelmRelease whose chart is in the repository is checked before anything is applied.

Why: helm-controller only finds out that a chart version does not exist, or that the chart
rejects the values, once a cluster has been built and Flux is running; ``up`` would then wait
out its verify timeout for a release that can never install. When the chart is in the
repository being rebuilt, rebuild can answer both questions from git in milliseconds, so
``plan``, ``up`` and ``verify`` stop in their first phase (exit 2), with the HelmRelease's
file:line and the fix, before a cluster is created: nothing is half-applied.

Which charts are checked (the others are left to the runtime backstop of
:func:`rebuild.recover.helmverify.settled_failure`, which ends the verify wait as soon as
helm-controller gives up):

- ``spec.chart.spec.sourceRef`` to the HelmRepository rebuild serves from a source's ``charts``
  folder (``flux-system/<source>-charts``, :attr:`rebuild.core.config.SourceSpec.charts_repository`):
  a chart folder of that name must exist, and ``spec.chart.spec.version`` (exact, a
  Masterminds/semver range, or ``*``/none for the latest) must match one of their Chart.yaml
  versions; source-controller takes the highest match, and so does this check.
- ``sourceRef`` to the GitRepository rebuild makes for a source (``flux-system/<source>``, or
  the bootstrap pair's when git has one): ``spec.chart.spec.chart`` is a folder of the checkout
  that must hold a Chart.yaml. Flux ignores ``version`` there (Chart.yaml decides), so do we.

Values, for a chart found: the HelmRelease's ``spec.values`` are merged over the chart's
values.yaml as Helm coalesces them (maps merge key by key, a user's ``null`` deletes the
default, anything else replaces it) and

- with a ``values.schema.json``, must validate against it (the ``jsonschema`` package; the
  schema's ``$schema`` picks the draft, draft 7 when it names none, as Helm does). Helm runs
  exactly this check at install and fails "values don't meet the specifications of the
  schema(s)". Formats are not asserted (Helm's validator treats them as annotations); a schema
  whose ``$ref`` cannot be resolved offline is not checked. Subcharts' own schemas are not read.
- without a schema, only a *shape* mismatch with the chart's defaults is refused: a mapping
  given where values.yaml holds a scalar or a list, or a scalar or list where it holds a
  mapping. Without a schema the chart's templates alone decide what a value may be, and they
  are lenient in ways a checker cannot know (``replicas: "3"`` passes through ``| int``, a
  string where the default is a list may be ``split`` or ``toYaml``'d): flagging more would
  stop valid rebuilds. A mapping against a non-mapping is different: Helm cannot merge them (it
  only warns "cannot overwrite table with non table" and keeps the user's value), and the
  templates that read a field of it (``.Values.image.tag``) fail the install.
- with ``spec.valuesFrom`` values are not checked: part of them is in the cluster, not in git;
  nor with ``spec.chart.spec.valuesFiles`` (other defaults than values.yaml: not read here).

No value is quoted in a message (a HelmRelease's values may hold a password): only its path,
its JSON type, and the schema's rule.

The check itself (:func:`preflight`) is pure: chart folders come read by
:mod:`rebuild.adapters.charts`; :func:`check` reads them from the checkouts and raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rebuild.adapters import charts as chart_files
from rebuild.adapters.charts import ChartFolder
from rebuild.core.errors import ConfigError
from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.core.progress import Progress
from rebuild.desired.helm import HelmReleasePlan, is_helm_release, plan_release
from rebuild.desired.render import Problem
from rebuild.reconcilers import flux
from rebuild.recover.helmverify import version_key, version_satisfies
from rebuild.recover.sources import DesiredState

MAX_SCHEMA_ERRORS = 5  # per HelmRelease: the first few name the problem; the rest is noise


@dataclass(frozen=True)
class Catalog:
    """The charts git holds for one Flux source object that rebuild makes.

    ``kind`` HelmRepository: every chart folder of the source's ``charts`` folder. ``kind``
    GitRepository: the chart folders HelmReleases name that exist in the checkout (by path).
    ``where`` says it for messages (``charts/ of source demo at 1a2b3c4d5e6f``).
    """

    kind: str
    namespace: str
    name: str
    where: str
    charts: tuple[ChartFolder, ...]


@dataclass(frozen=True)
class Refusal:
    """One reason a HelmRelease cannot be installed, where to change git, and how."""

    where: Source
    release: str  # "HelmRelease ns/name"
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.release}: {self.message}; fix: {self.fix}"

    def problem(self) -> Problem:
        return Problem(self.where.file, self.where.line, f"{self.release}: {self.message}; fix: {self.fix}")


@dataclass(frozen=True)
class Preflight:
    """What the preflight found: HelmReleases whose chart is in git (checked), and refusals."""

    checked: frozenset[ObjectRef] = frozenset()
    refusals: tuple[Refusal, ...] = ()


class HelmPreflightError(ConfigError):
    """A HelmRelease git declares cannot install; carries every refusal, the first in the message."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        first = refusals[0]
        more = "".join(f"\n  also: {r}" for r in refusals[1:])
        super().__init__(
            f"{first.where}: {first.release}: {first.message}; nothing was applied{more}",
            fix=first.fix,
        )
        self.refusals = list(refusals)


# --------------------------------------------------------------------------- the check (pure)


def preflight(objects: Iterable[DesiredObject], catalogs: Sequence[Catalog]) -> Preflight:
    """Check every HelmRelease whose chart a catalog holds (see the module docstring)."""
    objects = list(objects)
    by_source = {(c.kind, c.namespace, c.name): c for c in catalogs}
    declared = {(o.ref.kind, o.ref.namespace or "default", o.ref.name) for o in objects}
    checked: set[ObjectRef] = set()
    refusals: list[Refusal] = []
    for obj in objects:
        if not is_helm_release(obj):
            continue
        plan = plan_release(obj)
        if not isinstance(plan, HelmReleasePlan) or plan.shape != "chart":
            continue  # `plan` lists what keeps it from being planned; a chartRef's chart is elsewhere
        who = f"HelmRelease {plan.namespace}/{plan.name}"
        key = (plan.source_kind, plan.source_namespace, plan.source_name)
        catalog = by_source.get(key)
        if catalog is None:
            # rebuild's HelmRepository named, in another namespace than the one rebuild makes it in
            # (sourceRef.namespace left out: Flux looks in the HelmRelease's own), and git has no
            # such object either: helm-controller would wait for a source that never comes
            elsewhere = next((c for c in catalogs if c.kind == "HelmRepository" and c.name == plan.source_name), None)
            if elsewhere is not None and key not in declared:
                at = obj.source_of(("spec", "chart", "spec", "sourceRef"))
                refusals.append(
                    Refusal(
                        at,
                        who,
                        f"its chart source HelmRepository {plan.source_namespace}/{plan.source_name} does not exist: "
                        f"rebuild makes {plan.source_name} in namespace {elsewhere.namespace}",
                        f"set spec.chart.spec.sourceRef.namespace: {elsewhere.namespace} at {at}",
                    )
                )
                checked.add(obj.ref)
            continue  # otherwise a chart repository rebuild does not serve: the runtime backstop's
        found = _chart(obj, plan, catalog, who)
        checked.add(obj.ref)
        if isinstance(found, Refusal):
            refusals.append(found)
            continue
        if found is not None and not plan.values_from and not _values_files(obj):
            refusals.extend(_values(obj, found, who))
    return Preflight(frozenset(checked), tuple(refusals))


def _chart(obj: DesiredObject, plan: HelmReleasePlan, catalog: Catalog, who: str) -> ChartFolder | Refusal | None:
    """The chart folder helm-controller would install, or why there is none (None: not checkable)."""
    name_at = obj.source_of(("spec", "chart", "spec", "chart"))
    if catalog.kind == "GitRepository":
        path = chart_files.clean_path(plan.chart)
        folder = next((c for c in catalog.charts if c.path == path), None)
        if folder is None:
            return Refusal(
                name_at,
                who,
                f"no chart folder {plan.chart} (a folder with a Chart.yaml) in {catalog.where}, which GitRepository "
                f"{catalog.namespace}/{catalog.name} serves",
                f"set spec.chart.spec.chart at {name_at} to the chart's folder relative to the repository root, "
                f"or commit the chart at {path or '.'}/",
            )
        if folder.problem:
            return Refusal(name_at, who, f"chart folder {plan.chart} cannot be loaded: {folder.problem}", "fix the chart folder")
        return folder
    usable = [c for c in catalog.charts if not c.problem]
    named = [c for c in usable if c.name == plan.chart]
    if not named:
        there = ", ".join(sorted({c.name for c in usable})) or "none"
        return Refusal(
            name_at,
            who,
            f"chart {plan.chart} is not in HelmRepository {catalog.namespace}/{catalog.name} "
            f"({catalog.where}; charts there: {there})",
            f"set spec.chart.spec.chart at {name_at} to one of: {there}, or commit a chart named {plan.chart} there",
        )
    named.sort(key=lambda c: version_key(c.version) or (-1,))
    versions = ", ".join(c.version for c in named)
    if plan.latest:
        return named[-1]
    verdicts = [(c, version_satisfies(plan.version, c.version)) for c in named]
    if all(v is None for _c, v in verdicts):
        return None  # a constraint this parser does not read: helm-controller decides, the backstop watches
    matching = [c for c, v in verdicts if v]
    if matching:
        return matching[-1]  # source-controller takes the highest version that matches
    version_at = obj.source_of(("spec", "chart", "spec", "version"))
    folders = ", ".join(sorted({c.path for c in named}))
    return Refusal(
        version_at,
        who,
        f"chart {plan.chart} has no version matching {plan.version} in HelmRepository "
        f"{catalog.namespace}/{catalog.name} ({catalog.where})",
        f"versions in {folders}: {versions}; change spec.chart.spec.version at {version_at}",
    )


# --------------------------------------------------------------------------- values


def coalesce(defaults: Mapping[str, Any] | None, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """``values`` over the chart's ``defaults`` as Helm coalesces them (chartutil.CoalesceTables):
    maps merge key by key, a user's null removes the default, any other value replaces it."""
    out: dict[str, Any] = dict(values or {})
    for key, default in (defaults or {}).items():
        if key not in out:
            out[key] = default
        elif out[key] is None:
            del out[key]
        elif isinstance(out[key], Mapping) and isinstance(default, Mapping):
            out[key] = coalesce(default, out[key])
    return out


def _values(obj: DesiredObject, chart: ChartFolder, who: str) -> list[Refusal]:
    spec = obj.body.get("spec")
    given = spec.get("values") if isinstance(spec, Mapping) else None
    user: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
    label = f"chart {chart.name} {chart.version} ({chart.path})"
    if chart.schema is not None:
        return _schema_refusals(obj, chart, user, who, label)
    out = []
    for path, have, want in _shape_mismatches(user, chart.values or {}, ()):
        at = obj.source_of(("spec", "values", *path))
        dotted = _dotted(path)
        out.append(
            Refusal(
                at,
                who,
                f"spec.values.{dotted} is {have}, but {label} has {want} there in values.yaml: Helm cannot merge "
                f"them and the chart's templates that read it fail the install",
                f"write spec.values.{dotted} as {want} (like {chart.path}/values.yaml) at {at}",
            )
        )
    return out


def _values_files(obj: DesiredObject) -> bool:
    """``spec.chart.spec.valuesFiles``: source-controller replaces the chart's defaults with those
    files merged; the preflight reads values.yaml alone, so it does not judge such a release."""
    spec = obj.body.get("spec")
    chart = spec.get("chart") if isinstance(spec, Mapping) else None
    cspec = chart.get("spec") if isinstance(chart, Mapping) else None
    return isinstance(cspec, Mapping) and bool(cspec.get("valuesFiles"))


def _shape_mismatches(
    user: Mapping[str, Any], defaults: Mapping[str, Any], path: tuple[str, ...]
) -> list[tuple[tuple[str, ...], str, str]]:
    out = []
    for key, value in user.items():
        default = defaults.get(key)
        if value is None or default is None:
            continue
        here = (*path, str(key))
        if isinstance(value, Mapping) != isinstance(default, Mapping):
            out.append((here, _a(value), _a(default)))
        elif isinstance(value, Mapping):
            out.extend(_shape_mismatches(value, default, here))
    return out


def _schema_refusals(obj: DesiredObject, chart: ChartFolder, user: Mapping[str, Any], who: str, label: str) -> list[Refusal]:
    import jsonschema
    import referencing
    import referencing.exceptions

    assert chart.schema is not None
    schema = dict(chart.schema)
    schema_file = f"{chart.path}/{chart_files.SCHEMA}"
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [
            Refusal(
                obj.source_of(("spec", "chart", "spec", "chart")),
                who,
                f"{schema_file} of {label} is not a valid JSON Schema ({exc.message[:200]}): Helm refuses to install it",
                f"fix {schema_file}",
            )
        ]
    merged = coalesce(chart.values, user)
    try:
        # an empty registry: a $ref is resolved inside the schema or not at all (never fetched)
        validator = cls(schema, registry=referencing.Registry())
        errors = sorted(validator.iter_errors(merged), key=lambda e: [str(p) for p in e.absolute_path])
    except referencing.exceptions.Unresolvable:
        return []  # a $ref this machine cannot resolve offline: not checked (the backstop watches the install)
    out = []
    for err in errors[:MAX_SCHEMA_ERRORS]:
        path = tuple(str(p) for p in err.absolute_path)
        given = _given_prefix(user, path)
        at = obj.source_of(("spec", "values", *given)) if user else obj.source
        dotted = "spec.values" + ("." + _dotted(path) if path else "")
        what, fix = _describe(err, dotted, merged, path)
        out.append(
            Refusal(
                at,
                who,
                f"{dotted} {what} in {schema_file} of {label}: Helm would fail the install "
                "(values don't meet the specifications of the schema)",
                f"{fix} at {at}" if user else f"{fix} in spec.values of {obj.source}",
            )
        )
    return out


def _describe(err: Any, dotted: str, merged: Any, path: tuple[str, ...]) -> tuple[str, str]:
    """What the schema says, without quoting the value (it may be a secret), and the fix."""
    rule, want = str(err.validator), err.validator_value
    if rule == "type":
        wanted = " or ".join(want) if isinstance(want, list) else str(want)
        return f"is {_a(_at(merged, path))}, the schema wants {wanted}", f"give {dotted} a value of type {wanted}"
    if rule in ("required", "additionalProperties", "dependencies", "dependentRequired", "propertyNames"):
        return f"breaks the schema: {err.message}", f"change {dotted} as the schema says ({err.message})"
    shown = _short(want)
    return f"breaks the schema's rule {rule}: {shown}", f"change {dotted} to satisfy {rule}: {shown}"


def _given_prefix(user: Mapping[str, Any], path: tuple[str, ...]) -> tuple[str, ...]:
    """The longest prefix of ``path`` that the HelmRelease's own values hold (its line is the one to change)."""
    node: Any = user
    out: list[str] = []
    for seg in path:
        if isinstance(node, Mapping) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and seg.isdigit() and int(seg) < len(node):
            node = node[int(seg)]
        else:
            break
        out.append(seg)
    return tuple(out)


def _at(node: Any, path: tuple[str, ...]) -> Any:
    for seg in path:
        node = node[int(seg)] if isinstance(node, list) else node[seg]
    return node


def _a(value: Any) -> str:
    """A value's JSON type with its article: 'a string', 'an integer', 'a mapping'."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if value is None:
        return "null"
    return "a string"


def _short(value: Any) -> str:
    import json

    text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _dotted(path: Sequence[str]) -> str:
    return ".".join(f"[{p}]" if p.isdigit() else p for p in path).replace(".[", "[")


# --------------------------------------------------------------------------- I/O: the checkouts


def catalogs(desired: DesiredState) -> list[Catalog]:
    """The charts of every source as rebuild makes them available to Flux (read from the checkouts)."""
    wanted: set[str] = set()
    for obj in desired.objects:
        if is_helm_release(obj):
            plan = plan_release(obj)
            if isinstance(plan, HelmReleasePlan) and plan.shape == "chart" and plan.source_kind == "GitRepository":
                wanted.add(plan.chart)
    out: list[Catalog] = []
    for state in desired.sources:
        spec, root, sha = state.spec, state.checkout.path, state.checkout.sha[:12]
        if spec.charts:
            where = f"{chart_files.clean_path(spec.charts)}/ of source {spec.name} at {sha}"
            folders = tuple(chart_files.read_folders(root, spec.charts))
            out.append(Catalog("HelmRepository", flux.NAMESPACE, spec.charts_repository, where, folders))
        found = tuple(f for f in (chart_files.read_folder(root, p) for p in sorted(wanted)) if f is not None)
        where = f"source {spec.name} at {sha}"
        for ns, name in sorted({(state.flux_namespace, state.flux_repo), (flux.NAMESPACE, spec.name)}):
            out.append(Catalog("GitRepository", ns, name, where, found))
    return out


def check(desired: DesiredState, progress: Progress | None = None) -> frozenset[ObjectRef]:
    """Before anything is applied: raise HelmPreflightError (exit 2) when a HelmRelease cannot install.

    Returns the HelmReleases whose chart was found in git (verify knows their version exists).
    """
    result = preflight(desired.objects, catalogs(desired))
    if result.refusals:
        raise HelmPreflightError(result.refusals)
    if result.checked and progress:
        progress(f"desired: {len(result.checked)} HelmRelease(s) with a chart in git: chart version and values checked")
    return result.checked
