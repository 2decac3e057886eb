"""Drift findings turned into edits of the files that declare them, plus the pull request text.

Why this exists: a manual change is only safe once git holds it; otherwise the next reconcile or
rebuild erases it. Writing it back by hand means finding which of base manifest, overlay patch or
``kustomization.yaml`` entry produced the field, and re-typing values without breaking the
author's layout. This module does that from a :class:`rebuild.capture.drift.DriftReport`: each finding is
written to the place :meth:`rebuild.core.model.DesiredObject.source_of` names, through
:mod:`rebuild.capture.yamledit`, which changes only the bytes of that value (comments, quoting, key order,
indentation and the other documents stay byte-identical). What cannot be written safely is not
guessed at: it is listed in the pull request with the reason.

Where each finding goes
    changed   the file and document the field's value comes from: the base manifest; the overlay's
              strategic-merge patch when a patch set it (the patch document for that object); the
              ``value`` of the JSON 6902 operation whose ``path`` covers it (an ``add .../-`` append
              only when the live list differs from git in its last item, the appended one); the
              ``images:`` entry of a kustomization (``newTag``, ``newName`` and ``digest`` from the
              live image reference) or its ``replicas:`` entry (``count``). A field present in git
              and gone live is deleted from the base manifest; from a patch it is not (the base value
              would come back), that is listed. A field set by a kustomize transformer (it is not
              written in the file the source names) or an inline patch in ``kustomization.yaml`` is
              listed.
    added     where its nearest declared parent is: :meth:`DesiredObject.source_of` of the new path,
              which is the overlay patch when the overlay declares the parent for this object (so a
              change seen in this cluster stays in this cluster's overlay) and the base manifest
              otherwise. Missing intermediate keys are created.
    created   a clean manifest (:func:`clean_manifest`, :data:`rebuild.capture.drift.SERVER_DEFAULTS`) written to
              ``<new_objects_dir>/<namespace>/<kind>-<name>.yaml`` and added to
              ``<new_objects_dir>/kustomization.yaml``; when that kustomization is new, the folder is
              added to ``root_kustomization`` if given, else the PR says which file must list it.
    deleted   with ``include_deletions``: the document is removed, an emptied file is deleted and
              dropped from every kustomization in ``files`` that lists it. An object an overlay
              patches is not removed (kustomize would fail on the orphaned patch): listed. Without
              ``include_deletions`` every deletion is listed.
    Secrets   values are never written in clear (not to files, the title, body or commit message):
              the PR names the Secret and the keys whose values differ, who changed them, and asks
              for the new value encrypted with SOPS. A Secret declared in a SOPS-encrypted file
              whose ``.sops.yaml`` rule has age recipients only gets its live values written
              *encrypted* instead: the file decrypted, changed and encrypted again in memory
              (:mod:`.sops`, given as ``sops_secrets``). A created Secret is listed. Other fields of
              a Secret (labels) are edited like any object's, unless the document is SOPS-encrypted
              (any edit would break its MAC), which is listed.

Pure: texts in, texts out. The caller reads ``files`` and writes the result.

The package's public API. Its modules: :mod:`.plan` (the entry point), :mod:`.fields` (changed
and added fields), :mod:`.objects` (created and deleted objects), :mod:`.text` (the pull
request's title, body and commit message), :mod:`.model` (the result and the shared state).
"""

from rebuild.capture.backport.model import Backport
from rebuild.capture.backport.objects import clean_manifest
from rebuild.capture.backport.plan import plan_backport
from rebuild.capture.backport.sops import SopsSecrets

__all__ = [
    "Backport",
    "SopsSecrets",
    "clean_manifest",
    "plan_backport",
]
