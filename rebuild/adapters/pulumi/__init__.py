"""Drive the Pulumi programs in rebuild/programs/ through the Automation API, offline and predictably.

The package's public API; :mod:`.stack` holds it while the module is split along its seams.
"""

from rebuild.adapters.pulumi.stack import STACKS_DIR, STALE_TMP_SECONDS, Command, Pulumi, StackResult, classify

__all__ = ["STACKS_DIR", "STALE_TMP_SECONDS", "Command", "Pulumi", "StackResult", "classify"]
