"""rebuild.capture.yamledit: surgical edits keep every byte the edit does not need to change."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.capture.yamledit import (
    YamlEditError,
    append_document,
    delete_key,
    dump_clean,
    find_document,
    line_of,
    locate,
    remove_document,
    set_value,
)
from rebuild.capture.yamledit import emit as yamledit
from rebuild.core.model import FieldPath, render_path

DATA = Path(__file__).parent / "data" / "yamledit"
SHOP = (DATA / "shop.yaml").read_text()  # Deployment + Service + ConfigMap, trailing newline
NO_NL = (DATA / "no-final-newline.yaml").read_text()  # Namespace + ConfigMap, no final line break
ANCHORS = (DATA / "anchors.yaml").read_text()

DEPLOY, SERVICE, CONFIG = 0, 1, 2
APP: FieldPath = ("spec", "template", "spec", "containers", ("name", "app"))
SIDECAR: FieldPath = ("spec", "template", "spec", "containers", ("name", "sidecar"))


def diff(old: str, new: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines), line endings included; everything else is byte-identical."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    removed: list[str] = []
    added: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
    return removed, added


def load(text: str) -> list[Any]:
    return list(yaml.safe_load_all(text))


def get(obj: Any, *keys: Any) -> Any:
    for k in keys:
        obj = obj[k]
    return obj


# --------------------------------------------------------------------------- fixtures are realistic


def test_fixtures_have_the_layouts_under_test() -> None:
    assert SHOP.endswith("\n") and not NO_NL.endswith("\n")
    assert "labels: {app: cart, tier: web}" in SHOP  # flow mapping
    assert 'args: [--port, "8080"]' in SHOP  # flow sequence
    assert "        - name: app" in SHOP and "          - containerPort: 8080" in SHOP  # indented + indentless lists
    assert "app.properties: |" in SHOP and "motd: >-" in SHOP  # block scalars
    assert "---\n# the public face of cart" in SHOP
    assert [d["kind"] for d in load(SHOP)] == ["Deployment", "Service", "ConfigMap"]


# --------------------------------------------------------------------------- changing scalars


def test_changing_replicas_changes_exactly_one_line_and_keeps_its_comment() -> None:
    new = set_value(SHOP, DEPLOY, ("spec", "replicas"), 5)
    assert diff(SHOP, new) == (
        ["  replicas: 2   # scaled by hand during incidents\n"],
        ["  replicas: 5   # scaled by hand during incidents\n"],
    )
    assert load(new)[DEPLOY]["spec"]["replicas"] == 5


def test_setting_the_same_value_returns_the_text_unchanged() -> None:
    assert set_value(SHOP, DEPLOY, ("spec", "replicas"), 2) is SHOP
    assert set_value(SHOP, DEPLOY, ("metadata", "labels"), {"app": "cart", "tier": "web"}) is SHOP


def test_container_image_found_by_merge_key() -> None:
    new = set_value(SHOP, DEPLOY, (*APP, "image"), "registry.example.com/cart:1.5.0")
    assert diff(SHOP, new) == (
        ["          image: registry.example.com/cart:1.4.2  # bumped by CI\n"],
        ["          image: registry.example.com/cart:1.5.0  # bumped by CI\n"],
    )
    new = set_value(SHOP, DEPLOY, (*SIDECAR, "image"), "registry.example.com/proxy:2.1")
    assert diff(SHOP, new) == (
        ['          image: "registry.example.com/proxy:2.0"\n'],
        ['          image: "registry.example.com/proxy:2.1"\n'],
    )


def test_multi_key_selector_and_int_index() -> None:
    new = set_value(SHOP, DEPLOY, (*APP, "ports", ("containerPort,protocol", "8080,TCP"), "containerPort"), 9090)
    assert diff(SHOP, new) == (["          - containerPort: 8080\n"], ["          - containerPort: 9090\n"])
    new = set_value(SHOP, DEPLOY, ("spec", "template", "spec", "containers", 1, "name"), "proxy")
    assert diff(SHOP, new) == (["        - name: sidecar\n"], ["        - name: proxy\n"])


def test_quoted_strings_keep_their_quoting_with_proper_escaping() -> None:
    new = set_value(SHOP, CONFIG, ("data", "mode"), "it's slow")
    assert diff(SHOP, new) == (["  mode: 'fast'\n"], ["  mode: 'it''s slow'\n"])
    new = set_value(SHOP, CONFIG, ("data", "greeting"), 'say "hi" \\o/')
    assert diff(SHOP, new) == (
        ['  greeting: "hello, world"  # shown on the home page\n'],
        ['  greeting: "say \\"hi\\" \\\\o/"  # shown on the home page\n'],
    )
    assert load(new)[CONFIG]["data"]["greeting"] == 'say "hi" \\o/'
    # a single-quoted value that needs an escape becomes double-quoted
    new = set_value(SHOP, CONFIG, ("data", "mode"), "tab\there")
    assert diff(SHOP, new) == (["  mode: 'fast'\n"], ['  mode: "tab\\there"\n'])


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("1.5", '"1.5"'),
        ("8080", '"8080"'),
        ("true", '"true"'),
        ("yes", '"yes"'),
        ("y", '"y"'),
        ("null", '"null"'),
        ("~", '"~"'),
        ("1e3", '"1e3"'),
        ("0x1F", '"0x1F"'),
        ("2024-01-01", '"2024-01-01"'),
        ("- dash", '"- dash"'),
        ("a: b", '"a: b"'),
        ("", '""'),
        ("frontend", "frontend"),
        ("v1.2.3", "v1.2.3"),
    ],
)
def test_a_plain_string_stays_plain_only_while_it_still_reads_as_a_string(value: str, rendered: str) -> None:
    new = set_value(SHOP, DEPLOY, ("spec", "template", "metadata", "labels", "tier"), value)
    assert diff(SHOP, new) == (["        tier: web\n"], [f"        tier: {rendered}\n"])
    assert load(new)[DEPLOY]["spec"]["template"]["metadata"]["labels"]["tier"] == value


def test_non_string_values_are_written_plain() -> None:
    path = (*APP, "env", ("name", "LOG_LEVEL"), "value")
    for value, rendered in [(True, "true"), (None, "null"), (1.5, "1.5"), (7, "7")]:
        new = set_value(SHOP, DEPLOY, path, value)
        assert diff(SHOP, new) == (["              value: info\n"], [f"              value: {rendered}\n"])


def test_literal_block_scalar_keeps_indicator_and_indentation() -> None:
    new = set_value(SHOP, CONFIG, ("data", "app.properties"), "checkout.timeout=45s\ncheckout.retries=3\n")
    assert diff(SHOP, new) == (["    checkout.timeout=30s\n"], ["    checkout.timeout=45s\n"])
    # no final newline any more: the chomping indicator follows the value
    new = set_value(SHOP, CONFIG, ("data", "app.properties"), "only=1")
    assert diff(SHOP, new) == (
        ["  app.properties: |\n", "    checkout.timeout=30s\n", "    checkout.retries=3\n"],
        ["  app.properties: |-\n", "    only=1\n"],
    )
    assert load(new)[CONFIG]["data"]["app.properties"] == "only=1"


def test_folded_block_scalar_keeps_its_style() -> None:
    new = set_value(SHOP, CONFIG, ("data", "motd"), "Welcome to the new cart service.")
    assert diff(SHOP, new) == (
        ["    Welcome to the cart\n", "    service.\n"],
        ["    Welcome to the new cart service.\n"],
    )
    new = set_value(SHOP, CONFIG, ("data", "motd"), "line one\nline two")
    assert load(new)[CONFIG]["data"]["motd"] == "line one\nline two"
    assert "  motd: >-\n    line one\n\n    line two\n  mode: 'fast'\n" in new


def test_a_value_a_block_scalar_cannot_hold_falls_back_to_double_quotes() -> None:
    new = set_value(SHOP, CONFIG, ("data", "motd"), "trailing space \nx")
    assert diff(SHOP, new) == (
        ["  motd: >-\n", "    Welcome to the cart\n", "    service.\n"],
        ['  motd: "trailing space \\nx"\n'],
    )


def test_scalar_inside_flow_collections() -> None:
    new = set_value(SHOP, DEPLOY, (*APP, "args", 1), "9090")
    assert diff(SHOP, new) == (['          args: [--port, "8080"]\n'], ['          args: [--port, "9090"]\n'])
    new = set_value(SHOP, DEPLOY, (*APP, "args", 0), "--listen, all")  # a comma is not plain in flow context
    assert diff(SHOP, new) == (['          args: [--port, "8080"]\n'], ['          args: ["--listen, all", "8080"]\n'])
    new = set_value(SHOP, DEPLOY, (*APP, "resources", "limits", "cpu"), "1")
    assert diff(SHOP, new) == (
        ["            limits: {cpu: 500m, memory: 256Mi}\n"],
        ['            limits: {cpu: "1", memory: 256Mi}\n'],
    )


# --------------------------------------------------------------------------- inserting


def test_add_a_label_into_a_flow_mapping() -> None:
    new = set_value(SHOP, DEPLOY, ("metadata", "labels", "team"), "payments")
    assert diff(SHOP, new) == (
        ["  labels: {app: cart, tier: web}\n"],
        ["  labels: {app: cart, tier: web, team: payments}\n"],
    )


def test_add_a_label_into_a_block_mapping() -> None:
    new = set_value(SHOP, DEPLOY, ("spec", "template", "metadata", "labels", "team"), "payments")
    assert diff(SHOP, new) == ([], ["        team: payments\n"])
    assert "        tier: web\n        team: payments\n    spec:\n" in new


def test_add_labels_when_the_object_has_none() -> None:
    new = set_value(SHOP, SERVICE, ("metadata", "labels", "team"), "payments")
    assert diff(SHOP, new) == ([], ["  labels:\n", "    team: payments\n"])
    assert "  namespace: shop\n  labels:\n    team: payments\nspec:\n" in new
    assert load(new)[SERVICE]["metadata"]["labels"] == {"team": "payments"}


def test_add_a_nested_mapping_at_the_files_indentation() -> None:
    new = set_value(SHOP, DEPLOY, (*APP, "resources", "requests"), {"cpu": "100m", "memory": "128Mi"})
    assert diff(SHOP, new) == ([], ["            requests:\n", "              cpu: 100m\n", "              memory: 128Mi\n"])
    assert "limits: {cpu: 500m, memory: 256Mi}\n            requests:\n" in new


def test_add_an_env_var_in_the_lists_own_style() -> None:
    new = set_value(SHOP, DEPLOY, (*APP, "env", ("name", "NEW")), {"name": "NEW", "value": "x"})
    assert diff(SHOP, new) == ([], ["            - name: NEW\n", "              value: x\n"])
    assert "value: 'beta,fast-checkout'\n            - name: NEW\n              value: x\n          # resources" in new
    # the same item created from a path that goes through the missing item
    assert set_value(SHOP, DEPLOY, (*APP, "env", ("name", "NEW"), "value"), "x") == new


def test_append_to_an_indentless_list_with_a_multi_key_selector() -> None:
    path = (*APP, "ports", ("containerPort,protocol", "9090,TCP"))
    new = set_value(SHOP, DEPLOY, path, {"containerPort": 9090, "protocol": "TCP"})
    old_ports = "          - containerPort: 8080\n            protocol: TCP\n"
    assert new == SHOP.replace(old_ports, old_ports + "          - containerPort: 9090\n            protocol: TCP\n")
    assert get(load(new)[DEPLOY], "spec", "template", "spec", "containers", 0, "ports")[-1] == {
        "containerPort": 9090,
        "protocol": "TCP",
    }


def test_create_a_missing_list_uses_the_nearest_sequence_style() -> None:
    new = set_value(SHOP, DEPLOY, (*SIDECAR, "env"), [{"name": "A", "value": "1"}])
    assert diff(SHOP, new) == ([], ["          env:\n", "            - name: A\n", '              value: "1"\n'])


def test_append_to_a_flow_sequence() -> None:
    new = set_value(SHOP, DEPLOY, (*APP, "args", 2), "--verbose")
    assert diff(SHOP, new) == (['          args: [--port, "8080"]\n'], ['          args: [--port, "8080", --verbose]\n'])
    assert set_value(SHOP, DEPLOY, (*APP, "args"), ["--port", "8080", "--verbose"]) == new


def test_a_dict_onto_an_existing_mapping_only_touches_what_changed() -> None:
    labels = {"app": "cart", "tier": "backend", "team": "payments"}
    new = set_value(SHOP, DEPLOY, ("spec", "template", "metadata", "labels"), labels)
    assert diff(SHOP, new) == (["        tier: web\n"], ["        tier: backend\n", "        team: payments\n"])


def test_insert_into_a_multi_line_flow_mapping() -> None:
    text = "a: {\n  x: 1,\n  y: 2\n}\n"
    assert set_value(text, 0, ("a", "z"), 3) == "a: {\n  x: 1,\n  y: 2,\n  z: 3\n}\n"


def test_a_new_multi_line_string_is_a_literal_block() -> None:
    new = set_value(SHOP, CONFIG, ("data", "banner"), "multi\nline\n")
    assert diff(SHOP, new) == ([], ["  banner: |\n", "    multi\n", "    line\n"])


# --------------------------------------------------------------------------- deleting


def test_delete_a_key_removes_only_its_lines() -> None:
    new = delete_key(SHOP, DEPLOY, (*APP, "args"))
    assert diff(SHOP, new) == (['          args: [--port, "8080"]\n'], [])
    new = delete_key(SHOP, CONFIG, ("data", "motd"))
    assert diff(SHOP, new) == (["  motd: >-\n", "    Welcome to the cart\n", "    service.\n"], [])


def test_delete_a_list_item_and_a_flow_entry() -> None:
    new = delete_key(SHOP, DEPLOY, (*APP, "env", ("name", "LOG_LEVEL")))
    assert diff(SHOP, new) == (["            - name: LOG_LEVEL\n", "              value: info\n"], [])
    new = delete_key(SHOP, DEPLOY, ("metadata", "labels", "app"))
    assert diff(SHOP, new) == (["  labels: {app: cart, tier: web}\n"], ["  labels: {tier: web}\n"])
    new = delete_key(SHOP, DEPLOY, ("metadata", "labels", "tier"))
    assert diff(SHOP, new) == (["  labels: {app: cart, tier: web}\n"], ["  labels: {app: cart}\n"])


def test_delete_the_first_key_of_a_list_item_pulls_the_next_key_up() -> None:
    new = delete_key(SHOP, DEPLOY, (*SIDECAR, "name"))
    assert diff(SHOP, new) == (
        ["        - name: sidecar\n", '          image: "registry.example.com/proxy:2.0"\n'],
        ['        - image: "registry.example.com/proxy:2.0"\n'],
    )


def test_delete_the_last_key_leaves_an_empty_mapping() -> None:
    new = delete_key(SHOP, DEPLOY, ("metadata", "annotations", "owner"))
    assert diff(SHOP, new) == (["  annotations:\n", '    owner: "team-cart"  # who to page\n'], ["  annotations: {}\n"])
    assert load(new)[DEPLOY]["metadata"]["annotations"] == {}


def test_delete_the_only_key_of_a_list_item_leaves_an_empty_item() -> None:
    text = "items:\n- name: a\n- name: b\n  image: x\n"
    assert delete_key(text, 0, ("items", 0, "name")) == "items:\n- {}\n- name: b\n  image: x\n"
    text = "items:\n-\n  # the first\n  name: a\n  image: x\n"
    assert delete_key(text, 0, ("items", 0, "name")) == "items:\n-\n  # the first\n  image: x\n"


def test_delete_a_missing_key_is_an_error() -> None:
    with pytest.raises(YamlEditError, match="not in the file"):
        delete_key(SHOP, DEPLOY, ("spec", "paused"))


# --------------------------------------------------------------------------- files without a final newline, CRLF


def test_a_file_without_a_final_newline_stays_without_one() -> None:
    new = set_value(NO_NL, 1, ("data", "level"), "debug")
    assert new == NO_NL[: -len("warn")] + "debug"
    new = set_value(NO_NL, 1, ("data", "extra"), "on")
    assert new == NO_NL + '\n  extra: "on"'
    new = delete_key(NO_NL, 1, ("data", "level"))
    assert new == NO_NL[: -len("\n  level: warn")]
    new = set_value(NO_NL, 0, ("metadata", "labels"), {"team": "x"})
    assert diff(NO_NL, new) == ([], ["  labels:\n", "    team: x\n"])


def test_crlf_files_keep_crlf() -> None:
    crlf = SHOP.replace("\n", "\r\n")
    new = set_value(crlf, DEPLOY, ("spec", "template", "metadata", "labels", "team"), "payments")
    new = set_value(new, CONFIG, ("data", "app.properties"), "a=1\nb=2\n")
    assert "\n" not in new.replace("\r\n", "")
    assert diff(crlf, new) == (
        ["    checkout.timeout=30s\r\n", "    checkout.retries=3\r\n"],
        ["        team: payments\r\n", "    a=1\r\n", "    b=2\r\n"],
    )


# --------------------------------------------------------------------------- documents


def test_find_document_for_each_doc() -> None:
    assert find_document(SHOP, kind="Deployment", name="cart", namespace="shop") == DEPLOY
    assert find_document(SHOP, kind="Service", name="cart", namespace="shop") == SERVICE
    assert find_document(SHOP, kind="ConfigMap", name="cart-config", namespace="shop") == CONFIG
    assert find_document(SHOP, kind="Service", name="cart", namespace="other") is None
    assert find_document(SHOP, kind="Secret", name="cart", namespace="shop") is None
    assert find_document(NO_NL, kind="Namespace", name="shop", namespace=None) == 0
    assert find_document(NO_NL, kind="Namespace", name="shop", namespace="") == 0
    # a document without a namespace matches a requested one (kustomize / kubectl -n set it)
    assert find_document(NO_NL, kind="ConfigMap", name="flags", namespace="shop") == 1
    assert find_document(SHOP, kind="ConfigMap", name="cart-config", namespace=None) is None


def test_line_of_and_locate() -> None:
    lines = SHOP.splitlines()
    assert lines[(line_of(SHOP, DEPLOY, ("spec", "replicas")) or 0) - 1] == "  replicas: 2   # scaled by hand during incidents"
    assert line_of(SHOP, DEPLOY, (*APP, "image")) == 24
    assert line_of(SHOP, DEPLOY, APP) == 23  # a list item: the line of its "- "
    assert line_of(SHOP, SERVICE, ("spec", "ports", 0, "port")) == 50
    assert line_of(SHOP, CONFIG, ()) == 55
    assert line_of(SHOP, SERVICE, ("metadata", "labels")) is None
    assert line_of(SHOP, DEPLOY, ("spec", "replicas", "x")) is None

    span = locate(SHOP, DEPLOY, (*APP, "image"))
    assert span is not None and SHOP[span.start : span.end] == "registry.example.com/cart:1.4.2"
    assert (span.line, span.column, span.end_line) == (24, 18, 24)
    span = locate(SHOP, CONFIG, ("data", "motd"))
    assert span is not None and SHOP[span.start : span.end] == ">-\n    Welcome to the cart\n    service."
    assert (span.line, span.end_line) == (65, 67)
    span = locate(SHOP, DEPLOY, ("metadata", "labels"))
    assert span is not None and SHOP[span.start : span.end] == "{app: cart, tier: web}"
    span = locate(SHOP, DEPLOY, (*APP, "args", 1))
    assert span is not None and SHOP[span.start : span.end] == '"8080"'
    assert locate(SHOP, DEPLOY, ("nope",)) is None


def test_append_document() -> None:
    new = append_document(SHOP, "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n")
    assert new == SHOP + "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n"
    assert find_document(new, kind="Secret", name="s", namespace=None) == 3
    new = append_document(NO_NL, "---\na: 1\n")
    assert new == NO_NL + "\n---\na: 1"
    assert append_document("", "a: 1\n") == "a: 1\n"
    assert append_document("a: 1\n---\n", "b: 2\n") == "a: 1\n---\nb: 2\n"  # fills the empty last document


def test_remove_document() -> None:
    new = remove_document(SHOP, SERVICE)
    assert [d["kind"] for d in load(new)] == ["Deployment", "ConfigMap"]
    service = SHOP[SHOP.index("---\n# the public face") : SHOP.index("---\napiVersion: v1\nkind: ConfigMap")]
    assert service.count("\n") == 15  # the separator, the comment, 12 lines of Service, the blank line
    assert new == SHOP.replace(service, "")
    new = remove_document(SHOP, DEPLOY)  # the first document: no leading "---" left behind
    assert new.startswith("# the public face of cart\napiVersion: v1\nkind: Service\n")
    new = remove_document(SHOP, CONFIG)
    assert new == SHOP[: SHOP.index("---\napiVersion: v1\nkind: ConfigMap")]
    new = remove_document(NO_NL, 1)
    assert new == "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop"
    assert remove_document("a: 1\n", 0) == ""


def test_dump_clean() -> None:
    obj = {
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "cart"}},
        "metadata": {"labels": {"app": "cart"}, "name": "cart", "namespace": "shop"},
        "kind": "Service",
        "apiVersion": "v1",
    }
    assert dump_clean(obj) == (
        "apiVersion: v1\n"
        "kind: Service\n"
        "metadata:\n"
        "  name: cart\n"
        "  namespace: shop\n"
        "  labels:\n"
        "    app: cart\n"
        "spec:\n"
        "  ports:\n"
        "  - port: 80\n"
        "    protocol: TCP\n"
        "  selector:\n"
        "    app: cart\n"
    )
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"port": "8080", "s": "a\nb\n", "n": ""}}
    out = dump_clean(cm)
    assert out.endswith('data:\n  port: "8080"\n  s: |\n    a\n    b\n  "n": ""\n')  # n is a bool to go-yaml
    assert yaml.safe_load(out) == cm
    assert "  ports:\n    - port: 80\n" in dump_clean(obj, indent_sequences=True)


# --------------------------------------------------------------------------- refusing


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (("metadata", "labels", "app"), "anchored"),
        (("metadata", "labels", "team"), "anchored"),
        (("metadata", "annotations", "copied", "app"), "alias"),
        (("data", "base", "a"), "anchored"),
        (("data", "merged", "c"), "merge key"),
        (("data", "merged", "a"), "merge key"),
    ],
)
def test_refuse_to_edit_through_anchors_aliases_and_merge_keys(path: FieldPath, reason: str) -> None:
    with pytest.raises(YamlEditError, match=reason) as exc:
        set_value(ANCHORS, 0, path, "z")
    assert exc.value.path == path
    assert render_path(path) in str(exc.value)


def test_reading_follows_aliases_and_merges() -> None:
    assert line_of(ANCHORS, 0, ("data", "merged", "a")) == 10  # declared in the anchored &base mapping
    assert line_of(ANCHORS, 0, ("metadata", "annotations", "copied", "app")) == 6


def test_refuse_templated_invalid_and_out_of_range() -> None:
    with pytest.raises(YamlEditError, match="templated"):
        set_value("image: '{{ .Values.image }}'\n", 0, ("image",), "x")
    with pytest.raises(YamlEditError, match="not valid YAML"):
        set_value("image: {{ .Values.image }}\n", 0, ("image",), "x")
    with pytest.raises(YamlEditError, match="document 3 does not exist"):
        set_value(SHOP, 3, ("a",), 1)
    with pytest.raises(YamlEditError, match=r"spec\.replicas is not a mapping"):
        set_value(SHOP, DEPLOY, ("spec", "replicas", "x"), 1)
    with pytest.raises(YamlEditError, match="out of range"):
        set_value(SHOP, DEPLOY, (*APP, "args", 5), "x")
    with pytest.raises(YamlEditError, match="not a YAML value"):
        set_value(SHOP, DEPLOY, ("spec", "replicas"), object())
    with pytest.raises(YamlEditError, match="appears 2 times"):
        set_value("a: 1\na: 2\n", 0, ("a",), 3)


def test_an_edit_that_would_not_load_back_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net: a rendering bug can never hand back broken or wrong YAML."""
    monkeypatch.setattr(yamledit, "_scalar_text", lambda value, **kw: "[broken")
    with pytest.raises(YamlEditError, match="invalid YAML"):
        set_value(SHOP, DEPLOY, (*APP, "image"), "x")
    monkeypatch.setattr(yamledit, "_scalar_text", lambda value, **kw: "web")
    with pytest.raises(YamlEditError, match="would not load as intended"):
        set_value(SHOP, DEPLOY, ("spec", "template", "metadata", "labels", "tier"), "frontend")


def _leaves(obj: Any, path: FieldPath = ()) -> list[FieldPath]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaves(v, (*path, k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _leaves(v, (*path, i))]
    return [path]


@pytest.mark.parametrize("text", [SHOP, NO_NL], ids=["shop", "no-final-newline"])
def test_every_leaf_can_be_changed_touching_only_its_own_lines(text: str) -> None:
    for doc, data in enumerate(load(text)):
        for path in _leaves(data):
            span = locate(text, doc, path)
            assert span is not None, path
            first = text.rfind("\n", 0, span.start) + 1
            last = text.find("\n", span.end)
            last = len(text) if last == -1 else last
            for value in ("zz changed", 42):
                new = set_value(text, doc, path, value)
                assert new.startswith(text[:first]) and new.endswith(text[last:]), (path, value)
                assert get(load(new)[doc], *path) == value
