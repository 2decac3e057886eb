"""Surgical, layout-preserving edits of hand-written Kubernetes YAML manifests.

Why this exists: drift capture backports a few changed fields into files people wrote by hand.
Re-dumping a document (even ruamel's round-trip mode with one indent setting) normalises
indentation, sequence style, quoting and flow collections, so the pull request would show
unrelated churn and lose the author's layout and comments. This package edits the *text*
instead: PyYAML parses the file only to learn where every node starts and ends (``Mark``
offsets), the new token(s) are spliced in at that position, and every other byte is left alone.

Every public edit is checked before it is returned: the result must parse, the edited path must
hold the new value, and every other value of every document must load exactly as before. If any
of that fails, or the edit cannot be done safely (the path goes through an anchor, an alias or a
``<<`` merge key, the value is templated, the layout is unusual), ``YamlEditError`` is raised and
no text is produced. Pure functions over ``str``; no I/O.

This module is the public API; the parts, each importing only the ones listed before it:
- ``parse``: the error type, the positional parse (anchors and aliases kept apart), loading back;
- ``emit``: values as YAML text in a given style, ``dump_clean`` for new manifests;
- ``geometry``: node extents, walking a path, the file's indentation and sequence style;
- ``splice``: replacing, inserting and deleting a node's text, setting values recursively;
- ``ops``: the public reads and the verified edits.
"""

from rebuild.capture.yamledit.emit import dump_clean
from rebuild.capture.yamledit.geometry import Span
from rebuild.capture.yamledit.ops import append_document, delete_key, find_document, line_of, locate, remove_document, set_value
from rebuild.capture.yamledit.parse import YamlEditError

__all__ = [
    "Span",
    "YamlEditError",
    "append_document",
    "delete_key",
    "dump_clean",
    "find_document",
    "line_of",
    "locate",
    "remove_document",
    "set_value",
]
