"""The Helm preflight (issue 13): a chart version git does not hold, values the chart rejects,
refused with the HelmRelease's file:line and the fix before anything is applied; and the
runtime backstop's notion of a failure helm-controller will not heal by waiting.

The repositories are written the way people write them (no namespaces, four-space
indentation, an overlay patching values) and rendered by rebuild's real renderer; the chart
folders are read by the real adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters.charts import read_folder, read_folders
from rebuild.adapters.git import Checkout
from rebuild.core.config import SourceSpec
from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.desired.render import render
from rebuild.recover import helmpreflight
from rebuild.recover.helmpreflight import Catalog, HelmPreflightError, coalesce, preflight
from rebuild.recover.helmverify import settled_failure
from rebuild.recover.sources import DesiredState, SourceState

SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "replicas": {"type": "integer", "minimum": 1},
        "image": {"type": "object", "properties": {"tag": {"type": "string"}}, "required": ["tag"]},
        "mode": {"enum": ["fast", "safe"]},
    },
}


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def chart(root: Path, folder: str, name: str, version: str, *, schema: dict[str, Any] | None = None) -> None:
    write(root, f"{folder}/Chart.yaml", f"apiVersion: v2\nname: {name}\nversion: {version}\n")
    write(root, f"{folder}/values.yaml", "replicas: 1\nimage:\n  repository: nginx\n  tag: '1.27'\nmode: fast\nports: [80]\n")
    write(root, f"{folder}/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    if schema is not None:
        write(root, f"{folder}/values.schema.json", json.dumps(schema))


# A HelmRelease as people write it: four-space indentation, no namespace, a comment.
HR = """\
# the status page, from the charts rebuild serves
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
    name: status
spec:
    interval: 5m
    chart:
        spec:
            chart: {chart}
            version: "{version}"
            sourceRef:
                kind: {kind}
                name: {source}
                namespace: flux-system
    values:
        replicas: 2
"""
VERSION_LINE = 11
CHART_LINE = 10
REPLICAS_LINE = 17


def repo(
    root: Path,
    *,
    chart_name: str = "status-page",
    version: str = "0.1.0",
    kind: str = "HelmRepository",
    source: str = "demo-charts",
    patch: str = "",
) -> list[DesiredObject]:
    write(root, "apps/base/status/helmrelease.yaml", HR.format(chart=chart_name, version=version, kind=kind, source=source))
    write(root, "apps/base/status/kustomization.yaml", "resources:\n- helmrelease.yaml\n")
    overlay = "resources:\n  - ../base/status\n"
    if patch:
        overlay += (
            "patches:\n  - target: {kind: HelmRelease, name: status}\n    patch: |-\n"
            "      apiVersion: helm.toolkit.fluxcd.io/v2\n      kind: HelmRelease\n      metadata:\n"
            "        name: status\n      spec:\n        values:\n" + "".join(f"          {ln}\n" for ln in patch.splitlines())
        )
    write(root, "apps/demo/kustomization.yaml", overlay)
    got = render(root, "apps/demo")
    assert not got.problems, got.problems
    return got.objects


def served(root: Path) -> list[Catalog]:
    where = "charts/ of source demo at 0123456789ab"
    return [Catalog("HelmRepository", "flux-system", "demo-charts", where, tuple(read_folders(root, "charts")))]


@pytest.fixture
def two_versions(tmp_path: Path) -> Path:
    chart(tmp_path, "charts/status-page", "status-page", "0.1.0")
    chart(tmp_path, "charts/status-page-next", "status-page", "0.2.0-rc.1")
    chart(tmp_path, "charts/other", "other", "1.0.0")
    return tmp_path


# --------------------------------------------------------------------------- chart versions


def test_a_version_the_served_charts_lack_names_the_version_line_and_the_versions_there(two_versions: Path) -> None:
    objects = repo(two_versions, version="9.9.9")
    got = preflight(objects, served(two_versions))
    (refusal,) = got.refusals
    where = f"apps/base/status/helmrelease.yaml:{VERSION_LINE}"
    assert str(refusal.where) == where
    assert refusal.release == "HelmRelease default/status"
    assert "chart status-page has no version matching 9.9.9 in HelmRepository flux-system/demo-charts" in refusal.message
    assert refusal.fix == (
        f"versions in charts/status-page, charts/status-page-next: 0.1.0, 0.2.0-rc.1; change spec.chart.spec.version at {where}"
    )
    assert got.checked == frozenset({objects[0].ref})


@pytest.mark.parametrize("version", ["0.1.0", "v0.1.0", ">=0.1.0 <1.0.0", "~0.1", "*", "0.2.0-rc.1", ">=0.2.0-rc.0"])
def test_a_version_or_range_one_chart_folder_matches_passes(two_versions: Path, version: str) -> None:
    got = preflight(repo(two_versions, version=version), served(two_versions))
    assert got.refusals == () and len(got.checked) == 1


def test_a_range_only_a_prerelease_would_match_is_refused_as_masterminds_semver_does(two_versions: Path) -> None:
    (refusal,) = preflight(repo(two_versions, version=">=0.2.0"), served(two_versions)).refusals
    assert "no version matching >=0.2.0" in refusal.message


def test_a_version_set_by_an_overlay_patch_names_the_patch_line(two_versions: Path) -> None:
    write(
        two_versions,
        "apps/base/status/helmrelease.yaml",
        HR.format(chart="status-page", version="0.1.0", kind="HelmRepository", source="demo-charts"),
    )
    write(two_versions, "apps/base/status/kustomization.yaml", "resources:\n- helmrelease.yaml\n")
    write(
        two_versions,
        "apps/demo/kustomization.yaml",
        "resources:\n- ../base/status\npatches:\n- target:\n    kind: HelmRelease\n  patch: |-\n"
        "    - op: replace\n      path: /spec/chart/spec/version\n      value: 0.3.0\n",
    )
    objects = render(two_versions, "apps/demo").objects
    (refusal,) = preflight(objects, served(two_versions)).refusals
    assert refusal.where.file == "apps/demo/kustomization.yaml", refusal.where
    assert f"change spec.chart.spec.version at {refusal.where}" in refusal.fix


def test_a_chart_name_the_served_charts_lack_names_the_chart_line_and_the_charts_there(two_versions: Path) -> None:
    (refusal,) = preflight(repo(two_versions, chart_name="statuspage"), served(two_versions)).refusals
    assert str(refusal.where) == f"apps/base/status/helmrelease.yaml:{CHART_LINE}"
    assert "chart statuspage is not in HelmRepository flux-system/demo-charts" in refusal.message
    assert "set spec.chart.spec.chart at apps/base/status/helmrelease.yaml:10 to one of: other, status-page" in refusal.fix


def test_a_chart_from_a_repository_rebuild_does_not_serve_is_left_to_the_backstop(two_versions: Path) -> None:
    got = preflight(repo(two_versions, version="9.9.9", source="bitnami"), served(two_versions))
    assert got.refusals == () and got.checked == frozenset()


def test_the_served_repository_named_without_its_namespace_is_refused_at_the_source_ref(two_versions: Path) -> None:
    objects = repo(two_versions)
    del objects[0].body["spec"]["chart"]["spec"]["sourceRef"]["namespace"]  # Flux then looks in `default`
    (refusal,) = preflight(objects, served(two_versions)).refusals
    assert str(refusal.where) == "apps/base/status/helmrelease.yaml:12"  # the sourceRef line
    assert refusal.message == (
        "its chart source HelmRepository default/demo-charts does not exist: rebuild makes demo-charts in namespace flux-system"
    )
    assert refusal.fix == "set spec.chart.spec.sourceRef.namespace: flux-system at apps/base/status/helmrelease.yaml:12"


def test_a_chart_folder_of_the_git_source_must_hold_a_chart_yaml_and_its_version_is_ignored(tmp_path: Path) -> None:
    chart(tmp_path, "deploy/charts/web", "web", "1.2.3")
    git = Catalog(
        "GitRepository", "flux-system", "demo", "source demo at 0123456789ab", (read_folder(tmp_path, "./deploy/charts/web/"),)
    )  # type: ignore[arg-type]
    ok = preflight(repo(tmp_path, chart_name="./deploy/charts/web", version="9.9.9", kind="GitRepository", source="demo"), [git])
    assert ok.refusals == () and len(ok.checked) == 1
    (refusal,) = preflight(repo(tmp_path, chart_name="deploy/chart/web", kind="GitRepository", source="demo"), [git]).refusals
    assert str(refusal.where) == f"apps/base/status/helmrelease.yaml:{CHART_LINE}"
    assert "no chart folder deploy/chart/web (a folder with a Chart.yaml) in source demo at 0123456789ab" in refusal.message
    assert read_folder(tmp_path, "../etc") is None and read_folder(tmp_path, "deploy") is None


# --------------------------------------------------------------------------- values


def test_values_of_the_wrong_type_against_the_schema_name_the_patch_line_without_the_value(tmp_path: Path) -> None:
    chart(tmp_path, "charts/status-page", "status-page", "0.1.0", schema=SCHEMA)
    objects = repo(tmp_path, patch="replicas: three-hundred-secret\nmode: turbo")
    refusals = preflight(objects, served(tmp_path)).refusals
    assert [r.message.split(" in ")[0] for r in refusals] == [
        'spec.values.mode breaks the schema\'s rule enum: ["fast", "safe"]',
        "spec.values.replicas is a string, the schema wants integer",
    ]
    replicas = refusals[1]
    assert replicas.where.file == "apps/demo/kustomization.yaml" and replicas.where.line == 12, replicas.where
    assert "charts/status-page/values.schema.json of chart status-page 0.1.0 (charts/status-page)" in replicas.message
    assert "values don't meet the specifications of the schema" in replicas.message
    assert replicas.fix == f"give spec.values.replicas a value of type integer at {replicas.where}"
    assert all("three-hundred-secret" not in str(r) for r in refusals)


def test_values_merged_over_the_charts_defaults_before_the_schema_as_helm_does(tmp_path: Path) -> None:
    chart(tmp_path, "charts/status-page", "status-page", "0.1.0", schema=SCHEMA)
    # image.tag comes from values.yaml: setting only image.repository keeps it; null removes it
    assert preflight(repo(tmp_path, patch="image:\n  repository: ghcr.io/x"), served(tmp_path)).refusals == ()
    # (a strategic merge patch's null deletes the key before Helm sees it: set it in the values themselves)
    objects = repo(tmp_path)
    objects[0].body["spec"]["values"]["image"] = {"tag": None}
    (refusal,) = preflight(objects, served(tmp_path)).refusals
    assert refusal.message.startswith("spec.values.image breaks the schema: 'tag' is a required property"), refusal.message
    assert str(refusal.where) == "apps/base/status/helmrelease.yaml:16"  # spec.values, the nearest line known


def test_the_first_line_of_a_schema_error_deep_in_values_the_helm_release_does_not_set(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"ports": {"type": "array", "items": {"type": "integer", "maximum": 1024}}}}
    chart(tmp_path, "charts/status-page", "status-page", "0.1.0", schema=schema)
    write(tmp_path, "charts/status-page/values.yaml", "ports: [80, 8080]\n")
    (refusal,) = preflight(repo(tmp_path), served(tmp_path)).refusals
    assert refusal.message.startswith("spec.values.ports[1] breaks the schema's rule maximum: 1024"), refusal.message
    assert str(refusal.where) == "apps/base/status/helmrelease.yaml:16"  # spec.values: the ports come from the chart


def test_without_a_schema_only_a_mapping_against_a_non_mapping_is_refused(tmp_path: Path) -> None:
    chart(tmp_path, "charts/status-page", "status-page", "0.1.0")
    # templates may well accept a string for an integer or a list: not refused
    assert preflight(repo(tmp_path, patch="replicas: '3'\nports: '80'"), served(tmp_path)).refusals == ()
    a, b = preflight(repo(tmp_path, patch="image: nginx:1.27\nmode:\n  kind: fast"), served(tmp_path)).refusals
    assert a.message.startswith("spec.values.image is a string, but chart status-page 0.1.0 (charts/status-page) has a mapping")
    assert a.fix == f"write spec.values.image as a mapping (like charts/status-page/values.yaml) at {a.where}"
    assert a.where.file == "apps/demo/kustomization.yaml"
    assert b.message.startswith("spec.values.mode is a mapping, but chart status-page 0.1.0 (charts/status-page) has a string")


def test_values_from_the_cluster_or_other_values_files_are_not_checked(tmp_path: Path) -> None:
    chart(tmp_path, "charts/status-page", "status-page", "0.1.0", schema=SCHEMA)
    objects = repo(tmp_path, patch="replicas: many")
    for o in objects:
        o.body["spec"]["valuesFrom"] = [{"kind": "ConfigMap", "name": "status-values"}]
    got = preflight(objects, served(tmp_path))
    assert got.refusals == () and len(got.checked) == 1
    objects = repo(tmp_path, patch="replicas: many")
    objects[0].body["spec"]["chart"]["spec"]["valuesFiles"] = ["values.yaml", "values-prod.yaml"]
    assert preflight(objects, served(tmp_path)).refusals == ()  # other defaults than values.yaml alone


def test_a_schema_ref_is_never_fetched_and_a_broken_schema_is_refused(tmp_path: Path) -> None:
    remote = {"type": "object", "properties": {"replicas": {"$ref": "https://example.invalid/int.json"}}}
    chart(tmp_path, "charts/status-page", "status-page", "0.1.0", schema=remote)
    assert preflight(repo(tmp_path, patch="replicas: many"), served(tmp_path)).refusals == ()
    chart(tmp_path, "charts/status-page", "status-page", "0.1.0", schema={"type": "objekt"})
    (refusal,) = preflight(repo(tmp_path), served(tmp_path)).refusals
    assert "values.schema.json of chart status-page 0.1.0 (charts/status-page) is not a valid JSON Schema" in refusal.message


def test_coalesce_is_helms() -> None:
    defaults = {"a": 1, "m": {"x": 1, "y": 2}, "gone": {"z": 1}, "keep": None}
    assert coalesce(defaults, {"m": {"y": 3}, "gone": None, "new": [1]}) == {
        "a": 1, "m": {"x": 1, "y": 3}, "keep": None, "new": [1]
    }  # fmt: skip


# --------------------------------------------------------------------------- the checkouts and the error


def test_check_reads_the_checkout_and_raises_one_error_with_the_first_line_and_its_fix(two_versions: Path) -> None:
    objects = repo(two_versions, version="9.9.9")
    spec = SourceSpec("demo", "repo", charts="charts")
    state = SourceState(spec, "http://127.0.0.1:1/demo.git", Checkout("demo", "u", "main", "a" * 40, two_versions, 0), objects)
    with pytest.raises(HelmPreflightError) as err:
        helmpreflight.check(DesiredState([state]))
    where = f"apps/base/status/helmrelease.yaml:{VERSION_LINE}"
    assert err.value.message.startswith(f"{where}: HelmRelease default/status: chart status-page has no version matching 9.9.9")
    assert err.value.message.endswith("nothing was applied")
    assert err.value.fix is not None and err.value.fix.endswith(f"change spec.chart.spec.version at {where}")
    ok = SourceState(spec, state.url, state.checkout, repo(two_versions))
    notes: list[str] = []
    assert helmpreflight.check(DesiredState([ok]), notes.append) == frozenset({objects[0].ref})
    assert notes == ["desired: 1 HelmRelease(s) with a chart in git: chart version and values checked"]


# --------------------------------------------------------------------------- the runtime backstop


def hr_live(
    ready: tuple[str, str, str], *, generation: int = 2, at: int = 2, stalled: tuple[str, str] | None = None, **status: Any
) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": ready[0], "reason": ready[1], "message": ready[2], "observedGeneration": at}]
    if stalled:
        conds.append({"type": "Stalled", "status": "True", "reason": stalled[0], "message": stalled[1], "observedGeneration": at})
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "web", "namespace": "apps", "generation": generation},
        "spec": status.pop("spec", {}),
        "status": {"observedGeneration": 1, "conditions": conds, **status},
    }


DESIRED = DesiredObject(
    ObjectRef("helm.toolkit.fluxcd.io", "HelmRelease", "apps", "web"),
    "helm.toolkit.fluxcd.io/v2",
    {
        "kind": "HelmRelease",
        "metadata": {"name": "web"},
        "spec": {"chart": {"spec": {"chart": "web", "version": "9.9.9", "sourceRef": {"kind": "HelmRepository", "name": "r"}}}},
    },
    Source("apps/web.yaml", 3),
)
TEMPLATE_ERROR = (
    "Helm install failed for release apps/web with chart web@0.1.0: template: web/templates/deployment.yaml:9:30: "
    'executing "web/templates/deployment.yaml" at <.Values.image.tag>: can\'t evaluate field tag in type interface {}'
)
NO_VERSION = (
    "HelmChart 'apps/apps-web' is not ready: invalid chart reference: failed to get chart version for remote "
    "reference: no 'web' chart with version matching '9.9.9' found"
)


@pytest.mark.parametrize(
    ("live", "in_git", "settled"),
    [
        (hr_live(("False", "InstallFailed", TEMPLATE_ERROR)), False, "not ready: InstallFailed: Helm install failed"),
        (
            hr_live(
                ("False", "InstallFailed", "x"),
                stalled=("RetriesExceeded", "Failed to install after 1 attempt(s)"),
                installFailures=1,
            ),
            False,
            "stalled: RetriesExceeded",
        ),
        (hr_live(("False", "SourceNotReady", NO_VERSION)), False, "not ready: SourceNotReady: HelmChart"),
        (
            hr_live(("False", "UpgradeFailed", "y"), upgradeFailures=2, spec={"upgrade": {"remediation": {"retries": 1}}}),
            False,
            "not ready: UpgradeFailed: y",
        ),
        # transient: waiting can heal these
        (hr_live(("False", "SourceNotReady", NO_VERSION)), True, None),  # the served index is older than git
        (hr_live(("False", "SourceNotReady", "HelmChart 'apps/apps-web' is not ready: chart pull in progress")), False, None),
        (hr_live(("Unknown", "Progressing", "Running 'install' action with timeout of 5m0s")), False, None),
        (hr_live(("False", "DependencyNotReady", "dependency 'apps/db' is not ready")), False, None),
        (hr_live(("False", "InstallFailed", TEMPLATE_ERROR), at=1), False, None),  # an older generation's verdict
        (
            hr_live(
                (
                    "False",
                    "InstallFailed",
                    "unable to build kubernetes objects: resource mapping not found for kind ServiceMonitor; "
                    "ensure CRDs are installed first",
                )
            ),
            False,
            None,
        ),
        (
            hr_live(
                ("False", "InstallFailed", "context deadline exceeded"),
                installFailures=1,
                spec={"install": {"remediation": {"retries": 3}}},
            ),
            False,
            None,
        ),
        (
            hr_live(("False", "InstallFailed", "boom"), installFailures=4, spec={"install": {"remediation": {"retries": -1}}}),
            False,
            None,
        ),
        (hr_live(("False", "InstallFailed", 'create: failed to create: namespaces "payments" not found')), False, None),
    ],
)
def test_settled_failure_only_when_helm_controller_will_not_heal_it(
    live: dict[str, Any], in_git: bool, settled: str | None
) -> None:
    got = settled_failure(DESIRED, live, chart_in_git=in_git)
    if settled is None:
        assert got is None
    else:
        assert got is not None and got.startswith(settled), got


def test_verify_stops_at_once_on_a_settled_helm_release_with_its_line_and_the_fix() -> None:
    from rebuild.core.errors import ConfigError
    from rebuild.recover import converge
    from rebuild.recover.health import Health
    from rebuild.recover.verify import ObjectResult

    live = hr_live(("False", "SourceNotReady", NO_VERSION))
    verdict = converge.ObjectVerdict(DESIRED, ObjectResult(DESIRED.ref, True), Health("degraded", "x"))
    verdict.settled = converge._settled(DESIRED, live, False)
    report = converge.VerifyReport([verdict], seconds=4.2)
    with pytest.raises(ConfigError) as err:
        converge._refuse_settled_releases(report)
    assert err.value.message.startswith(
        "apps/web.yaml:3: HelmRelease apps/web: helm-controller gave up: not ready: SourceNotReady:"
    )
    assert "verify stopped after 4.2s" in err.value.message
    assert (
        err.value.fix
        == "the chart version 9.9.9 is not in HelmRepository apps/r: change spec.chart.spec.version at apps/web.yaml:3"
    )
    converge._refuse_settled_releases(
        converge.VerifyReport([converge.ObjectVerdict(DESIRED, ObjectResult(DESIRED.ref, True), Health("progressing", ""))])
    )
