"""Drive the Pulumi programs in rebuild/programs/ through the Automation API, offline and predictably.

The package's public API: :mod:`.stack` is the stack driver (workspace, config, up/preview/destroy,
state repair), :mod:`.command` the CLI runner and the one place its errors are classified.
"""

from rebuild.adapters.pulumi.command import Command, classify
from rebuild.adapters.pulumi.stack import STACKS_DIR, STALE_TMP_SECONDS, Pulumi, StackResult

__all__ = ["STACKS_DIR", "STALE_TMP_SECONDS", "Command", "Pulumi", "StackResult", "classify"]
