"""Manual changes in the live cluster, as findings a person can act on (the input of a backport).

Why this exists: the rebuild that hurts is the one that silently loses last month's hotfix made
with ``kubectl``. Before a reconciler's self-heal or a rebuild erases such a change, rebuild has
to find it, say who made it and when, tell it apart from the cluster's own machinery (an HPA
scaling, controllers writing status and defaults, the reconciler applying git), and point at the
line in git that must change.

The package, along its seams (each module's docstring has the details):
    :mod:`~rebuild.capture.drift.defaults`        what the cluster makes by itself: the default
                                          exclusions, ``capture.kinds``, and the fields the API
                                          server fills in (:data:`SERVER_DEFAULTS`);
    :mod:`~rebuild.capture.drift.findings`        the finding types (:class:`Finding`, :class:`Noise`,
                                          :class:`Coverage`, :class:`DriftReport` ...), their
                                          messages, JSON and digest;
    :mod:`~rebuild.capture.drift.classification`  :func:`find_drift`: compare git with everything capture
                                          listed, attribute each difference to the field manager
                                          behind it (human, controller, reconciler) and measure
                                          DR coverage.

This module only re-exports the public API, so callers import from ``rebuild.capture.drift``.
Pure: values in, values out (no cluster, no git, no clock).
"""

from rebuild.capture.drift.classification import classifier_for, find_drift
from rebuild.capture.drift.defaults import (
    DEFAULT_EXCLUSIONS,
    SERVER_DEFAULTS,
    Exclusion,
    default_pull_policy,
    is_server_default,
    parse_image,
    strip_server_defaults,
)
from rebuild.capture.drift.findings import (
    CHANGE_THE_CHART,
    RENDERED_BY_HELM,
    Coverage,
    DriftReport,
    Excluded,
    Finding,
    FindingKind,
    HelmOrigin,
    Noise,
    Uncovered,
    ValueEdit,
    is_secret,
    path_to_json,
)

__all__ = [
    "CHANGE_THE_CHART",
    "DEFAULT_EXCLUSIONS",
    "RENDERED_BY_HELM",
    "SERVER_DEFAULTS",
    "Coverage",
    "DriftReport",
    "Excluded",
    "Exclusion",
    "Finding",
    "FindingKind",
    "HelmOrigin",
    "Noise",
    "Uncovered",
    "ValueEdit",
    "classifier_for",
    "default_pull_policy",
    "find_drift",
    "is_secret",
    "is_server_default",
    "parse_image",
    "path_to_json",
    "strip_server_defaults",
]
