"""The backport planner put together, and its entry point :func:`plan_backport`.

The planner is the field edits (:mod:`.fields`) and the object edits (:mod:`.objects`) over one
shared state (:mod:`.model`); this module runs them in order (fields, Secrets, created objects,
deletions) and assembles the :class:`Backport` with its pull request text (:mod:`.text`).
"""

from __future__ import annotations

from collections.abc import Mapping

from rebuild.capture.backport.fields import FieldEdits
from rebuild.capture.backport.model import Backport
from rebuild.capture.backport.objects import ObjectEdits
from rebuild.capture.backport.sops import SopsSecrets
from rebuild.capture.backport.text import commit_message, pr_body, pr_title
from rebuild.capture.drift import DriftReport
from rebuild.core.model import DesiredObject, ObjectRef


class _Planner(FieldEdits, ObjectEdits):
    """Every step of planning over one state."""


def plan_backport(
    report: DriftReport,
    desired: Mapping[ObjectRef, DesiredObject],
    files: Mapping[str, str],
    *,
    new_objects_dir: str,
    include_deletions: bool,
    root_kustomization: str | None = None,
    generated_root: str | None = None,
    sops_secrets: SopsSecrets | None = None,
) -> Backport:
    """Plan the edits and the PR for the reported (human) findings of ``report``.

    ``files`` maps repo-relative paths to their current text (every file the desired objects'
    sources name, every kustomization, and ``<new_objects_dir>/kustomization.yaml`` if it exists);
    ``root_kustomization`` is the kustomization the cluster path builds, used to include a newly
    created ``new_objects_dir``. ``sops_secrets`` writes the live values of Secrets declared in
    SOPS-encrypted files, encrypted (the only step that runs a program; without it they are
    listed). Never raises for a finding it cannot write: that is listed.
    """
    p = _Planner(report, desired, files, new_objects_dir, include_deletions, root_kustomization)
    p.generated_root = generated_root
    p.sops = sops_secrets
    for f in report.findings:
        if f.kind in ("changed", "added"):
            p.edit(f)
    p.secret_rows()
    for f in report.findings:
        if f.kind == "created":
            p.create(f)
    p.kustomize_created()
    for f in report.findings:
        if f.kind == "deleted":
            p.delete(f)

    listed: list[str] = []
    listed += [f"{f.ref}: {why}" for f, why in p.deletions_listed]
    listed += p.secrets
    listed += [
        f"{r.finding.ref} {r.finding.rendered}: not edited: {r.reason}" for r in p.rows if r.reason and not r.finding.secret_value
    ]
    listed += [f"{f.ref}: not written: {why}" for f, why in p.created_listed if not f.secret]
    listed += p.notes

    edits = {k: v for k, v in sorted(p.texts.edits.items()) if k in files and v != files[k]}
    backport = Backport(
        edits=edits,
        new_files=dict(sorted(p.new_files.items())),
        deleted_files=sorted(p.deleted_files),
        listed=listed,
        branch=f"rebuild/capture-{report.digest()}",
    )
    backport.title = pr_title(report)
    backport.body = pr_body(p, backport)
    backport.commit_message = commit_message(p, backport.title)
    return backport
