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


def test_inline_values_win_over_a_target_path_at_the_same_place() -> None:
    # ReplacePathValue runs after spec.values were merged in, but spec.values are merged again last
    objects = {("ConfigMap", "c"): cm("from-cm", key="tag")}
    got = compose_values(NS, [ValuesRef("ConfigMap", "c", "tag", "image.tag")], {"image": {"tag": "inline"}}, lookup_of(objects))
    assert got == {"image": {"tag": "inline"}}


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


def test_inline_values_are_not_mutated_by_a_target_path() -> None:
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
