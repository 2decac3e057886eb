"""With several sources, desired state labels files `<source>:<path>`; capture edits files of
one checkout, so the label is taken off before planning the backport."""

from __future__ import annotations

from rebuild.capture.run import _in_repo
from rebuild.core.model import DesiredObject, ObjectRef, Source


def test_in_repo_strips_only_its_own_label() -> None:
    ref = ObjectRef("apps", "Deployment", "shop", "cart")
    obj = DesiredObject(
        ref,
        "apps/v1",
        {"kind": "Deployment"},
        Source("apps:base/cart.yaml", 1),
        {("spec", "replicas"): Source("apps:overlays/demo/kustomization.yaml", 9), ("metadata",): Source("platform:x.yaml", 2)},
    )
    out = _in_repo(obj, "apps")
    assert out.source == Source("base/cart.yaml", 1)
    assert out.field_sources[("spec", "replicas")] == Source("overlays/demo/kustomization.yaml", 9)
    assert out.field_sources[("metadata",)] == Source("platform:x.yaml", 2)  # another repo's: left alone
    plain = DesiredObject(ref, "apps/v1", {}, Source("base/cart.yaml", 1))
    assert _in_repo(plain, "apps") is plain
