"""The capture pipeline: live objects, drift (who changed what), backport edits and the pull request."""
