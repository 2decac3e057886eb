"""Pure parts of the forge clients: markers, Retry-After, choice of PR, request shapes, parsing, factory.

Behaviour (retries, idempotency, no duplicates) is tested against a real Gitea with a fault
proxy in tests/integration/test_forge_gitea.py. Here, an injected httpx MockTransport only
*records* what each client would put on the wire (method, path, headers, JSON body) and
answers with a fixed, documented-shape payload: it checks request construction, not forge
behaviour.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
import pytest

from rebuild.adapters.forge import (
    GITHUB_API,
    Forge,
    ForgeHTTPError,
    GiteaForge,
    GitHubForge,
    GitLabForge,
    PullRequest,
    RetryPolicy,
    _message_of,
    _Secret,
    choose_pull_request,
    forge_from_config,
    marker,
    parse_marker,
    parse_retry_after,
    with_marker,
)
from rebuild.core.errors import ConfigError

TOKEN = "tok-" + "s3cr3t" * 6

# --------------------------------------------------------------------------- markers


def test_marker_round_trip() -> None:
    assert marker("ab12") == "<!-- rebuild-capture digest=ab12 -->"
    assert parse_marker("table\n\n<!-- rebuild-capture digest=ab12 -->\n") == "ab12"
    assert parse_marker("<!--rebuild-capture   digest=sha256:ff00-->") == "sha256:ff00"
    assert parse_marker("no marker") is None
    assert parse_marker(None) is None
    assert parse_marker("<!-- something-else digest=ab12 -->") is None


def test_with_marker_keeps_exactly_one_marker_last() -> None:
    body = with_marker("| a | b |", "d1")
    assert body == "| a | b |\n\n<!-- rebuild-capture digest=d1 -->\n"
    again = with_marker(body + "\nmore text", "d2")
    assert again.count("rebuild-capture") == 1 and parse_marker(again) == "d2"
    assert "more text" in again and again.endswith(marker("d2") + "\n")
    assert with_marker("", "d3") == marker("d3") + "\n"


@pytest.mark.parametrize("bad", ["", "a b", "x-->", "<!--", "a" * 129, "é"])
def test_marker_rejects_digests_that_would_break_the_comment(bad: str) -> None:
    with pytest.raises(ValueError, match="digest"):
        marker(bad)


# --------------------------------------------------------------------------- Retry-After and backoff


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0  # in the past: go now
    for invalid in (None, "", "soon", "-5"):
        assert parse_retry_after(invalid) is None


def test_backoff_is_exponential_and_capped() -> None:
    policy = RetryPolicy()
    assert [policy.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.attempts == 5 and policy.max_wait == 20.0
    assert {429, 500, 502, 503, 504} == set(policy.statuses)
    assert not {400, 401, 403, 404, 409, 422} & policy.statuses


# --------------------------------------------------------------------------- choosing the PR


def pr(number: int, head: str = "rebuild/capture-a", base: str = "main", body: str = "") -> PullRequest:
    return PullRequest(number, f"http://forge/pulls/{number}", head, base, "t", body, "open")


def test_choose_prefers_same_digest_then_oldest_and_ignores_other_bases() -> None:
    old, new = pr(3), pr(7, head="rebuild/capture-b", body=with_marker("x", "d2"))
    other_base = pr(1, base="release", body=with_marker("x", "d2"))
    assert choose_pull_request([new, old, other_base], base="main", digest="d2") == new
    assert choose_pull_request([new, old, other_base], base="main", digest="d9") == old
    assert choose_pull_request([new, old], base="main") == old
    assert choose_pull_request([other_base], base="main", digest="d2") is None
    assert choose_pull_request([], base="main") is None


# --------------------------------------------------------------------------- request construction


class Recorder:
    """A MockTransport handler that records requests and answers with a fixed payload."""

    def __init__(self, payload: Any, status: int = 200) -> None:
        self.payload = payload
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.payload)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self) -> Any:
        return json.loads(self.last.content)


GITEA_PR = {
    "number": 4,
    "html_url": "http://gitea/o/r/pulls/4",
    "state": "open",
    "merged": False,
    "title": "t",
    "body": None,
    "head": {"ref": "rebuild/capture-a", "repo_id": 1},
    "base": {"ref": "main", "repo_id": 1},
}
GITHUB_PR = {
    "number": 9,
    "html_url": "https://github.com/o/r/pull/9",
    "state": "open",
    "merged_at": None,
    "title": "t",
    "body": "b",
    "head": {"ref": "rebuild/capture-a", "repo": {"full_name": "o/r"}},
    "base": {"ref": "main", "repo": {"full_name": "o/r"}},
}
GITLAB_MR = {
    "id": 1234,
    "iid": 12,
    "web_url": "https://gitlab.com/g/sub/app/-/merge_requests/12",
    "state": "opened",
    "title": "t",
    "description": "b",
    "source_branch": "rebuild/capture-a",
    "target_branch": "main",
    "source_project_id": 5,
    "target_project_id": 5,
}


def params(req: httpx.Request) -> list[tuple[str, str]]:
    return list(req.url.params.multi_items())


def test_gitea_requests() -> None:
    rec = Recorder(GITEA_PR, 201)
    forge = GiteaForge("http://gitea.local:3000/", TOKEN, "o", "r", transport=httpx.MockTransport(rec))
    created = forge.create("rebuild/capture-a", "main", "t", "b")
    req = rec.last
    assert req.method == "POST" and req.url.raw_path == b"/api/v1/repos/o/r/pulls"
    assert req.url.host == "gitea.local" and req.url.port == 3000
    assert req.headers["Authorization"] == f"token {TOKEN}" and req.headers["Accept"] == "application/json"
    assert rec.body() == {"head": "rebuild/capture-a", "base": "main", "title": "t", "body": "b"}
    assert created == PullRequest(4, "http://gitea/o/r/pulls/4", "rebuild/capture-a", "main", "t", "", "open")

    forge.update(created, "t2", "b2")
    assert rec.last.method == "PATCH" and rec.last.url.raw_path == b"/api/v1/repos/o/r/pulls/4"
    assert rec.body() == {"title": "t2", "body": "b2"}

    forge.get(4)
    assert rec.last.method == "GET" and rec.last.url.raw_path == b"/api/v1/repos/o/r/pulls/4" and not rec.last.content

    rec.payload = [GITEA_PR, {**GITEA_PR, "number": 5, "head": {"ref": "feature/x", "repo_id": 1}}]
    assert [p.number for p in forge.find_open("rebuild/capture-")] == [4]
    assert rec.last.method == "GET" and rec.last.url.path == "/api/v1/repos/o/r/pulls"
    assert params(rec.last) == [("state", "open"), ("page", "1"), ("limit", "50")]
    assert TOKEN not in str(rec.last.url)


def test_gitea_accepts_an_api_url_and_escapes_path_parts() -> None:
    rec = Recorder([])
    forge = GiteaForge("https://git.example.com/api/v1", TOKEN, "my org", "re/po", transport=httpx.MockTransport(rec))
    forge.find_open("x")
    assert rec.last.url.raw_path.startswith(b"/api/v1/repos/my%20org/re%2Fpo/pulls")


def test_github_requests() -> None:
    rec = Recorder(GITHUB_PR, 201)
    forge = GitHubForge(token=TOKEN, owner="o", repo="r", transport=httpx.MockTransport(rec))
    assert forge.api_url == GITHUB_API
    created = forge.create("rebuild/capture-a", "main", "t", "b")
    req = rec.last
    assert req.method == "POST" and str(req.url) == "https://api.github.com/repos/o/r/pulls"
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.headers["Accept"] == "application/vnd.github+json"
    assert req.headers["X-GitHub-Api-Version"] == "2022-11-28" and req.headers["User-Agent"]
    assert rec.body() == {"title": "t", "head": "rebuild/capture-a", "base": "main", "body": "b"}
    assert created.number == 9 and created.url == "https://github.com/o/r/pull/9" and created.state == "open"

    forge.update(created, "t2", "b2")
    assert rec.last.method == "PATCH" and rec.last.url.path == "/repos/o/r/pulls/9"
    assert rec.body() == {"title": "t2", "body": "b2"}

    rec.payload = [GITHUB_PR, {**GITHUB_PR, "number": 10, "head": {"ref": "rebuild/capture-b", "repo": {"full_name": "fork/r"}}}]
    assert [p.number for p in forge.find_open("rebuild/capture-")] == [9]  # the fork's same-prefixed branch is not ours
    assert params(rec.last) == [("state", "open"), ("per_page", "100"), ("page", "1")]
    forge._find_head("rebuild/capture-a", "main")
    assert params(rec.last) == [("state", "open"), ("head", "o:rebuild/capture-a"), ("per_page", "100"), ("page", "1")]


def test_gitlab_requests() -> None:
    rec = Recorder(GITLAB_MR, 201)
    forge = GitLabForge("https://gitlab.example.com", TOKEN, "g/sub/app", transport=httpx.MockTransport(rec))
    created = forge.create("rebuild/capture-a", "main", "t", "b")
    req = rec.last
    assert req.method == "POST" and req.url.raw_path == b"/api/v4/projects/g%2Fsub%2Fapp/merge_requests"
    assert req.headers["PRIVATE-TOKEN"] == TOKEN and "Authorization" not in req.headers
    assert rec.body() == {"source_branch": "rebuild/capture-a", "target_branch": "main", "title": "t", "description": "b"}
    assert created == PullRequest(
        12, "https://gitlab.com/g/sub/app/-/merge_requests/12", "rebuild/capture-a", "main", "t", "b", "open"
    )

    forge.update(created, "t2", "b2")
    assert rec.last.method == "PUT" and rec.last.url.raw_path == b"/api/v4/projects/g%2Fsub%2Fapp/merge_requests/12"
    assert rec.body() == {"title": "t2", "description": "b2"}

    rec.payload = [GITLAB_MR]
    forge._find_head("rebuild/capture-a", "main")
    assert params(rec.last) == [("state", "opened"), ("source_branch", "rebuild/capture-a"), ("per_page", "100"), ("page", "1")]

    rec.payload = GITLAB_MR
    bearer = GitLabForge("https://gitlab.example.com/api/v4/", TOKEN, "g/app", auth="bearer", transport=httpx.MockTransport(rec))
    bearer.get(3)
    assert rec.last.headers["Authorization"] == f"Bearer {TOKEN}" and "PRIVATE-TOKEN" not in rec.last.headers
    assert rec.last.url.raw_path == b"/api/v4/projects/g%2Fapp/merge_requests/3"


def test_pagination_follows_link_next() -> None:
    pages = {
        "1": ([GITEA_PR], {"Link": '<http://gitea/api/v1/repos/o/r/pulls?page=2&limit=1>; rel="next"'}),
        "2": ([{**GITEA_PR, "number": 6}], {}),
    }
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = request.url.params["page"]
        seen.append(page)
        items, headers = pages[page]
        return httpx.Response(200, json=items, headers=headers)

    forge = GiteaForge("http://gitea", TOKEN, "o", "r", transport=httpx.MockTransport(handler))
    assert [p.number for p in forge.find_open("rebuild/")] == [4, 6]
    assert seen == ["1", "2"]


# --------------------------------------------------------------------------- parsing


def test_states_are_normalised() -> None:
    gitea = GiteaForge("http://g", TOKEN, "o", "r")
    assert gitea._parse({**GITEA_PR, "state": "closed", "merged": True}).state == "merged"
    assert gitea._parse({**GITEA_PR, "state": "closed"}).state == "closed"
    github = GitHubForge(token=TOKEN, owner="o", repo="r")
    assert github._parse({**GITHUB_PR, "state": "closed", "merged_at": "2025-01-01T00:00:00Z"}).state == "merged"
    assert github._parse({**GITHUB_PR, "body": None}).body == ""
    gitlab = GitLabForge("https://gitlab.com", TOKEN, "g/app")
    assert [gitlab._parse({**GITLAB_MR, "state": s}).state for s in ("opened", "merged", "closed", "locked")] == [
        "open",
        "merged",
        "closed",
        "closed",
    ]
    assert not gitlab._same_repo({**GITLAB_MR, "source_project_id": 99})


def test_github_rate_limit_403_is_retryable_and_other_403_is_not() -> None:
    github = GitHubForge(token=TOKEN, owner="o", repo="r")
    assert github._rate_limit(httpx.Response(403, headers={"retry-after": "60"})) == (True, 60.0)
    retryable, wait = github._rate_limit(httpx.Response(403, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"}))
    assert retryable and wait == 0.0
    assert github._rate_limit(httpx.Response(403)) == (False, None)  # a scope problem: not retried
    assert github._rate_limit(httpx.Response(502)) == (True, None)
    gitea = GiteaForge("http://g", TOKEN, "o", "r")
    assert gitea._rate_limit(httpx.Response(403, headers={"retry-after": "60"})) == (False, None)
    assert gitea._rate_limit(httpx.Response(429, headers={"Retry-After": "2"})) == (True, 2.0)


def test_error_messages_quote_the_forge_and_never_the_token() -> None:
    assert _message_of({"message": "Validation Failed", "errors": [{"message": "A pull request already exists"}]}) == (
        "Validation Failed; A pull request already exists"
    )
    assert _message_of({"message": {"source_branch": ["is invalid"]}}) == "{'source_branch': ['is invalid']}"
    assert _message_of({"error": "insufficient_scope"}) == "insufficient_scope"

    def echo(request: httpx.Request) -> httpx.Response:  # a forge that (wrongly) echoes the token back
        return httpx.Response(403, json={"message": f"token {TOKEN} lacks scope write:repository"})

    forge = GiteaForge("http://g", TOKEN, "o", "r", transport=httpx.MockTransport(echo))
    with pytest.raises(ForgeHTTPError) as info:
        forge.find_open("x")
    text = str(info.value)
    assert TOKEN not in text and "***" in text and "HTTP 403" in text and "o/r" in text
    assert "scopes" in (info.value.fix or "")


# --------------------------------------------------------------------------- factory and secrets


def test_forge_from_config() -> None:
    gitea = forge_from_config("gitea", "http://127.0.0.1:3000", "o/r", TOKEN)
    assert isinstance(gitea, GiteaForge) and gitea.api_url == "http://127.0.0.1:3000/api/v1" and gitea.repo == "o/r"
    for url, api in [
        ("", GITHUB_API),
        ("https://github.com", GITHUB_API),
        ("https://api.github.com/", GITHUB_API),
        ("https://ghe.example.com", "https://ghe.example.com/api/v3"),
        ("https://ghe.example.com/api/v3", "https://ghe.example.com/api/v3"),
    ]:
        github = forge_from_config("github", url, "o/r", TOKEN)
        assert isinstance(github, GitHubForge) and github.api_url == api, url
    gitlab = forge_from_config("gitlab", "", "group/sub/app", TOKEN)
    assert isinstance(gitlab, GitLabForge) and gitlab.api_url == "https://gitlab.com/api/v4"
    assert gitlab.project_path == "group/sub/app"
    assert isinstance(gitea, Forge) and isinstance(github, Forge) and isinstance(gitlab, Forge)


@pytest.mark.parametrize(
    ("kind", "url", "repo", "token", "match"),
    [
        ("bitbucket", "https://x", "o/r", TOKEN, "not supported"),
        ("gitea", "", "o/r", TOKEN, "url is required"),
        ("gitea", "http://g", "o", TOKEN, "owner/name"),
        ("github", "", "o/r/x", TOKEN, "owner/name"),
        ("gitea", "http://g", "o/r", "", "token is empty"),
        ("gitea", "ftp://g", "o/r", TOKEN, "not an http"),
        ("gitea", "https://user:pw@g", "o/r", TOKEN, "credentials"),
    ],
)
def test_forge_from_config_refuses(kind: str, url: str, repo: str, token: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        forge_from_config(kind, url, repo, token)
    assert info.value.fix
    assert "pw" not in str(info.value)


def test_token_is_in_no_repr() -> None:
    secret = _Secret(TOKEN)
    assert repr(secret) == str(secret) == f"{secret}" == "***" and secret.reveal() == TOKEN
    for forge in (
        GiteaForge("http://g", TOKEN, "o", "r"),
        GitHubForge(token=TOKEN, owner="o", repo="r"),
        GitLabForge("https://gitlab.com", TOKEN, "g/app"),
    ):
        assert TOKEN not in repr(forge) and "token=***" in repr(forge)
        assert TOKEN not in repr(vars(forge))
