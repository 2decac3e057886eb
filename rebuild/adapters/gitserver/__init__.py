"""A real git server over smart HTTP on 127.0.0.1, for Flux and for tests.

Why it exists: Flux's GitRepository accepts only http(s) and ssh URLs, so a local cluster
reconciling from a folder on this machine needs git served over the network. ``git
http-backend`` (git's own CGI program) does the protocol; this module is the small HTTP
front that runs it per request: clone, fetch and push (``http.receivepack`` is switched on
through the environment), with optional HTTP basic auth. Credentials come from code or the
environment, never argv, are compared in constant time and are never logged.

Two ways to run it:

- in-process: ``with GitServer(root) as srv: srv.repo_url("demo.git")`` (a thread; tests);
- detached: :func:`spawn` starts ``python -m rebuild.adapters.gitserver --root DIR --port P``
  (credentials through ``REBUILD_GIT_USERNAME`` / ``REBUILD_GIT_PASSWORD``), recorded like the
  cluster processes so a later CLI call can stop it; :func:`ensure_server` / :func:`stop_server`
  keep one such server per state folder.

:func:`publish_dir` snapshots a plain folder (e.g. ``examples/gitops-repo``) into a bare
repository as a commit on ``main``; it is idempotent, so publishing unchanged content keeps
the same revision (and Flux sees nothing new).

The package's public API. Its modules: :mod:`.server` (the HTTP front, in-process, and the
``python -m`` entry point), :mod:`.daemon` (the detached server per state folder), :mod:`.repos`
(bare repositories, :func:`publish_dir`), :mod:`.auth` (credentials, git environments).
"""

from rebuild.adapters.gitserver.auth import ENV_PASSWORD, ENV_USERNAME, Credentials, auth_env, git_env, parse_basic_auth
from rebuild.adapters.gitserver.daemon import (
    ServerInfo,
    ServerProcess,
    can_listen,
    ensure_server,
    server_info,
    server_running,
    spawn,
    stop_server,
)
from rebuild.adapters.gitserver.repos import DEFAULT_BRANCH, init_bare, publish_dir
from rebuild.adapters.gitserver.server import HEALTH_PATH, HOST, GitServer, main, repo_name, safe_repo_path

__all__ = [
    "DEFAULT_BRANCH",
    "ENV_PASSWORD",
    "ENV_USERNAME",
    "HEALTH_PATH",
    "HOST",
    "Credentials",
    "GitServer",
    "ServerInfo",
    "ServerProcess",
    "auth_env",
    "can_listen",
    "ensure_server",
    "git_env",
    "init_bare",
    "main",
    "parse_basic_auth",
    "publish_dir",
    "repo_name",
    "safe_repo_path",
    "server_info",
    "server_running",
    "spawn",
    "stop_server",
]
