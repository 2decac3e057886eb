"""One error tree for everything rebuild can refuse or fail at.

The CLI maps every ``RebuildError`` to exit code 2 and prints its message on one line
(plus the fix), so a user never sees a traceback for a problem they can act on. Each
subclass names a layer (config, toolchain, cluster, stack, git, forge) so callers can
catch what they can handle and let the rest surface.
"""

from __future__ import annotations


class RebuildError(Exception):
    """Base of every error rebuild reports to a user.

    ``fix`` is the one-line instruction printed after the message.
    """

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message} (fix: {self.fix})"
        return self.message


class ConfigError(RebuildError):
    """rebuild.yaml, a stack config or a command line is wrong."""


class ToolchainError(RebuildError):
    """A tool is missing, or could not be built or installed."""


class ClusterError(RebuildError):
    """A cluster could not be created, reached, or torn down."""


class PortInUseError(ClusterError):
    """A requested listener port is already taken."""


class KubeError(RebuildError):
    """The Kubernetes API refused or failed a request."""

    def __init__(self, message: str, *, status: int = 0, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.status = status


class StackError(RebuildError):
    """A Pulumi stack operation failed."""


class StackLockedError(StackError):
    """Another update holds the stack's lock."""


class PluginMissingError(StackError):
    """A Pulumi plugin (provider or language host) is not installed."""


class ProgramError(StackError):
    """The Pulumi program itself raised or failed to compile."""


class StackNotFoundError(StackError):
    """The named stack does not exist in the backend."""


class GitError(RebuildError):
    """A git repository could not be read, fetched or written."""


class ForgeError(RebuildError):
    """The forge (Gitea, GitHub, GitLab) refused or failed a request."""


class Interrupted(RebuildError):
    """The user pressed Ctrl-C (SIGINT) or the run was terminated; exit code 130.

    Raised only once whatever was running has stopped cleanly (a Pulumi update cancelled
    and its lock released, files written atomically), so the message can honestly say that
    rerunning the same command continues from where it stopped.
    """

    def __init__(self, message: str, *, fix: str | None = None, phase: str = "") -> None:
        super().__init__(message, fix=fix)
        self.phase = phase
