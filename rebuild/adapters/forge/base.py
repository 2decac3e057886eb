"""What the three forge clients share: the values, the capture marker, the protocol, and one HTTP client.

Gitea, GitHub and GitLab differ in URLs, field names and rate-limit headers; everything else
(the transport, the retry policy from rebuild/core/retry.py, never opening a PR twice, error
messages that name the forge, the repo, the operation and the fix, the token kept out of
every message) lives here once. The per-forge modules only build calls and parse answers.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, Self, runtime_checkable

import httpx2 as httpx

from rebuild.adapters.git import scrub
from rebuild.core.errors import ConfigError, ForgeError
from rebuild.core.retry import GaveUp, Retryable, RetryPolicy, log_retries, parse_retry_after, retry

log = logging.getLogger("rebuild.forge")
_LOG_RETRY = log_retries(log)

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
        where = f"{call.method} {self._api_path}{call.path}"
        last = ""

        def attempt(n: int) -> Any:
            nonlocal last
            if n > 1 and recover is not None:
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
                raise Retryable(last) from exc
            if 200 <= resp.status_code < 300:
                return resp if raw_response else self._decode(resp, call)
            retryable, asked = self._rate_limit(resp)
            if not retryable:
                raise self._error(call, resp)
            last = str(resp.status_code)
            raise Retryable(last, status=resp.status_code, retry_after=asked)

        try:
            return retry(attempt, self.policy, operation=where, on_retry=_LOG_RETRY)
        except GaveUp as gave:
            if gave.reason == "retry_after":
                raise ForgeHTTPError(
                    f"{self.kind} {self.repo}: {call.operation} was refused with HTTP {gave.status}; the forge "
                    f"asks to retry after {gave.retry_after or 0:.0f}s, beyond the {gave.policy.budget or 0:.0f}s retry budget",
                    status=gave.status or 0,
                    operation=call.operation,
                    fix="the forge is rate limiting this token (or in maintenance): run capture again later",
                ) from None
            raise ForgeError(
                f"{self.kind} {self.repo}: {call.operation} failed after {gave.attempt} attempts "
                f"({gave.waited:.1f}s of waiting): {where} -> {gave.error}",
                fix=f"check that {self.api_url} is reachable and healthy, then run capture again",
            ) from gave.__cause__

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
