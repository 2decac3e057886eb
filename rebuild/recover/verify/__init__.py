"""Desired (git) versus live: did the cluster converge to exactly what git declares?

Why this exists: after a rebuild (or at any time) rebuild has to prove that every object git
declares is in the cluster *as declared*, and every difference it reports must be one a person
can act on. A naive deep-diff drowns that in noise: the API server defaults dozens of fields,
controllers write replicas and annotations, lists come back in another order. So objects are
compared the way server-side apply sees ownership:

- Only fields git declares are compared. Identity (apiVersion, kind, metadata.name and
  namespace), ``status`` and server bookkeeping (managedFields, resourceVersion, uid,
  generation, creationTimestamp, ...) are skipped; server defaults git does not mention are
  therefore ignored without a list of defaults.
- Maps recurse. Lists Kubernetes merges by key (``x-kubernetes-list-map-keys`` of the core
  types: containers and env by name, container ports by containerPort+protocol, Service ports
  by port+protocol, volumeMounts by mountPath, ...) are matched item by item, so order does
  not matter and items others added are not compared. Set-lists (finalizers) need each git
  item present. Every other list is atomic: a list of scalars (args, command) is compared
  whole; a list of maps of the same length is compared element by element with the same
  "git-declared fields only" rule (tolerations, RBAC rules, ingress rules); a list of a
  different length is one difference holding both lists.
- Values are normalised only where Kubernetes itself treats them as equal: resource
  quantities (``500m`` == ``0.5``, ``1Gi`` == ``1073741824``, ``1`` == ``"1"``), IntOrString
  fields when both sides are numbers, int vs float of the same number, and a zero value in git
  (``{}``, ``[]``, ``""``, ``false``, ``0``) against a field absent live (Go ``omitempty``
  drops it). Everything else is strict; booleans are never numbers.
- Additions: a field git does not declare is still reported when a *human* field manager
  introduced it (``kubectl label``, a key added with ``kubectl patch``, an env var added with
  ``kubectl edit``): ownership, not presence, decides. The last-applied-configuration
  annotation is never reported.
- Ownership decides what is noise: a difference owned only by controllers (an HPA's replicas)
  is suppressed by default, while one owned by a person is kept, with its owners, so the
  message can say who changed it and when.
- Secrets: values never leave this module. ``stringData`` in git is compared with the
  base64-decoded ``data`` live and every Secret value in a difference is replaced by
  ``<redacted sha256:xxxxxxxx>`` (the first 8 hex digits of the SHA-256 of the value, enough to
  tell two values apart, too short to look one up in a table; a weak password could still be
  guessed by brute force against it, so treat reports as internal).

Not supported: strategic-merge directives (``$patch``) in rendered objects, list-map keys
of custom resources (their lists are atomic here), ``x-kubernetes-list-type: set`` other than
finalizers, JSON-path globs in ignore rules (a rule's path is a rendered prefix).

The package's public API. Its modules: :mod:`.comparison` (:func:`compare`, the walk),
:mod:`.values` (equality as Kubernetes sees it), :mod:`.results` (the differences found),
:mod:`.messages` (one line per difference for a person).
"""

from rebuild.core.config import IgnoreRule
from rebuild.core.model import LIST_KEYS
from rebuild.recover.verify.comparison import LAST_APPLIED, compare, redact
from rebuild.recover.verify.messages import describe, message
from rebuild.recover.verify.results import FieldDiff, ObjectResult, Suppressed
from rebuild.recover.verify.values import parse_quantity

__all__ = [
    "LAST_APPLIED",
    "LIST_KEYS",
    "FieldDiff",
    "IgnoreRule",
    "ObjectResult",
    "Suppressed",
    "compare",
    "describe",
    "message",
    "parse_quantity",
    "redact",
]
