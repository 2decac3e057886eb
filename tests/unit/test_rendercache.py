"""The render cache gives back exactly what a render gives, skips kustomize on a hit, and never
stores what it must not (problems, remote bases, values it cannot keep). Real kustomize, no cluster."""

from __future__ import annotations

import dataclasses
import shutil
import stat
from pathlib import Path

import pytest

from rebuild.core.model import DesiredObject, ObjectRef, Source
from rebuild.desired import cache as rendercache
from rebuild.desired.cache import RenderCache, RenderKey
from rebuild.desired.render import FluxLayer, Problem, Rendered, render
from tests.unit.test_desired_corpus import CORPUS, PATHS
from tests.unit.test_drift import needs_kustomize

SHA = "0" * 40


def _entries(cache: RenderCache) -> list[Path]:
    return sorted(cache.root.glob("*.bin"))


@needs_kustomize
@pytest.mark.parametrize("name", ["components", "generators", "legacy", "shop-prefix", "deep"])
def test_a_hit_equals_the_render_field_for_field(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = CORPUS / name / "repo"
    fresh = render(repo, PATHS[name], label="src", namespace="team")
    cache = RenderCache(tmp_path / "cache")
    key = RenderKey(SHA, PATHS[name], "src", "team", "flux")
    first = cache.render(key, repo)
    assert (cache.hits, cache.misses) == (0, 1)
    assert first.objects == fresh.objects and first.warnings == fresh.warnings
    # A hit must not run kustomize (or read the checkout at all): render is made to fail.
    monkeypatch.setattr(rendercache, "render", lambda *a, **k: pytest.fail("rendered again on a hit"))
    second = RenderCache(tmp_path / "cache").render(key, tmp_path / "no-such-checkout")
    assert second.objects == fresh.objects
    assert second.warnings == fresh.warnings
    assert any(o.field_sources for o in second.objects)  # the file:line sources came back too
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in _entries(cache))


def test_field_sources_read_back_lazily_are_the_stored_ones() -> None:
    """A hit builds an object's field sources when first read (most never are): every way of
    reading them (source_of, field_source_files, the dict, replace, equality) gives what was stored."""
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}
    sources = {("data",): Source("a.yaml", 5), ("data", "k"): Source("gen.env", 1, "env", ("x", 0))}
    obj = DesiredObject(ObjectRef("", "ConfigMap", "ns", "a"), "v1", body, Source("a.yaml", 1), sources)
    back = [rendercache._load(rendercache._dump(Rendered([obj]))).objects[0] for _ in range(4)]
    files = [("a.yaml", ""), ("gen.env", "env")]
    assert sorted(back[0].field_source_files()) == files  # from the raw entry, nothing built
    assert "field_sources" not in back[0].__dict__
    assert back[0].source_of(("data", "k", "more")) == Source("gen.env", 1, "env", ("x", 0))
    assert back[0].source_of(("metadata",)) == Source("a.yaml", 1)
    assert back[0].field_sources == sources and sorted(back[0].field_source_files()) == files
    assert back[1] == obj and repr(back[1]) == repr(obj)
    assert dataclasses.replace(back[2], applied_by="x").field_sources == sources
    back[3].field_sources[("data", "k")] = Source("b.yaml", 2)  # a built dict is the object's own
    assert back[3].source_of(("data", "k")) == Source("b.yaml", 2)
    with pytest.raises(AttributeError):
        _ = back[3].no_such_attribute  # type: ignore[attr-defined]


@needs_kustomize
def test_every_part_of_the_key_is_a_different_entry(tmp_path: Path) -> None:
    repo = CORPUS / "guestbook" / "repo"
    cache = RenderCache(tmp_path / "cache")
    base = RenderKey(SHA, ".", "", "", "flux")
    variants = [
        base,
        RenderKey("1" * 40, ".", "", "", "flux"),
        RenderKey(SHA, ".", "g", "", "flux"),
        RenderKey(SHA, ".", "", "shop", "flux"),
        RenderKey(SHA, ".", "", "", "argocd"),
        RenderKey(SHA, ".", "", "", "flux", FluxLayer(fields={"namePrefix": "x-"})),
    ]
    results = [cache.render(k, repo) for k in variants]
    assert (cache.hits, cache.misses) == (0, len(variants))
    assert len(_entries(cache)) == len(variants)
    assert {o.ref.namespace for o in results[3].objects} - {""} == {"shop"}
    assert "shop" not in {o.ref.namespace for o in results[0].objects}
    prefixed = {o.ref.name for o in results[5].objects}
    assert prefixed == {f"x-{o.ref.name}" if o.ref.kind != "Namespace" else o.ref.name for o in results[0].objects}
    cache.render(base, repo)
    assert cache.hits == 1


@needs_kustomize
def test_a_render_with_problems_is_not_stored_and_a_broken_entry_renders_again(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(CORPUS / "guestbook" / "repo", repo)
    bad = repo / "broken"
    bad.mkdir()
    (bad / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
    cache = RenderCache(tmp_path / "cache")
    r = cache.render(RenderKey(SHA, "broken"), repo)
    assert [p.line for p in r.problems] == [1]
    assert _entries(cache) == []
    good = RenderKey(SHA, ".")
    want = cache.render(good, repo).objects
    (entry,) = _entries(cache)
    entry.write_bytes(entry.read_bytes()[:100])  # cut short, as by a full disk
    again = RenderCache(tmp_path / "cache")
    assert again.render(good, repo).objects == want
    assert (again.hits, again.misses) == (0, 1)


def test_remote_bases_and_unstorable_values_are_not_stored(tmp_path: Path) -> None:
    remote = DesiredObject(
        ObjectRef("", "ConfigMap", "a", "b"), "v1", {"kind": "ConfigMap"}, Source("kustomization.yaml", 3, "remote")
    )
    assert not rendercache._cacheable(Rendered([remote]))
    assert not rendercache._cacheable(Rendered(problems=[Problem("a.yaml", 1, "bad")]))
    import datetime

    dated = DesiredObject(
        ObjectRef("", "ConfigMap", "a", "b"), "v1", {"data": {"at": datetime.date(2024, 1, 1)}}, Source("cm.yaml", 1)
    )
    assert rendercache._cacheable(Rendered([dated]))
    with pytest.raises(ValueError):
        rendercache._dump(Rendered([dated]))


def test_old_entries_are_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendercache, "KEEP", 3)
    monkeypatch.setattr(rendercache, "render", lambda *a, **k: Rendered())
    cache = RenderCache(tmp_path / "cache")
    for i in range(5):
        cache.render(RenderKey(SHA, f"p{i}"), tmp_path)
    assert len(_entries(cache)) == 3


@needs_kustomize
def test_secret_values_are_never_stored_in_the_clear(tmp_path: Path) -> None:
    """Secret values live only in encrypted state: an entry is sealed with the cache's own key."""
    repo = tmp_path / "repo"
    repo.mkdir()
    value = "s3cr3t-" + "7f3a9c" * 4
    (repo / "secret.yaml").write_text(
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: shop\nstringData:\n  password: {value}\n"
    )
    cache = RenderCache(tmp_path / "cache")
    key = RenderKey(SHA, ".")
    assert cache.render(key, repo).objects[0].body["stringData"] == {"password": value}
    files = [p for p in cache.root.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"key"} and _entries(cache)
    for p in files:
        raw = p.read_bytes()
        assert value.encode() not in raw and b"s3cr3t" not in raw, p
    assert stat.S_IMODE((cache.root / "key").stat().st_mode) == 0o600
    again = RenderCache(tmp_path / "cache")
    assert again.render(key, tmp_path / "gone").objects[0].body["stringData"] == {"password": value}
    assert again.hits == 1
    (cache.root / "key").write_bytes(b"\0" * 32)  # another key: the entry cannot be read, so it is a miss
    other = RenderCache(tmp_path / "cache")
    assert other.render(key, repo).objects[0].body["stringData"] == {"password": value}
    assert (other.hits, other.misses) == (0, 1)
