"""helm-controller's composition of ``spec.valuesFrom`` (rebuild.desired.helmvalues), case by case.

Expected values follow fluxcd/pkg chartutil v1.15.0 ``ChartValuesFromReferences``/``MergeMaps``/
``ReplacePathValue`` and Helm v3.19.0 ``strvals.typedVal`` (read in the Go module cache that
helm-controller's build fills); the digest of a composition is checked end to end against the real
helm-controller in tests/integration/test_helm_values_from.py.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from rebuild.desired.helm import ValuesRef, values_digest
from rebuild.desired.helmvalues import compose, compose_values, merge_maps, object_data, typed_value

NS = "apps"


def lookup_of(objects: dict[tuple[str, str], dict[str, Any]]) -> Any:
    return lambda kind, ns, name: objects.get((kind, name)) if ns == NS else None


def cm(text: str, key: str = "values.yaml") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": {key: text}}


def secret(text: str, key: str = "values.yaml", *, string_data: bool = False) -> dict[str, Any]:
    if string_data:
        return {"apiVersion": "v1", "kind": "Secret", "stringData": {key: text}}
    return {"apiVersion": "v1", "kind": "Secret", "data": {key: base64.b64encode(text.encode()).decode()}}


def test_refs_merge_in_order_then_inline_values_win() -> None:
    objects = {
        ("ConfigMap", "base"): cm("image: {repository: nginx, tag: '1.26'}\nreplicas: 1\nlist: [1, 2]\n"),
        ("Secret", "over"): secret("image:\n  tag: '1.27'\nlist: [3]\n"),
    }
    refs = [ValuesRef("ConfigMap", "base"), ValuesRef("Secret", "over")]
    got = compose_values(NS, refs, {"replicas": 2}, lookup_of(objects))
    # mappings merge key by key; a list is replaced whole; inline values last
    assert got == {"image": {"repository": "nginx", "tag": "1.27"}, "replicas": 2, "list": [3]}
    assert compose(NS, refs, {"replicas": 2}, lookup_of(objects)).digest == values_digest(got)


def test_target_path_values_are_typed_as_strvals_types_them_unless_quoted() -> None:
    objects = {
        ("Secret", "s"): {
            "stringData": {"token": "abc", "port": "8080", "on": "True", "zero": "0", "lead": "007", "q": "'42'", "none": "null"}
        }
    }
    refs = [ValuesRef("Secret", "s", key, f"a.b.{key}") for key in ("token", "port", "on", "zero", "lead", "q", "none")]
    got = compose_values(NS, refs, {"a": {"keep": 1}}, lookup_of(objects))
    assert got == {
        "a": {"keep": 1, "b": {"token": "abc", "port": 8080, "on": True, "zero": 0, "lead": "007", "q": "42", "none": None}}
    }


def test_a_target_path_writes_through_git_s_map_as_helm_controller_does() -> None:
    # ReplacePathValue runs after spec.values were merged into the result; MergeMaps hands a map of
    # spec.values over as is when the result has none there, so strvals writes into git's map and
    # the final merge of spec.values no longer takes it back (Go: "from-cm")...
    objects = {("ConfigMap", "c"): cm("from-cm", key="tag"), ("ConfigMap", "base"): cm("image: {repository: x}\n")}
    inline = {"image": {"tag": "inline"}}
    got = compose_values(NS, [ValuesRef("ConfigMap", "c", "tag", "image.tag")], inline, lookup_of(objects))
    assert got == {"image": {"tag": "from-cm"}}
    assert inline == {"image": {"tag": "inline"}}  # the caller's (git's) values are not touched
    # ...but when an earlier ref made the result's own map there, MergeMaps built a new one: inline wins
    refs = [ValuesRef("ConfigMap", "base"), ValuesRef("ConfigMap", "c", "tag", "image.tag")]
    assert compose_values(NS, refs, inline, lookup_of(objects)) == {"image": {"repository": "x", "tag": "inline"}}


def test_an_optional_ref_without_its_key_is_skipped_a_required_one_is_unresolved() -> None:
    objects = {("ConfigMap", "c"): cm("a: 1", key="other")}
    assert compose_values(NS, [ValuesRef("ConfigMap", "c", optional=True)], {"b": 2}, lookup_of(objects)) == {"b": 2}
    got = compose(NS, [ValuesRef("ConfigMap", "c")], None, lookup_of(objects))
    assert got.digest == "" and "ConfigMap apps/c has no key values.yaml" in got.unresolved


def test_an_object_git_does_not_declare_leaves_the_digest_uncomputed() -> None:
    got = compose(NS, [ValuesRef("Secret", "made-elsewhere", optional=True)], None, lookup_of({}))
    assert got.digest == "" and "Secret apps/made-elsewhere is not declared in git" in got.unresolved


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("a: [1\n", "not valid YAML (line 2)"),
        ("- 1\n- 2\n", "not a YAML mapping"),
    ],
)
def test_values_that_helm_controller_cannot_read_are_unresolved_without_quoting_them(text: str, why: str) -> None:
    got = compose(NS, [ValuesRef("Secret", "s")], None, lookup_of({("Secret", "s"): secret(text)}))
    assert got.digest == "" and why in got.unresolved
    assert text.strip() not in got.unresolved


@pytest.mark.parametrize(
    ("path", "value"),
    [("list[0]", "x"), ("a\\.b", "x"), ("a", "x,y"), ("a", "{x,y}"), ("a", "x\\,y")],
)
def test_strvals_syntax_not_modelled_is_said_not_guessed(path: str, value: str) -> None:
    got = compose(NS, [ValuesRef("ConfigMap", "c", "v", path)], None, lookup_of({("ConfigMap", "c"): cm(value, key="v")}))
    assert got.digest == "" and "not modelled here" in got.unresolved


def test_a_target_path_through_a_scalar_fails_as_in_helm_controller() -> None:
    got = compose(
        NS, [ValuesRef("ConfigMap", "c", "v", "image.tag")], {"image": "nginx"}, lookup_of({("ConfigMap", "c"): cm("1", key="v")})
    )
    assert "goes through image, which is not a mapping" in got.unresolved


def test_secret_data_is_decoded_and_string_data_wins() -> None:
    body = {
        "data": {"k": base64.b64encode(b"from-data").decode(), "j": base64.b64encode(b"only").decode()},
        "stringData": {"k": "wins"},
    }
    assert object_data("Secret", body) == {"k": "wins", "j": "only"}
    assert object_data("Secret", {"data": {"k": "not base64!"}}) is None


def test_inline_values_are_not_mutated_by_a_target_path_through_them() -> None:
    inline = {"a": {"b": 1}}
    compose_values(NS, [ValuesRef("ConfigMap", "c", "v", "a.c")], inline, lookup_of({("ConfigMap", "c"): cm("2", key="v")}))
    assert inline == {"a": {"b": 1}}


def test_merge_maps_and_typed_value_edges() -> None:
    assert merge_maps({"a": {"x": 1}, "b": 1}, {"a": {"y": 2}, "b": {"z": 3}}) == {"a": {"x": 1, "y": 2}, "b": {"z": 3}}
    assert [typed_value(v) for v in ("FALSE", "-5", "+5", "1.5", "", "9223372036854775808")] == [
        False,
        -5,
        5,
        "1.5",
        "",
        "9223372036854775808",
    ]


# Digests computed by helm-controller v1.4.3's own Go code: fluxcd/pkg chartutil v1.15.0 (ReadValues
# through Helm v3.19.0 and sigs.k8s.io/yaml v1.6.0 / go.yaml.in/yaml/v2 v2.4.2, MergeMaps,
# ReplacePathValue, DigestValues), the ChartValuesFromReferences loop over the given texts, built from
# the Go module cache helm-controller's build fills (a throwaway program, run 2026-12-03).
GO_VECTORS = [
    (
        [("greeting: hello from a ConfigMap\nreplicas: 1\nimage:\n    tag: '1.27'\n", ""), ("tok-abc", "auth.token")],
        {"replicas": 2},
        "sha256:d0b6f2cc14f5fe2c5171a0fe543c85fa8767661bdab8a6a347acde71eb161940",
    ),
    (  # YAML 1.1 as goyaml.v2 reads it, not as PyYAML does (1e3 a float, 12:30:00 text)
        [("a: yes\nb: on\nc: No\nd: ~\ne: 1.0\nf: 1e3\ng: 0x1F\nh: 012\ni: 2026-12-03\nj: 12:30:00\n", "")],
        None,
        "sha256:bb7ac9354293b71b7ad23f0ac70cc735e71c7315fc82a450c73308081d37d0df",
    ),
    (  # the key y is the boolean true, so the text "true"
        [("x: {y: 1, z: [1, {b: 2, a: 1}]}\n", ""), ("x: {y: 2}\nlist: [3]\n", "")],
        {"x": {"w": True}},
        "sha256:90495c003ec81c94431973e5466eec3bbd5591e0173cfbe71d07384cf37ae98a",
    ),
    (
        [
            ("8080", "svc.port"),
            ("true", "svc.on"),
            ("007", "svc.lead"),
            ("'42'", "svc.q"),
            ("null", "svc.none"),
            ("0", "svc.zero"),
            ("-5", "svc.neg"),
            ("+5", "svc.pos"),
            ("1.5", "svc.f"),
            ("FALSE", "svc.b"),
        ],
        {"svc": {"keep": 1}},
        "sha256:56f72003437c1136c7c2ae2e0da2365048cdf9bda3f66d5eee4fc150f99c9ab5",
    ),
    (
        [("from-cm", "image.tag")],
        {"image": {"tag": "inline"}},
        "sha256:080bca29d6601e9fa68791c162848122ef25c470a591c979b55342cc2082f3ca",
    ),
    (
        [("image: {repository: x}\n", ""), ("from-cm", "image.tag")],
        {"image": {"tag": "inline"}},
        "sha256:570aacbe521ad7090693cb18becdc4a6797bd9a3ece7721cc5fe1362c7f3464d",
    ),
    (
        [("from-cm", "image.tag"), ("a: 1\n", "")],
        {"image": {"tag": "inline", "pull": "Always"}, "b": [1]},
        "sha256:73845fd8e9f370756fca85021fe33c6d78e1c0977bcb36c1d14bf1ddfc3d43f4",
    ),
    ([("multi\nline\n", "text")], None, "sha256:1e01778d1dbc32e52cb3bcff504e4307ca8766558d7afcd8a96880afa3a0e28f"),
    ([("---\na: 1\n---\nb: 2\n", "")], None, "sha256:37b128c59f1f5097f73f82691cb519f1f568667faab5ced1b4ab979d36837eae"),
    (  # an int64 from strvals is exact; a number from YAML goes through float64
        [("9223372036854775807", "big"), ("123456789012", "mid")],
        None,
        "sha256:9d853c8b3efec84f31a9cc9ca07c599e94cb604ed5c4c5c2505e79a5743cbe29",
    ),
    ([('"dq"', "p.q")], None, "sha256:d3c04bf2fd029f5949e1e480500ebda1ebb2fe8a86fe743fa8e8aa2042faeb0d"),
    (
        [("1_000", "u"), ("0.0", "z"), ("1e5", "e")],
        None,
        "sha256:6bf248becc9b36eba7a52eb25a26af2d1adde56bed1ed0426170874b11bdbd96",
    ),
    ([("a: &x {b: 1}\nc: *x\n", "")], None, "sha256:d419e44c48bf01491010131ce18cbae3a83ff5eabbec751389e6305e028a7577"),
    ([("a: !!str 123\nb: !!int '7'\n", "")], None, "sha256:eb418197e93f8b1f7699b3a41445f3216650de9b4a1c7ed36e780472b678425d"),
    (
        [("a: 1e400\nb: -0b101\nc: 0o17\nd: +12\ne: .5\ng: 18446744073709551615\nh: 2001-12-14t21:59:43.10-05:00\n", "")],
        None,
        "sha256:b22219f150428ba443b1f91310aecbb8cf8384e2cbaf3ed3ebd6df69972048ff",
    ),
    (
        [("a: !!float 1\nb: !!bool 'yes'\nc: !!null ''\nd: !!str yes\n", "")],
        None,
        "sha256:172ddbaad211ee568b07392b6fdae4b48dd2ddab9fa29c472093e453575b04fd",
    ),
    (
        [("v", "a.b.c"), ("w", "a.b.d")],
        {"a": {"b": {"e": 1}}},
        "sha256:d7ce8f79e697058dda567f41c0e47b7cacd90cb8dd7fa3709c4af476d4cc376c",
    ),
    ([("x", "top")], {"top": {"nested": 1}}, "sha256:0f505c6ed2b08b33b23ffa1efef7b7feb612b4b28905e118b60b3add86094d4b"),
]


@pytest.mark.parametrize(("refs", "inline", "digest"), GO_VECTORS)
def test_the_composed_digest_equals_helm_controller_s_go_code(refs: list[tuple[str, str]], inline: Any, digest: str) -> None:
    objects = {("ConfigMap", f"c{i}"): cm(text, key="v") for i, (text, _path) in enumerate(refs)}
    values_refs = [ValuesRef("ConfigMap", f"c{i}", "v", path) for i, (_text, path) in enumerate(refs)]
    got = compose(NS, values_refs, inline, lookup_of(objects))
    assert (got.digest, got.unresolved) == (digest, "")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("f: -.inf\n", "hold .inf or .nan"),  # Go: "json: unsupported value: -Inf"
        ("y: 1\ntrue: 2\n", "duplicate or non-scalar key"),  # y is true in YAML 1.1
        ("a: !!binary aGk=\n", "tagged tag:yaml.org,2002:binary"),
        ("a: &x {b: 1}\nc:\n  <<: *x\n", "merge key"),
    ],
)
def test_values_helm_controller_fails_on_or_not_modelled_are_unresolved(text: str, why: str) -> None:
    got = compose(NS, [ValuesRef("ConfigMap", "c")], None, lookup_of({("ConfigMap", "c"): cm(text)}))
    assert got.digest == "" and why in got.unresolved, got
