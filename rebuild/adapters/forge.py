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
- **Retries only what can heal**, written down as data (:class:`RetryPolicy`): 5xx, 429 (and
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
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, Self, runtime_checkable

import httpx2 as httpx

from rebuild.adapters.git import scrub
from rebuild.core.errors import ConfigError, ForgeError

log = logging.getLogger("rebuild.forge")

# 501 (Not Implemented) and 505 will not heal by waiting; the others are what proxies and
# overloaded forges answer while they recover.
RETRY_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
GITHUB_API = "https://api.github.com"
GITLAB_URL = "https://gitlab.com"
MARKER_PREFIX = "rebuild-capture"
_MARKER_RE = re.compile(r"<!--\s*rebuild-capture\s+digest=([A-Za-z0-9._:+/=-]+)\s*-->")
_DIGEST_RE = re.compile(r"^[A-Za-z0-9._:+/=-]{1,128}$")
_MAX_PAGES = 50  # 50 pages x 50-100 PRs: far beyond any repo's open PR count

Action = Literal["created", "updated", "unchanged"]
PRState = Literal["open", "closed", "merged"]


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class PullRequest:
    """One pull (GitLab: merge) request, the same shape on every forge.

    ``number`` is what a human types (#12, GitLab's ``!12`` = ``iid``); ``head`` and ``base``
    are branch names; ``state`` is normalised to open / closed / merged.
    """

    number: int
    url: str
    head: str
    base: str
    title: str
    body: str
    state: str


class Ensured(NamedTuple):
    """What :func:`ensure_pull_request` did; unpacks as ``pr, action = ensure_pull_request(...)``."""

    pr: PullRequest
    action: Action


@dataclass(frozen=True)
class RetryPolicy:
    """The retry policy as data, so a reader (and a test) sees exactly what is retried and for how long.

    ``attempts`` bounds the requests per operation; ``max_wait`` bounds the total sleep between
    them (a server asking, through Retry-After, to wait longer than what is left is answered
    with an error at once rather than with a doomed retry); ``timeout`` is per request.
    """

    attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_wait: float = 20.0
    timeout: float = 30.0
    statuses: frozenset[int] = field(default=RETRY_STATUSES)

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt ``attempt`` (1-based) when the server names none: 0.5, 1, 2, 4, 8 s."""
        return float(min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))


class ForgeHTTPError(ForgeError):
    """A forge answered a request with an error status that retrying cannot fix.

    ``status`` lets callers react to a class of refusal (409/422 "already exists") without
    parsing messages. (A candidate for rebuild/errors.py once other modules need it.)
    """

    def __init__(self, message: str, *, status: int, operation: str, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.status = status
        self.operation = operation


class _Secret:
    """A token that prints as ``***``: an f-string, a repr or a debugger never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


@dataclass(frozen=True)
class _Call:
    """One REST call, built by a forge client and sent by the shared retry loop (pure data, unit-tested)."""

    operation: str  # for humans: "create pull request"
    method: str
    path: str  # below the API root, already percent-encoded
    params: tuple[tuple[str, str], ...] = ()
    json: dict[str, Any] | None = None


# --------------------------------------------------------------------------- pure helpers


def marker(digest: str) -> str:
    """The hidden line that identifies a capture PR's content: ``<!-- rebuild-capture digest=<d> -->``."""
    if not _DIGEST_RE.match(digest):
        raise ValueError(f"digest {digest!r} must be 1-128 characters of [A-Za-z0-9._:+/=-]")
    return f"<!-- {MARKER_PREFIX} digest={digest} -->"


def parse_marker(body: str | None) -> str | None:
    """The digest of the (last) capture marker in a PR body, or None if it carries none."""
    found = _MARKER_RE.findall(body or "")
    return str(found[-1]) if found else None


def with_marker(body: str, digest: str) -> str:
    """``body`` with exactly one marker, for ``digest``, on its last line (older markers removed)."""
    text = _MARKER_RE.sub("", body).rstrip()
    return f"{text}\n\n{marker(digest)}\n" if text else f"{marker(digest)}\n"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date, RFC 9110 10.2.3); None if absent/invalid."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if seconds >= 0 else None


def choose_pull_request(candidates: list[PullRequest], *, base: str, digest: str | None = None) -> PullRequest | None:
    """Which open PR a capture continues: same base; the one already at ``digest`` if any, else the oldest.

    The oldest (lowest number) is the stable choice: it is the one people have been reviewing,
    and runs agree on it without coordination.
    """
    same_base = sorted((p for p in candidates if p.base == base), key=lambda p: p.number)
    if not same_base:
        return None
    if digest is not None:
        for pr in same_base:
            if parse_marker(pr.body) == digest:
                return pr
    return same_base[0]


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _str(value: Any) -> str:
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- the protocol


@runtime_checkable
class Forge(Protocol):
    """What capture needs from a forge; Gitea, GitHub and GitLab clients implement it."""

    def find_open(self, head_prefix: str) -> list[PullRequest]:
        """Open PRs of this repository whose head branch starts with ``head_prefix``."""
        ...

    def create(self, head: str, base: str, title: str, body: str) -> PullRequest:
        """Open a PR from ``head`` into ``base`` (never a second one for the same head)."""
        ...

    def update(self, pr: PullRequest, title: str, body: str) -> PullRequest:
        """Replace the title and body of ``pr``."""
        ...

    def get(self, number: int) -> PullRequest:
        """One PR by its number."""
        ...


# --------------------------------------------------------------------------- shared HTTP client


class _HttpForge:
    """The transport and retry loop shared by the three clients; subclasses only build calls and parse answers."""

    kind: ClassVar[str] = "forge"
    page_size: ClassVar[int] = 50

    def __init__(
        self,
        api_url: str,
        token: str,
        repo_label: str,
        *,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token:
            raise ConfigError(f"{self.kind} {repo_label}: empty token", fix="set capture.forge.token_env or token_file")
        self.api_url = api_url.rstrip("/")
        self.repo = repo_label
        self.policy = policy or RetryPolicy()
        self._token = _Secret(token)
        self._api_path = urllib.parse.urlsplit(self.api_url).path.rstrip("/")
        # No redirects: a forge API does not redirect a correct URL, and following one could
        # carry the token to another host. Proxies from the environment are honoured (trust_env)
        # because a forge is usually reached through the corporate proxy.
        self._http = httpx.Client(
            base_url=self.api_url,
            timeout=httpx.Timeout(self.policy.timeout),
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self.api_url!r}, repo={self.repo!r}, token=***)"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- per-forge hooks ------------------------------------------------------------------

    def _auth_headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError

    def _list_call(self, page: int, head: str | None = None) -> _Call:
        raise NotImplementedError

    def _create_call(self, head: str, base: str, title: str, body: str) -> _Call:
        raise NotImplementedError

    def _update_call(self, number: int, title: str, body: str) -> _Call:
        raise NotImplementedError

    def _get_call(self, number: int) -> _Call:
        raise NotImplementedError

    def _parse(self, raw: dict[str, Any]) -> PullRequest:
        raise NotImplementedError

    def _same_repo(self, raw: dict[str, Any]) -> bool:
        """Whether a listed PR's head branch lives in this repository (not in a fork with a same-named branch)."""
        return True

    def _rate_limit(self, resp: httpx.Response) -> tuple[bool, float | None]:
        """(retryable?, seconds the server asks to wait) for an error response."""
        if resp.status_code not in self.policy.statuses:
            return False, None
        return True, parse_retry_after(resp.headers.get("Retry-After"))

    # -- the verbs --------------------------------------------------------------------------

    def find_open(self, head_prefix: str) -> list[PullRequest]:
        return [pr for pr in self._iter_open() if pr.head.startswith(head_prefix)]

    def create(self, head: str, base: str, title: str, body: str) -> PullRequest:
        call = self._create_call(head, base, title, body)

        def already_created() -> PullRequest | None:
            found = self._find_head(head, base)
            if found is not None:
                log.warning(
                    "%s %s: #%d from %s is already open (an earlier attempt to %s got through); using it, not opening another",
                    self.kind,
                    self.repo,
                    found.number,
                    head,
                    call.operation,
                )
            return found

        try:
            result = self._request(call, recover=already_created)
        except ForgeHTTPError as exc:
            # 409 (Gitea, GitLab) / 422 (GitHub): a PR for this head is already open, e.g.
            # created by a concurrent run: that one is the answer, not an error.
            if exc.status not in (409, 422):
                raise
            try:
                existing = already_created()
            except ForgeError:
                raise exc from None
            if existing is None:
                raise
            return existing
        if isinstance(result, PullRequest):
            return result
        return self._parse(self._as_object(result, call))

    def update(self, pr: PullRequest, title: str, body: str) -> PullRequest:
        call = self._update_call(pr.number, title, body)
        return self._parse(self._as_object(self._request(call), call))

    def get(self, number: int) -> PullRequest:
        call = self._get_call(number)
        return self._parse(self._as_object(self._request(call), call))

    # -- internals ----------------------------------------------------------------------------

    def _find_head(self, head: str, base: str) -> PullRequest | None:
        found = [pr for pr in self._iter_open(head=head) if pr.head == head and pr.base == base]
        return min(found, key=lambda p: p.number) if found else None

    def _iter_open(self, head: str | None = None) -> Iterator[PullRequest]:
        for page in range(1, _MAX_PAGES + 1):
            call = self._list_call(page, head)
            items, has_next = self._request_page(call)
            for raw in items:
                if isinstance(raw, dict) and self._same_repo(raw):
                    pr = self._parse(raw)
                    if pr.state == "open":
                        yield pr
            if not items or not has_next:
                return

    def _request_page(self, call: _Call) -> tuple[list[Any], bool]:
        resp = self._request(call, raw_response=True)
        assert isinstance(resp, httpx.Response)
        items = self._decode(resp, call)
        if not isinstance(items, list):
            raise self._unexpected(call, "a list")
        # Link rel="next" is authoritative (all three send it); a full page without one
        # still gets a follow-up, in case a proxy stripped the header.
        has_next = "next" in resp.links or len(items) >= self.page_size
        return items, has_next

    def _request(
        self,
        call: _Call,
        *,
        recover: Callable[[], PullRequest | None] | None = None,
        raw_response: bool = False,
    ) -> Any:
        """Send ``call`` under the retry policy; ``recover`` runs before each retry and may end it with a result."""
        policy = self.policy
        waited = 0.0
        last = ""
        attempt = 0
        where = f"{call.method} {self._api_path}{call.path}"
        while attempt < policy.attempts:
            attempt += 1
            if attempt > 1 and recover is not None:
                try:
                    found = recover()
                except ForgeError as exc:
                    raise ForgeError(
                        f"{self.kind} {self.repo}: {call.operation} failed ({last}) and checking whether it "
                        f"succeeded anyway failed too: {exc.message}",
                        fix="look for an open pull request from this branch before running capture again",
                    ) from exc
                if found is not None:
                    return found
            try:
                resp = self._http.request(
                    call.method,
                    call.path,
                    params=list(call.params),
                    json=call.json,
                    headers=self._headers(),
                )
            except httpx.TransportError as exc:  # connect errors, timeouts, dropped connections
                last = self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                delay = policy.backoff(attempt)
            else:
                if 200 <= resp.status_code < 300:
                    return resp if raw_response else self._decode(resp, call)
                retryable, asked = self._rate_limit(resp)
                if not retryable:
                    raise self._error(call, resp)
                last = str(resp.status_code)
                if asked is not None and asked > policy.max_wait - waited:
                    raise ForgeHTTPError(
                        f"{self.kind} {self.repo}: {call.operation} was refused with HTTP {resp.status_code}; the forge "
                        f"asks to retry after {asked:.0f}s, beyond the {policy.max_wait:.0f}s retry budget",
                        status=resp.status_code,
                        operation=call.operation,
                        fix="the forge is rate limiting this token (or in maintenance): run capture again later",
                    )
                delay = asked if asked is not None else policy.backoff(attempt)
            remaining = policy.max_wait - waited
            if attempt >= policy.attempts or remaining <= 0:
                break
            delay = min(delay, remaining)
            log.warning("Request attempt #%d/%d failed; will retry: %s -> %s", attempt, policy.attempts, where, last)
            time.sleep(delay)
            waited += delay
        raise ForgeError(
            f"{self.kind} {self.repo}: {call.operation} failed after {attempt} attempts "
            f"({waited:.1f}s of waiting): {where} -> {last}",
            fix=f"check that {self.api_url} is reachable and healthy, then run capture again",
        )

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "rebuild-capture"}
        headers.update(self._auth_headers(self._token.reveal()))
        return headers

    def _scrub(self, text: str) -> str:
        return scrub(text).replace(self._token.reveal(), "***")

    def _decode(self, resp: httpx.Response, call: _Call) -> Any:
        try:
            return resp.json()
        except ValueError as exc:
            raise self._unexpected(call, "JSON") from exc

    def _as_object(self, data: Any, call: _Call) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self._unexpected(call, "a JSON object")
        return data

    def _unexpected(self, call: _Call, wanted: str) -> ForgeError:
        return ForgeError(
            f"{self.kind} {self.repo}: {call.operation}: {call.method} {self._api_path}{call.path} did not answer with {wanted}",
            fix=f"check that {self.api_url} is the {self.kind} API URL",
        )

    def _forge_message(self, resp: httpx.Response) -> str:
        try:
            data = resp.json()
        except ValueError:
            text = resp.text
        else:
            text = _message_of(data)
        return self._scrub(" ".join(text.split()))[:300] or resp.reason_phrase

    def _error(self, call: _Call, resp: httpx.Response) -> ForgeHTTPError:
        status = resp.status_code
        message = self._forge_message(resp)
        fix = {
            401: "check the token (capture.forge.token_env / token_file): it is missing, mistyped, expired or revoked",
            403: f"check the token's scopes: it needs read and write access to pull requests of {self.repo}",
            404: f"check the owner/repo {self.repo!r} and the URL {self.api_url}, and that the token can see the repository",
            409: "a pull request for this branch may already exist, or the branch is missing: check the open pull requests",
            422: "the forge rejected the request: e.g. the pull request exists, or the branch is missing or has no new commits",
        }.get(status, "check the request and the forge's message")
        if 300 <= status < 400:
            fix = f"{self.api_url} redirects (to {resp.headers.get('Location', '?')}); configure the final API URL"
        if call.method == "POST" and status in (404, 422):
            fix += "; push the head branch before opening the pull request"
        return ForgeHTTPError(
            f"{self.kind} {self.repo}: {call.operation} refused: HTTP {status}: {message}",
            status=status,
            operation=call.operation,
            fix=fix,
        )


def _message_of(data: Any) -> str:
    """The human part of an error body: ``message`` (Gitea, GitHub, GitLab), GitHub's ``errors``, GitLab's ``error``."""
    if isinstance(data, dict):
        parts: list[str] = []
        for key in ("message", "error", "error_description"):
            value = data.get(key)
            if value:
                parts.append(value if isinstance(value, str) else str(value))
        for err in data.get("errors") or []:
            if isinstance(err, dict) and err.get("message"):
                parts.append(str(err["message"]))
            elif isinstance(err, str):
                parts.append(err)
        return "; ".join(parts) or str(data)
    return str(data)


# --------------------------------------------------------------------------- Gitea


class GiteaForge(_HttpForge):
    """Gitea (and Forgejo) REST API v1, the forge tested for real here.

    Source: Gitea's Swagger (``/swagger.v1.json``; operations repoListPullRequests,
    repoCreatePullRequest, repoGetPullRequest, repoEditPullRequest), checked against the
    Gitea 1.26 that the toolchain builds. Auth: ``Authorization: token <token>``.
    """

    kind = "gitea"
    page_size = 50  # Gitea's default [api] MAX_RESPONSE_ITEMS

    def __init__(
        self,
        base_url: str,
        token: str,
        owner: str,
        repo: str,
        *,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        root = root.removesuffix("/api/v1")
        super().__init__(f"{root}/api/v1", token, f"{owner}/{repo}", policy=policy, transport=transport)
        self.owner, self.name = owner, repo
        self._pulls = f"/repos/{_q(owner)}/{_q(repo)}/pulls"

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"token {token}"}

    def _list_call(self, page: int, head: str | None = None) -> _Call:
        # Gitea's list has no head filter (only base_branch, and only since 1.23): filter here.
        params = (("state", "open"), ("page", str(page)), ("limit", str(self.page_size)))
        return _Call("list open pull requests", "GET", self._pulls, params)

    def _create_call(self, head: str, base: str, title: str, body: str) -> _Call:
        return _Call("create pull request", "POST", self._pulls, json={"head": head, "base": base, "title": title, "body": body})

    def _update_call(self, number: int, title: str, body: str) -> _Call:
        return _Call(f"update pull request #{number}", "PATCH", f"{self._pulls}/{number}", json={"title": title, "body": body})

    def _get_call(self, number: int) -> _Call:
        return _Call(f"get pull request #{number}", "GET", f"{self._pulls}/{number}")

    def _same_repo(self, raw: dict[str, Any]) -> bool:
        head, base = raw.get("head") or {}, raw.get("base") or {}
        head_repo, base_repo = head.get("repo_id"), base.get("repo_id")
        return head_repo is None or base_repo is None or head_repo == base_repo

    def _parse(self, raw: dict[str, Any]) -> PullRequest:
        return _pull_request(raw, merged=bool(raw.get("merged")))


def _pull_request(raw: dict[str, Any], *, merged: bool) -> PullRequest:
    """Gitea and GitHub describe a pull request with the same fields (head/base refs, html_url)."""
    return PullRequest(
        number=int(raw["number"]),
        url=_str(raw.get("html_url")),
        head=_str((raw.get("head") or {}).get("ref")),
        base=_str((raw.get("base") or {}).get("ref")),
        title=_str(raw.get("title")),
        body=_str(raw.get("body")),
        state="merged" if merged else _str(raw.get("state")),
    )


# --------------------------------------------------------------------------- GitHub


class GitHubForge(_HttpForge):
    """GitHub (github.com or Enterprise Server ``https://<host>/api/v3``) REST API 2022-11-28.

    Source: docs.github.com "REST API endpoints for pull requests" (List: ``state``, ``head``
    as ``user:ref-name``, ``per_page`` <= 100; Create: ``title``, ``head``, ``base``, ``body``;
    Update: PATCH ``/pulls/{pull_number}`` with ``title``, ``body``) and "Rate limits for the
    REST API" (403 or 429 with ``retry-after``, or ``x-ratelimit-remaining: 0`` until
    ``x-ratelimit-reset``). Auth: ``Authorization: Bearer <token>``. Not exercised against
    the real service in this repository's tests.

    Keyword-only, so ``api_url`` can default to github.com while coming first, as in the config.
    """

    kind = "github"
    page_size = 100

    def __init__(
        self,
        *,
        api_url: str = GITHUB_API,
        token: str,
        owner: str,
        repo: str,
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(api_url, token, f"{owner}/{repo}", policy=policy, transport=transport)
        self.owner, self.name = owner, repo
        self._pulls = f"/repos/{_q(owner)}/{_q(repo)}/pulls"

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    def _list_call(self, page: int, head: str | None = None) -> _Call:
        params = [("state", "open"), ("per_page", str(self.page_size)), ("page", str(page))]
        if head is not None:  # exact match on the server: owner:branch
            params.insert(1, ("head", f"{self.owner}:{head}"))
        return _Call("list open pull requests", "GET", self._pulls, tuple(params))

    def _create_call(self, head: str, base: str, title: str, body: str) -> _Call:
        return _Call("create pull request", "POST", self._pulls, json={"title": title, "head": head, "base": base, "body": body})

    def _update_call(self, number: int, title: str, body: str) -> _Call:
        return _Call(f"update pull request #{number}", "PATCH", f"{self._pulls}/{number}", json={"title": title, "body": body})

    def _get_call(self, number: int) -> _Call:
        return _Call(f"get pull request #{number}", "GET", f"{self._pulls}/{number}")

    def _same_repo(self, raw: dict[str, Any]) -> bool:
        head_repo = ((raw.get("head") or {}).get("repo") or {}).get("full_name")
        return head_repo is None or str(head_repo).lower() == f"{self.owner}/{self.name}".lower()

    def _rate_limit(self, resp: httpx.Response) -> tuple[bool, float | None]:
        retry_after = parse_retry_after(resp.headers.get("retry-after"))
        exhausted = resp.headers.get("x-ratelimit-remaining") == "0"
        if resp.status_code in (403, 429) and (retry_after is not None or exhausted):
            if retry_after is None:
                try:
                    retry_after = max(0.0, float(resp.headers.get("x-ratelimit-reset", "")) - time.time())
                except ValueError:
                    retry_after = None
            return True, retry_after
        return super()._rate_limit(resp)

    def _parse(self, raw: dict[str, Any]) -> PullRequest:
        return _pull_request(raw, merged=bool(raw.get("merged_at") or raw.get("merged")))


# --------------------------------------------------------------------------- GitLab


class GitLabForge(_HttpForge):
    """GitLab REST API v4 merge requests (gitlab.com or self-managed).

    Source: docs.gitlab.com "Merge requests API" (List project MRs: ``state=opened``,
    ``source_branch``, ``per_page`` <= 100; Create: ``source_branch``, ``target_branch``,
    ``title``, ``description``; Update: PUT ``/merge_requests/{iid}``) and "REST API
    authentication" (``PRIVATE-TOKEN`` for personal/project/group access tokens,
    ``Authorization: Bearer`` for OAuth tokens). The project is addressed by its URL-encoded
    path (``group%2Fsub%2Fproject``). Not exercised against the real service here.
    """

    kind = "gitlab"
    page_size = 100

    def __init__(
        self,
        base_url: str,
        token: str,
        project_path: str,
        *,
        auth: Literal["private-token", "bearer"] = "private-token",
        policy: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        root = base_url.rstrip("/").removesuffix("/api/v4")
        super().__init__(f"{root}/api/v4", token, project_path, policy=policy, transport=transport)
        self.project_path = project_path
        self.auth = auth
        self._mrs = f"/projects/{_q(project_path)}/merge_requests"

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if self.auth == "bearer" else {"PRIVATE-TOKEN": token}

    def _list_call(self, page: int, head: str | None = None) -> _Call:
        params = [("state", "opened"), ("per_page", str(self.page_size)), ("page", str(page))]
        if head is not None:
            params.insert(1, ("source_branch", head))
        return _Call("list open merge requests", "GET", self._mrs, tuple(params))

    def _create_call(self, head: str, base: str, title: str, body: str) -> _Call:
        payload = {"source_branch": head, "target_branch": base, "title": title, "description": body}
        return _Call("create merge request", "POST", self._mrs, json=payload)

    def _update_call(self, number: int, title: str, body: str) -> _Call:
        return _Call(
            f"update merge request !{number}", "PUT", f"{self._mrs}/{number}", json={"title": title, "description": body}
        )

    def _get_call(self, number: int) -> _Call:
        return _Call(f"get merge request !{number}", "GET", f"{self._mrs}/{number}")

    def _same_repo(self, raw: dict[str, Any]) -> bool:
        src, dst = raw.get("source_project_id"), raw.get("target_project_id")
        return src is None or dst is None or src == dst

    def _parse(self, raw: dict[str, Any]) -> PullRequest:
        state = {"opened": "open", "merged": "merged", "closed": "closed", "locked": "closed"}.get(
            _str(raw.get("state")), _str(raw.get("state"))
        )
        return PullRequest(
            number=int(raw["iid"]),
            url=_str(raw.get("web_url")),
            head=_str(raw.get("source_branch")),
            base=_str(raw.get("target_branch")),
            title=_str(raw.get("title")),
            body=_str(raw.get("description")),
            state=state,
        )


# --------------------------------------------------------------------------- idempotent PR


def current_pull_request(forge: Forge, *, head_prefix: str, base: str, digest: str | None = None) -> PullRequest | None:
    """The open capture PR into ``base`` (see :func:`choose_pull_request`), or None.

    Capture calls this *before* pushing, to learn which branch the new commit goes to: the
    existing PR's head if there is one, else a new branch named from the findings.
    """
    candidates = forge.find_open(head_prefix)
    chosen = choose_pull_request(candidates, base=base, digest=digest)
    others = [p.number for p in candidates if p.base == base and chosen is not None and p.number != chosen.number]
    if chosen is not None and others:
        log.warning("several open pull requests start with %r; continuing #%d, not %s", head_prefix, chosen.number, others)
    return chosen


def ensure_pull_request(
    forge: Forge,
    *,
    head: str,
    base: str,
    title: str,
    body: str,
    head_prefix: str,
    marker: str,
) -> Ensured:
    """Exactly one open capture PR, carrying ``marker`` (the findings' digest, or the full marker line).

    - an open PR whose head starts with ``head_prefix`` and whose body has the same digest:
      ``unchanged`` (nothing is sent);
    - such a PR with another digest: its title and body are replaced, ``updated``; the returned
      PR's ``head`` is the branch the caller must push the new commit to (not ``head``);
    - none: a PR from ``head`` (already pushed) into ``base`` is ``created``.
    """
    digest = parse_marker(marker) or marker
    full_body = with_marker(body, digest)  # validates the digest
    if not head.startswith(head_prefix):
        raise ValueError(f"head {head!r} does not start with head_prefix {head_prefix!r}: the next run would not find it")
    existing = current_pull_request(forge, head_prefix=head_prefix, base=base, digest=digest)
    if existing is None:
        return Ensured(forge.create(head, base, title, full_body), "created")
    if parse_marker(existing.body) == digest:
        return Ensured(existing, "unchanged")
    return Ensured(forge.update(existing, title, full_body), "updated")


# --------------------------------------------------------------------------- factory


def forge_from_config(
    kind: str,
    url: str,
    repo: str,
    token: str,
    *,
    policy: RetryPolicy | None = None,
    transport: httpx.BaseTransport | None = None,
) -> GiteaForge | GitHubForge | GitLabForge:
    """A client from ``capture.forge`` (kind, url, repo) and a token the caller read from an env var or file.

    ``url``: Gitea, the server URL; GitHub, the API URL (empty or https://github.com ->
    https://api.github.com; a bare Enterprise host gets ``/api/v3``); GitLab, the server URL
    (empty -> https://gitlab.com). ``repo``: owner/name (GitLab: the full project path).
    """
    where = "capture.forge"
    if not token:
        raise ConfigError(f"{where}: the forge token is empty", fix="set capture.forge.token_env or token_file")
    parts = [p for p in repo.strip("/").split("/") if p]
    if len(parts) < 2 or (kind != "gitlab" and len(parts) != 2):
        raise ConfigError(
            f"{where}.repo {repo!r} must be owner/name (GitLab: group/.../project)", fix="e.g. `repo: platform/gitops`"
        )
    url = url.strip()
    if url:
        split = urllib.parse.urlsplit(url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise ConfigError(f"{where}.url {scrub(url)!r} is not an http(s) URL", fix="e.g. `url: https://gitea.example.com`")
        if split.username or split.password:
            raise ConfigError(
                f"{where}.url contains credentials", fix="remove them; the token comes from token_env or token_file"
            )
        if split.scheme == "http" and split.hostname not in ("127.0.0.1", "localhost", "::1"):
            log.warning("%s.url %s is plain http: the forge token crosses the network unencrypted", where, url)
    if kind == "gitea":
        if not url:
            raise ConfigError(f"{where}.url is required for gitea", fix="e.g. `url: https://gitea.example.com`")
        return GiteaForge(url, token, parts[0], parts[1], policy=policy, transport=transport)
    if kind == "github":
        api = url.rstrip("/") or GITHUB_API
        split = urllib.parse.urlsplit(api)
        if split.hostname in ("github.com", "www.github.com"):
            api = GITHUB_API
        elif split.hostname != "api.github.com" and split.path in ("", "/"):
            api = f"{api}/api/v3"  # GitHub Enterprise Server serves the REST API under /api/v3
        return GitHubForge(api_url=api, token=token, owner=parts[0], repo=parts[1], policy=policy, transport=transport)
    if kind == "gitlab":
        return GitLabForge(url or GITLAB_URL, token, "/".join(parts), policy=policy, transport=transport)
    raise ConfigError(f"{where}.kind {kind!r} is not supported", fix="use gitea, github or gitlab")
