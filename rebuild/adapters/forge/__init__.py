"""Pull requests on a forge (Gitea, GitHub, GitLab): find, create, update, and never twice.

Why it exists: ``rebuild capture`` ends in a pull request, and a scheduled capture runs every
hour. If each run opened a new PR, or a flaky network turned one capture into two PRs, people
would stop reading them and the hotfix made with kubectl would be lost anyway. So this module
owns three promises:

- **Idempotent.** The PR body carries a hidden marker ``<!-- rebuild-capture digest=<d> -->``
  (the digest of the findings). :func:`ensure_pull_request` finds the open PR whose head branch
  starts with the capture prefix: same digest -> ``unchanged``; other digest -> its title and
  body are ``updated`` (and the caller pushes the new commit to *that* PR's branch); none ->
  ``created``.
- **Never duplicated.** A create that timed out or got a 5xx may have succeeded on the server.
  Before every retry of a create, and after a 409/422 "already exists", the client looks for an
  open PR with that exact head and returns it instead of posting again. If that look-up itself
  fails, the create is *not* retried blindly: an error beats a duplicate.
- **Retries only what can heal**, written down as data (:class:`RetryPolicy`, the project's one
  policy and loop from rebuild/core/retry.py): 5xx, 429 (and
  GitHub's 403 rate limit) honouring ``Retry-After``, connection errors and timeouts, with
  exponential backoff bounded in attempts and in total wait, and one log line per attempt
  (``Request attempt #2/5 failed; will retry: POST /api/v1/repos/o/r/pulls -> 503``). Other
  4xx are never retried: they become a :class:`ForgeHTTPError` naming the forge, the repo, the
  operation, the status, the forge's own message and the fix.

The token is held in a :class:`_Secret` (``***`` in every repr and str), sent only in a request
header (never in a URL, argv or log line), and scrubbed from any message quoted from the forge.
The caller reads it from an environment variable or a file (``capture.forge.token_env`` /
``token_file``).

Endpoints (documented REST APIs; see each client's docstring):

- Gitea ``/api/v1``: ``GET|POST /repos/{owner}/{repo}/pulls``, ``GET|PATCH .../pulls/{index}``.
- GitHub: ``GET|POST /repos/{owner}/{repo}/pulls``, ``GET|PATCH .../pulls/{pull_number}``.
- GitLab ``/api/v4``: ``GET|POST /projects/{id}/merge_requests``, ``GET|PUT .../merge_requests/{iid}``.

Modules: ``base`` (values, marker, the :class:`Forge` protocol, the shared HTTP client and its
retries), ``gitea``, ``github``, ``gitlab`` (one client each: calls and parsing), ``ensure``
(the idempotent PR), ``factory`` (a client from ``capture.forge``). This package re-exports
what the rest of rebuild uses.
"""

from rebuild.adapters.forge.base import (
    MARKER_PREFIX,
    Action,
    Ensured,
    Forge,
    ForgeHTTPError,
    PRState,
    PullRequest,
    _message_of,
    _Secret,
    choose_pull_request,
    marker,
    parse_marker,
    with_marker,
)
from rebuild.adapters.forge.ensure import current_pull_request, ensure_pull_request
from rebuild.adapters.forge.factory import forge_from_config
from rebuild.adapters.forge.gitea import GiteaForge
from rebuild.adapters.forge.github import GITHUB_API, GitHubForge
from rebuild.adapters.forge.gitlab import GITLAB_URL, GitLabForge
from rebuild.core.retry import RetryPolicy, parse_retry_after

__all__ = [
    "GITHUB_API",
    "GITLAB_URL",
    "MARKER_PREFIX",
    "Action",
    "Ensured",
    "Forge",
    "ForgeHTTPError",
    "GitHubForge",
    "GitLabForge",
    "GiteaForge",
    "PRState",
    "PullRequest",
    "RetryPolicy",
    "_Secret",
    "_message_of",
    "choose_pull_request",
    "current_pull_request",
    "ensure_pull_request",
    "forge_from_config",
    "marker",
    "parse_marker",
    "parse_retry_after",
    "with_marker",
]
