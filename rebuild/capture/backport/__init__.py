"""Drift findings turned into edits of the files that declare them, plus the pull request text.

The package's public API; :mod:`.fields` holds it while the module is split along its seams.
"""

from rebuild.capture.backport.fields import Backport, clean_manifest, plan_backport

__all__ = [
    "Backport",
    "clean_manifest",
    "plan_backport",
]
