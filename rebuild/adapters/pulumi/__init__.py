"""Drive Pulumi programs through the Automation API, offline and predictably: the built-in ones of
rebuild/programs/ and the user's own projects.

The package's public API: :mod:`.stack` is the stack driver (workspace, config, up/preview/destroy,
outputs), :mod:`.backend` where the state lives and how its secrets are encrypted, :mod:`.project`
a user's project (its private copy, its virtualenv or YAML host), :mod:`.filestate` the repairs of
a file backend, :mod:`.command` the CLI runner and the one place its errors are classified.
"""

from rebuild.adapters.pulumi.backend import Backend
from rebuild.adapters.pulumi.command import Command, classify
from rebuild.adapters.pulumi.project import UserProject
from rebuild.adapters.pulumi.stack import STACKS_DIR, STALE_TMP_SECONDS, Prepared, Pulumi, StackResult

__all__ = [
    "STACKS_DIR",
    "STALE_TMP_SECONDS",
    "Backend",
    "Command",
    "Prepared",
    "Pulumi",
    "StackResult",
    "UserProject",
    "classify",
]
