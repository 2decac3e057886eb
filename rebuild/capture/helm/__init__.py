"""Capture of what Flux HelmReleases rendered: covered by git, compared, and written back to ``values:``.

Why this exists: most Flux repositories install their platform as HelmReleases, so most live
objects of such a cluster were made by a chart from one HelmRelease in git. Without this package
capture counts them as "not covered by git" and never sees a manual change to them.

Along its seams:
    :mod:`.rendered`  Helm's record of a release (its rendered manifest) as desired objects whose
                      source is the HelmRelease's file:line (pure);
    :mod:`.read`      the I/O: one GET of each release's storage Secret, named by the live
                      HelmRelease's status;
    :mod:`.values`    the 1:1 rule: which ``spec.values`` leaf a drifted field comes from, when that
                      is certain enough to edit (pure; the rule is in its docstring).

The drift classification (:func:`rebuild.capture.drift.find_drift`) compares the rendered objects
like any desired object; :func:`attribute` then gives each finding on one its
:class:`~rebuild.capture.drift.HelmOrigin`, which the backport turns into an edit of the
HelmRelease's values or a line for a person ("change the chart or its values").
"""

from rebuild.capture.helm.read import read_rendered, stale_values
from rebuild.capture.helm.rendered import (
    ReleaseRecord,
    RenderedRelease,
    decode_manifest,
    helm_release_of,
    rendered_objects,
    target_namespace,
)
from rebuild.capture.helm.values import attribute, map_field, origin

__all__ = [
    "ReleaseRecord",
    "RenderedRelease",
    "attribute",
    "decode_manifest",
    "helm_release_of",
    "map_field",
    "origin",
    "read_rendered",
    "rendered_objects",
    "stale_values",
    "target_namespace",
]
