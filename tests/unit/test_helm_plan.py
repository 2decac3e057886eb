"""`plan` and Flux HelmReleases: chart, version, source, valuesFrom and helm-controller's values digest.

The expected digests are not computed by the code under test. The first two are fluxcd/pkg's own
test vectors (chartutil/digest_test.go). The others were printed by a small Go program (Go 1.26,
sigs.k8s.io/yaml v1.6.0 with go.yaml.in/yaml/v2 v2.4.2 from the module cache) that does what
helm-controller does: ``sigs.k8s.io/yaml.Unmarshal`` of the values into ``map[string]interface{}``,
``yaml.JSONObjectToYAMLObject``, fluxcd/pkg's ``SortMapSlice``, ``goyaml.NewEncoder(sha256).Encode``;
the same program printed the encodings checked byte for byte below.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.desired.helm import EMPTY_DIGEST, ValuesRef, encode_values, plan_release, plan_releases, values_digest
from rebuild.desired.render import Problem, render

# fluxcd/pkg chartutil/digest_test.go, "value map" and "values map with numeric keys".
FLUX_VALUE_MAP = "sha256:fcdc2b0de1581a3633ada4afee3f918f6eaa5b5ab38c3fef03d5b48d3f85d9f6"
FLUX_NUMERIC_KEYS = "sha256:8a980fcbeadd6f05818f07e8aec14070c22250ca3d96af1fcd5f93b3e85b4d70"
# From the Go program (see the module docstring), one line of JSON values each.
TRICKY = {
    "replicaCount": 2,
    "image": {"repository": "ghcr.io/stefanprodan/podinfo", "tag": "6.7.1"},
    "ui": {"message": '<b>hi</b> & "bye"', "color": "#34577c"},
    "enabled": "yes",
    "ratio": 0.25,
    "big": 1e21,
    "port": "8080",
    "empty": "",
    "list": [],
    "map": {},
    "nothing": None,
}
TRICKY_DIGEST = "sha256:6a90bd9a9e42cc6cc74766470c6f6b29a86e0359efd50f6b4259dc5608f0b197"
TRICKY_YAML = (
    'big: 1e+21\nempty: ""\nenabled: "yes"\nimage:\n  repository: ghcr.io/stefanprodan/podinfo\n  tag: 6.7.1\n'
    "list: []\nmap: {}\nnothing: null\nport: \"8080\"\nratio: 0.25\nreplicaCount: 2\nui:\n  color: '#34577c'\n"
    '  message: <b>hi</b> & "bye"\n'
)
FOLDED = {
    "banner": "a long sentence with many words in it that goes well past the eighty column limit of the go "
    "yaml v2 emitter, so it folds",
    "config": "line one\nline two\n",
    "keys": {"z": 1, "B": 2, "a": 3, "é": 4, "10": 5, "9": 6},
}
FOLDED_DIGEST = "sha256:33b951283fc49fce5cf767449bac443ea7e3c43b5be8c0371cfb8b5f39493f8a"
FOLDED_YAML = (
    "banner: a long sentence with many words in it that goes well past the eighty column\n"
    "  limit of the go yaml v2 emitter, so it folds\n"
    'config: |\n  line one\n  line two\nkeys:\n  "10": 5\n  "9": 6\n  B: 2\n  a: 3\n  z: 1\n  é: 4\n'
)
PROD_VALUES_DIGEST = "sha256:c337750a4f881393592bc7432697e7c3f58c5fe0f83ea4c676d729f506e43496"  # repo below, prod
BASE_VALUES_DIGEST = "sha256:b45c396a7204a89823fb89c3d99a69433109273f17893945da83c1ed859b7f4e"  # repo below, base


def test_digest_matches_flux_test_vectors_whatever_the_key_order() -> None:
    values = {
        "replicas": 3,
        "image": {"tag": "latest", "repository": "nginx"},
        "ports": [{"protocol": "TCP", "port": 8080}, {"port": 9090, "protocol": "UDP"}],
    }
    assert values_digest(values) == FLUX_VALUE_MAP
    assert values_digest(dict(reversed(values.items()))) == FLUX_VALUE_MAP
    numeric = {
        "replicas": 3,
        "test": {
            "632bd82398e71231a98004b6": "value4",
            "632bd80235a05f4192aefade": "value1",
            "632bd817c559818a52307da2": "value3",
            "632bd80ddf416cf32fd50679": "value2",
        },
    }
    assert values_digest(numeric) == FLUX_NUMERIC_KEYS
    assert values_digest({}) == values_digest(None) == EMPTY_DIGEST


def test_digest_is_over_goyaml_v2_bytes_quoting_and_folding_as_go_does() -> None:
    # Quoted: strings that read back as bool/int/null, '#' first; plain: '<', '&', '"' inside.
    assert encode_values(TRICKY).decode() == TRICKY_YAML
    assert values_digest(TRICKY) == TRICKY_DIGEST
    # Folded at 80 columns, literal block for a newline, keys sorted bytewise ("10" < "9" < "B" < "a" < "é").
    assert encode_values(FOLDED).decode() == FOLDED_YAML
    assert values_digest(FOLDED) == FOLDED_DIGEST
    # json.Unmarshal makes 2.0 a float64 and JSONObjectToYAMLObject an int again: same digest as 2.
    assert values_digest({"a": 2.0}) == values_digest({"a": 2})


HR = "helm.toolkit.fluxcd.io"


def hr(spec: dict[str, object], name: str = "podinfo", namespace: str = "apps") -> DesiredObject:
    body = {"apiVersion": f"{HR}/v2", "kind": "HelmRelease", "metadata": {"name": name, "namespace": namespace}}
    return DesiredObject(
        ObjectRef(HR, "HelmRelease", namespace, name), f"{HR}/v2", body | {"spec": spec}, Source("apps/podinfo.yaml", 3)
    )


def test_chart_spec_shape_with_version_source_and_defaults() -> None:
    p = plan_release(
        hr(
            {
                "chart": {
                    "spec": {
                        "chart": "podinfo",
                        "version": "6.7.1",
                        "sourceRef": {"kind": "HelmRepository", "name": "charts", "namespace": "flux-system"},
                    }
                },
                "values": {"replicaCount": 2},
            }
        )
    )
    assert not isinstance(p, Problem)
    assert (p.shape, p.chart, p.version, p.latest) == ("chart", "podinfo", "6.7.1", False)
    assert (p.source_kind, p.source_namespace, p.source_name) == ("HelmRepository", "flux-system", "charts")
    assert (p.reconcile_strategy, p.target_namespace, p.release_name) == ("ChartVersion", "apps", "podinfo")
    assert p.values_digest == values_digest({"replicaCount": 2})
    assert p.describe() == (
        "apps/podinfo (apps/podinfo.yaml:3) chart podinfo 6.7.1 from HelmRepository flux-system/charts, "
        f"values {p.values_digest[:19]}…"
    )
    d = p.to_dict()
    assert d["chart_source"] == {"kind": "HelmRepository", "name": "charts", "namespace": "flux-system"}
    assert d["values_digest"].startswith("sha256:") and d["source"] == "apps/podinfo.yaml:3"

    latest = plan_release(
        hr(
            {
                "chart": {
                    "spec": {
                        "chart": "./charts/web",
                        "sourceRef": {"kind": "GitRepository", "name": "repo"},
                        "reconcileStrategy": "Revision",
                    }
                },
                "targetNamespace": "web",
            }
        )
    )
    assert not isinstance(latest, Problem)
    assert (latest.version, latest.latest, latest.reconcile_strategy) == ("*", True, "Revision")
    assert latest.source_namespace == "apps"  # sourceRef.namespace defaults to the HelmRelease's
    assert (latest.target_namespace, latest.release_name) == ("web", "web-podinfo")
    assert latest.values_digest == EMPTY_DIGEST and not latest.has_values
    assert latest.describe().endswith("chart ./charts/web * (latest) from GitRepository apps/repo into web, no values")


def test_chart_ref_shape_and_values_from() -> None:
    p = plan_release(
        hr(
            {
                "chartRef": {"kind": "OCIRepository", "name": "podinfo", "namespace": "flux-system"},
                "values": {"replicaCount": 2},
                "valuesFrom": [
                    {"kind": "ConfigMap", "name": "podinfo-values"},
                    {
                        "kind": "Secret",
                        "name": "podinfo-secret",
                        "valuesKey": "token",
                        "targetPath": "auth.token",
                        "optional": True,
                    },
                ],
            }
        )
    )
    assert not isinstance(p, Problem)
    assert (p.shape, p.chart, p.version, p.source_kind, p.source_namespace, p.source_name) == (
        "chartRef", "", "", "OCIRepository", "flux-system", "podinfo"
    )  # fmt: skip
    assert p.values_from == (
        ValuesRef("ConfigMap", "podinfo-values"),
        ValuesRef("Secret", "podinfo-secret", "token", "auth.token", True),
    )
    assert p.values_digest == ""  # the merged values depend on objects in the cluster
    assert p.describe() == (
        "apps/podinfo (apps/podinfo.yaml:3) chart from OCIRepository flux-system/podinfo (chartRef), values from "
        "ConfigMap podinfo-values, Secret podinfo-secret key token at auth.token (optional) and inline values"
    )
    assert p.to_dict()["values_from"][1] == {
        "kind": "Secret", "name": "podinfo-secret", "values_key": "token", "target_path": "auth.token", "optional": True
    }  # fmt: skip
    helm_chart = plan_release(hr({"chartRef": {"kind": "HelmChart", "name": "podinfo"}}))
    assert not isinstance(helm_chart, Problem) and helm_chart.source_namespace == "apps"


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"values": {"a": 1}}, "has neither spec.chart.spec nor spec.chartRef"),
        (
            {"chart": {"spec": {"chart": "x", "sourceRef": {"kind": "OCIRepository", "name": "x"}}}},
            "sourceRef.kind OCIRepository is not supported",
        ),
        ({"chartRef": {"kind": "GitRepository", "name": "x"}}, "spec.chartRef.kind GitRepository is not supported"),
        ({"chart": {"spec": {"chart": "x", "sourceRef": {"kind": "HelmRepository"}}}}, "needs chart and sourceRef.name"),
        (
            {"chartRef": {"kind": "HelmChart", "name": "x"}, "valuesFrom": [{"kind": "Deployment", "name": "y"}]},
            "valuesFrom[0] must name",
        ),
        ({"chartRef": {"kind": "HelmChart", "name": "x"}, "values": ["a"]}, "spec.values must be a mapping"),
    ],
)
def test_a_release_helm_controller_cannot_install_is_a_problem_with_file_line_and_fix(spec: dict[str, object], says: str) -> None:
    got = plan_releases([hr(spec)])
    assert not got.releases
    (p,) = got.problems
    assert isinstance(p, Problem) and str(p).startswith("apps/podinfo.yaml:3: HelmRelease apps/podinfo: ")
    assert says in str(p) and "fix:" in str(p)


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_plan_of_a_repo_written_the_way_people_write_helm_releases(tmp_path: Path) -> None:
    # Four-space indentation, a comment, no namespace, sourceRef without namespace, the prod
    # overlay patching values; a second release from an OCI chart with values from a ConfigMap.
    write(
        tmp_path,
        "apps/base/podinfo.yaml",
        "# podinfo, the way the docs write it\n"
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n    name: podinfo\n"
        "spec:\n    interval: 10m\n    chart:\n        spec:\n            chart: podinfo\n"
        "            version: '6.7.1'\n            sourceRef:\n                kind: HelmRepository\n"
        "                name: podinfo\n    values:\n        replicaCount: 1\n        ui:\n"
        "            message: from base\n",
    )
    write(
        tmp_path,
        "apps/base/redis.yaml",
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: redis, namespace: cache}\n"
        "spec:\n  chartRef: {kind: OCIRepository, name: redis, namespace: flux-system}\n"
        "  valuesFrom:\n  - kind: ConfigMap\n    name: redis-values\n",
    )
    write(tmp_path, "apps/base/kustomization.yaml", "resources:\n  - podinfo.yaml\n  - redis.yaml\n")
    write(
        tmp_path,
        "clusters/prod/kustomization.yaml",
        "resources:\n- ../../apps/base\npatches:\n- target:\n    kind: HelmRelease\n    name: podinfo\n"
        "  patch: |-\n    apiVersion: helm.toolkit.fluxcd.io/v2\n    kind: HelmRelease\n    metadata:\n"
        "      name: podinfo\n    spec:\n      values:\n        replicaCount: 3\n        ui:\n"
        "          message: prod cluster\n        resources:\n          limits:\n            memory: 256Mi\n",
    )
    base = render(tmp_path, "apps/base")
    prod = render(tmp_path, "clusters/prod")
    assert not base.problems and not prod.problems, (base.problems, prod.problems)

    (b_podinfo, _) = sorted(plan_releases(base.objects).releases, key=lambda r: r.name)
    assert b_podinfo.values_digest == BASE_VALUES_DIGEST

    got = plan_releases(prod.objects)
    assert not got.problems
    podinfo, redis = sorted(got.releases, key=lambda r: r.name)
    assert (podinfo.namespace, podinfo.name, str(podinfo.source)) == ("default", "podinfo", "apps/base/podinfo.yaml:2")
    assert (podinfo.chart, podinfo.version, podinfo.source_kind, podinfo.source_namespace, podinfo.source_name) == (
        "podinfo", "6.7.1", "HelmRepository", "default", "podinfo"
    )  # fmt: skip
    assert podinfo.values_digest == PROD_VALUES_DIGEST  # the per-cluster patch is in the digest
    assert str(podinfo.values_source) == "clusters/prod/kustomization.yaml:13"
    assert podinfo.describe() == (
        "default/podinfo (apps/base/podinfo.yaml:2) chart podinfo 6.7.1 from HelmRepository default/podinfo, "
        f"values {PROD_VALUES_DIGEST[:19]}… (set in clusters/prod/kustomization.yaml:13)"
    )
    assert redis.describe() == (
        "cache/redis (apps/base/redis.yaml:1) chart from OCIRepository flux-system/redis (chartRef), "
        "values from ConfigMap redis-values"
    )


def test_plan_result_json_and_text_carry_the_releases() -> None:
    from rebuild.cli.recover import _helm_text
    from rebuild.recover.plan import PlanResult
    from rebuild.recover.sources import DesiredState

    helm = plan_releases(
        [
            hr(
                {
                    "chart": {
                        "spec": {
                            "chart": "podinfo",
                            "version": "6.7.1",
                            "sourceRef": {"kind": "HelmRepository", "name": "charts"},
                        }
                    }
                }
            ),
            hr({"values": {}}, name="broken"),
        ]
    )
    d = PlanResult(DesiredState([]), [], [], helm).to_dict()
    assert [r["name"] for r in d["helm_releases"]] == ["podinfo"]
    assert d["helm_problems"] == [
        "apps/podinfo.yaml:3: HelmRelease apps/broken: has neither spec.chart.spec nor spec.chartRef, so "
        "helm-controller has no chart to install; fix: add spec.chart.spec (chart, version, sourceRef to a "
        "HelmRepository, GitRepository or Bucket) or spec.chartRef (kind OCIRepository or HelmChart, name)"
    ]
    lines = _helm_text(helm)
    assert lines[:2] == [
        "helm releases: 1",
        "  apps/podinfo (apps/podinfo.yaml:3) chart podinfo 6.7.1 from HelmRepository apps/charts, no values",
    ]
    assert lines[2].startswith("  problem: apps/podinfo.yaml:3: HelmRelease apps/broken: ")
    # No HelmRelease: the plan text is what it was.
    assert _helm_text(plan_releases([])) == []
    assert PlanResult(DesiredState([]), [], []).to_dict()["helm_releases"] == []
