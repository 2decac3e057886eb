"""The forge client against a real Gitea, with real faults injected by a proxy in front of it.

Why a proxy and not a mock: the promises under test (retry what heals, honour Retry-After,
never open a second PR when a create timed out after the server committed it) are about what
happens on the wire and in Gitea's database. The proxy (stdlib http.server on 127.0.0.1)
forwards to the real Gitea and can be told to answer the next N requests with a status of its
own, or to forward a request and then drop or stall the answer past the client's timeout, so
the PR really exists server-side while the client saw a failure.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest

from rebuild.adapters.forge import (
    ForgeHTTPError,
    GiteaForge,
    RetryPolicy,
    ensure_pull_request,
    forge_from_config,
    marker,
    parse_marker,
)
from rebuild.adapters.gitea import Gitea
from rebuild.core.errors import ForgeError

pytestmark = pytest.mark.integration

PREFIX = "rebuild/capture-"
# Fast backoff so retries cost milliseconds; a 1 s timeout so a stalled answer times out quickly.
# Short backoff keeps the tests fast; the read timeout stays generous, since Gitea creating a pull
# request under a loaded CI machine took more than 1 s (an unplanned ReadTimeout retry then broke the
# exact retry-line assertions). Only the timeout test uses a short one, on purpose.
FAST = RetryPolicy(attempts=5, backoff_base=0.05, backoff_max=0.2, max_wait=5.0, timeout=20.0)
SHORT_TIMEOUT = RetryPolicy(attempts=5, backoff_base=0.05, backoff_max=0.2, max_wait=5.0, timeout=3.0)
RETRY_LOG = "Request attempt #"


# --------------------------------------------------------------------------- fault proxy

FaultKind = Literal["status", "forward_then_status", "forward_then_drop"]


@dataclass
class Fault:
    """What the proxy does to the next ``times`` requests (matching ``method``, if set)."""

    kind: FaultKind
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    times: int = 1
    stall: float = 0.0  # forward_then_drop: seconds to hold the connection before dropping it


@dataclass
class Seen:
    method: str
    path: str
    outcome: str  # "forwarded", "fault 500", "forwarded+drop", ...
    at: float = field(default_factory=time.monotonic)  # when the request reached the proxy


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of one upstream, with a queue of faults."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                proxy.handle(self)

            do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def inject(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def count(self, method: str) -> int:
        return sum(1 for s in self.seen if s.method == method)

    def _take(self, method: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and (fault.method is None or fault.method == method):
                    fault.times -= 1
                    return fault
        return None

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else None
        fault = self._take(req.command)
        seen = Seen(req.command, req.path, "forwarded")
        with self.lock:
            self.seen.append(seen)
        if fault is not None and fault.kind == "status":
            seen.outcome = f"fault {fault.status}"
            self._answer(req, fault.status, {"Content-Type": "application/json", **fault.headers}, b'{"message":"injected"}')
            return
        status, headers, data = self._forward(req, body)
        if fault is None:
            self._answer(req, status, headers, data)
        elif fault.kind == "forward_then_status":
            # The upstream did the work; a gateway in between answers an error anyway.
            seen.outcome = f"forwarded {status} then fault {fault.status}"
            self._answer(req, fault.status, {"Content-Type": "application/json", **fault.headers}, b'{"message":"bad gateway"}')
        else:
            # The upstream did the work; the client never hears about it.
            seen.outcome = f"forwarded {status} then drop after {fault.stall}s"
            time.sleep(fault.stall)
            req.close_connection = True

    def _forward(self, req: BaseHTTPRequestHandler, body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in req.headers.items() if k.lower() in ("authorization", "content-type", "accept")}
        fwd = urllib.request.Request(self.upstream + req.path, data=body, method=req.command, headers=headers)
        try:
            with urllib.request.urlopen(fwd, timeout=30) as resp:
                status, raw, resp_headers = int(resp.status), resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            status, raw, resp_headers = int(exc.code), exc.read(), exc.headers
        keep = {k: v for k, v in resp_headers.items() if k.lower() in ("content-type", "link", "x-total-count")}
        return status, keep, raw

    @staticmethod
    def _answer(req: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes) -> None:
        req.send_response(status)
        for k, v in headers.items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gitea(tmp_path_factory: pytest.TempPathFactory, toolchain: Any) -> Iterator[Gitea]:
    """One real Gitea for the module (each test uses its own repository); stopped in finally."""
    server = Gitea(tmp_path_factory.mktemp("forge") / "gitea", toolchain=toolchain)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(gitea: Gitea) -> Iterator[FaultProxy]:
    p = FaultProxy(gitea.url).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def caplog_forge(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="rebuild.forge")
    return caplog


def git(*args: str, cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def repo_with_branches(gitea: Gitea, tmp_path: Path, *branches: str) -> str:
    """A new repository (auto_init: main exists) with each branch pushed, one commit each.

    git authenticates through GIT_CONFIG_* http.extraHeader (Gitea.git_env): the token is in
    no argv and no URL.
    """
    name = f"gitops-{uuid.uuid4().hex[:6]}"
    gitea.create_repo(name)
    work = tmp_path / name
    env = gitea.git_env()
    url = gitea.clone_url(gitea.admin_user, name)
    assert gitea.token not in url
    git("clone", "-q", url, str(work), cwd=tmp_path, env=env)
    for branch in branches:
        git("switch", "-q", "-c", branch, "main", cwd=work, env=env)
        (work / f"{branch.replace('/', '_')}.yaml").write_text(f"branch: {branch}\n")
        git("add", ".", cwd=work, env=env)
        git("-c", "user.name=rebuild", "-c", "user.email=rebuild@localhost", "commit", "-qm", branch, cwd=work, env=env)
        git("push", "-q", "origin", branch, cwd=work, env=env)
    return name


def open_prs(gitea: Gitea, name: str) -> list[Any]:
    """Open PRs as Gitea itself reports them (not through the client under test)."""
    return gitea.list_pull_requests(gitea.admin_user, name)


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rebuild.forge" and r.getMessage().startswith(RETRY_LOG)]


# --------------------------------------------------------------------------- idempotency


def test_ensure_creates_then_unchanged_then_updates_one_pr(gitea: Gitea, tmp_path: Path) -> None:
    name = repo_with_branches(gitea, tmp_path, "rebuild/capture-aaa")
    forge = forge_from_config("gitea", gitea.url, f"{gitea.admin_user}/{name}", gitea.token)
    assert isinstance(forge, GiteaForge)
    with forge:
        pr, action = ensure_pull_request(
            forge, head="rebuild/capture-aaa", base="main", title="Backport 2 manual changes",
            body="| object | field |\n|---|---|\n| Deployment shop/cart | spec.replicas |", head_prefix=PREFIX, marker="d1",
        )  # fmt: skip
        assert action == "created"
        assert pr.head == "rebuild/capture-aaa" and pr.base == "main" and pr.state == "open"
        assert parse_marker(pr.body) == "d1" and marker("d1") in pr.body and "spec.replicas" in pr.body

        # same findings: nothing sent, still one PR
        again, action = ensure_pull_request(
            forge, head="rebuild/capture-aaa", base="main", title="Backport 2 manual changes", body="anything",
            head_prefix=PREFIX, marker="d1",
        )  # fmt: skip
        assert action == "unchanged" and again.number == pr.number
        assert [p["number"] for p in open_prs(gitea, name)] == [pr.number]

        # changed findings (a new branch name from their hash): the existing PR is updated, and its
        # head, not the new name, is where the caller pushes
        updated, action = ensure_pull_request(
            forge, head="rebuild/capture-bbb", base="main", title="Backport 3 manual changes", body="now three",
            head_prefix=PREFIX, marker=marker("d2"),
        )  # fmt: skip
        assert action == "updated" and updated.number == pr.number
        assert updated.head == "rebuild/capture-aaa"
        listed = open_prs(gitea, name)
        assert [p["number"] for p in listed] == [pr.number]
        assert listed[0]["title"] == "Backport 3 manual changes"
        assert parse_marker(listed[0]["body"]) == "d2" and "now three" in listed[0]["body"]
        assert listed[0]["body"].count("rebuild-capture digest=") == 1
        assert forge.get(pr.number).body == listed[0]["body"]

        assert [p.number for p in forge.find_open(PREFIX)] == [pr.number]
        assert forge.find_open("someone-else/") == []


def test_create_of_an_existing_head_returns_it(gitea: Gitea, tmp_path: Path, caplog_forge: pytest.LogCaptureFixture) -> None:
    """A concurrent run already opened the PR: Gitea's 409 is answered with that PR, not an error."""
    name = repo_with_branches(gitea, tmp_path, "rebuild/capture-ccc")
    with GiteaForge(gitea.url, gitea.token, gitea.admin_user, name, policy=FAST) as forge:
        first = forge.create("rebuild/capture-ccc", "main", "t", "b")
        second = forge.create("rebuild/capture-ccc", "main", "t", "b")
    assert second.number == first.number
    assert len(open_prs(gitea, name)) == 1
    assert retry_lines(caplog_forge) == []


# --------------------------------------------------------------------------- faults that heal


def test_5xx_on_create_is_retried_without_duplicate(
    gitea: Gitea, proxy: FaultProxy, tmp_path: Path, caplog_forge: pytest.LogCaptureFixture
) -> None:
    name = repo_with_branches(gitea, tmp_path, "rebuild/capture-ddd")
    proxy.inject(Fault("status", 500, method="POST", times=2))
    with GiteaForge(proxy.url, gitea.token, gitea.admin_user, name, policy=FAST) as forge:
        pr, action = ensure_pull_request(
            forge, head="rebuild/capture-ddd", base="main", title="t", body="b", head_prefix=PREFIX, marker="d1"
        )
    assert action == "created"
    assert [p["number"] for p in open_prs(gitea, name)] == [pr.number]
    assert proxy.count("POST") == 3
    path = f"/api/v1/repos/{gitea.admin_user}/{name}/pulls"
    assert retry_lines(caplog_forge) == [
        f"Request attempt #1/5 failed; will retry: POST {path} -> 500",
        f"Request attempt #2/5 failed; will retry: POST {path} -> 500",
    ]


def test_5xx_after_the_server_created_it_is_not_duplicated(
    gitea: Gitea, proxy: FaultProxy, tmp_path: Path, caplog_forge: pytest.LogCaptureFixture
) -> None:
    """Gitea commits the PR, a gateway answers 502: the retry finds the PR instead of posting again."""
    name = repo_with_branches(gitea, tmp_path, "rebuild/capture-eee")
    proxy.inject(Fault("forward_then_status", 502, method="POST"))
    with GiteaForge(proxy.url, gitea.token, gitea.admin_user, name, policy=FAST) as forge:
        pr = forge.create("rebuild/capture-eee", "main", "t", "b")
    assert [p["number"] for p in open_prs(gitea, name)] == [pr.number]
    assert proxy.count("POST") == 1
    assert [s.outcome for s in proxy.seen if s.method == "POST"] == ["forwarded 201 then fault 502"]
    assert len(retry_lines(caplog_forge)) == 1 and retry_lines(caplog_forge)[0].endswith("-> 502")


def test_timeout_after_the_server_created_it_leaves_exactly_one_pr(
    gitea: Gitea, proxy: FaultProxy, tmp_path: Path, caplog_forge: pytest.LogCaptureFixture
) -> None:
    name = repo_with_branches(gitea, tmp_path, "rebuild/capture-fff")
    proxy.inject(Fault("forward_then_drop", method="POST", stall=SHORT_TIMEOUT.timeout + 1.5))
    with GiteaForge(proxy.url, gitea.token, gitea.admin_user, name, policy=SHORT_TIMEOUT) as forge:
        start = time.monotonic()
        pr, action = ensure_pull_request(
            forge, head="rebuild/capture-fff", base="main", title="t", body="b", head_prefix=PREFIX, marker="d1"
        )
        elapsed = time.monotonic() - start
    assert action == "created" and parse_marker(pr.body) == "d1"
    assert [p["number"] for p in open_prs(gitea, name)] == [pr.number], "the timed-out create was posted again"
    assert proxy.count("POST") == 1
    assert elapsed >= SHORT_TIMEOUT.timeout  # the client really waited for its timeout
    lines = retry_lines(caplog_forge)
    assert len(lines) == 1 and "POST" in lines[0] and "ReadTimeout" in lines[0], lines


def test_dropped_connection_after_the_server_created_it_leaves_exactly_one_pr(
    gitea: Gitea, proxy: FaultProxy, tmp_path: Path, caplog_forge: pytest.LogCaptureFixture
) -> None:
    name = repo_with_branches(gitea, tmp_path, "rebuild/capture-ggg")
    proxy.inject(Fault("forward_then_drop", method="POST", stall=0.0))
    with GiteaForge(proxy.url, gitea.token, gitea.admin_user, name, policy=FAST) as forge:
        pr = forge.create("rebuild/capture-ggg", "main", "t", "b")
    assert [p["number"] for p in open_prs(gitea, name)] == [pr.number]
    assert proxy.count("POST") == 1
    lines = retry_lines(caplog_forge)
    assert len(lines) == 1 and "RemoteProtocolError" in lines[0], lines


def test_429_honours_retry_after(gitea: Gitea, proxy: FaultProxy, tmp_path: Path, caplog_forge: pytest.LogCaptureFixture) -> None:
    name = repo_with_branches(gitea, tmp_path, "rebuild/capture-hhh")
    gitea.open_pull_request(gitea.admin_user, name, head="rebuild/capture-hhh", base="main", title="t")
    proxy.inject(Fault("status", 429, headers={"Retry-After": "1"}, method="GET"))
    with GiteaForge(proxy.url, gitea.token, gitea.admin_user, name, policy=FAST) as forge:
        start = time.monotonic()
        found = forge.find_open(PREFIX)
        elapsed = time.monotonic() - start
    assert [p.head for p in found] == ["rebuild/capture-hhh"]
    assert elapsed >= 1.0, f"Retry-After: 1 not honoured (retried after {elapsed:.2f}s; backoff alone is 0.05s)"
    assert proxy.count("GET") == 2
    assert retry_lines(caplog_forge) == [
        f"Request attempt #1/5 failed; will retry: GET /api/v1/repos/{gitea.admin_user}/{name}/pulls -> 429"
    ]


def test_retry_after_beyond_the_budget_fails_at_once(gitea: Gitea, proxy: FaultProxy, tmp_path: Path) -> None:
    name = repo_with_branches(gitea, tmp_path)
    proxy.inject(Fault("status", 429, headers={"Retry-After": "30"}, method="GET"))
    policy = RetryPolicy(attempts=5, backoff_base=0.05, max_wait=2.0, timeout=1.0)
    with GiteaForge(proxy.url, gitea.token, gitea.admin_user, name, policy=policy) as forge:
        start = time.monotonic()
        with pytest.raises(ForgeError, match="retry after 30s") as info:
            forge.find_open(PREFIX)
    assert time.monotonic() - start < 1.0
    assert proxy.count("GET") == 1
    assert info.value.fix and "later" in info.value.fix


def test_persistent_5xx_gives_up_within_the_bounds(
    gitea: Gitea, proxy: FaultProxy, tmp_path: Path, caplog_forge: pytest.LogCaptureFixture
) -> None:
    name = repo_with_branches(gitea, tmp_path)
    proxy.inject(Fault("status", 503, method="GET", times=100))
    policy = RetryPolicy(attempts=3, backoff_base=0.05, max_wait=1.0, timeout=1.0)
    with GiteaForge(proxy.url, gitea.token, gitea.admin_user, name, policy=policy) as forge:
        with pytest.raises(ForgeError, match="failed after 3 attempts") as info:
            forge.find_open(PREFIX)
    assert proxy.count("GET") == 3
    assert len(retry_lines(caplog_forge)) == 2
    assert "-> 503" in info.value.message and info.value.fix and proxy.url in info.value.fix


# --------------------------------------------------------------------------- faults that do not heal


def test_bad_token_is_a_401_with_the_fix_and_no_retry(
    gitea: Gitea, proxy: FaultProxy, tmp_path: Path, caplog_forge: pytest.LogCaptureFixture
) -> None:
    name = repo_with_branches(gitea, tmp_path)
    bad = "f" * 40  # the shape of a Gitea token, known to no one
    forge = GiteaForge(proxy.url, bad, gitea.admin_user, name, policy=FAST)
    with forge, pytest.raises(ForgeHTTPError) as info:
        ensure_pull_request(forge, head="rebuild/capture-x", base="main", title="t", body="b", head_prefix=PREFIX, marker="d1")
    err = info.value
    assert err.status == 401 and err.operation == "list open pull requests"
    assert err.fix and "check the token" in err.fix
    assert f"{gitea.admin_user}/{name}" in err.message and "HTTP 401" in err.message
    for text in (str(err), repr(err), err.message, err.fix, repr(forge), caplog_forge.text):
        assert bad not in text and gitea.token not in text
    assert len(proxy.seen) == 1, "a 401 must not be retried"
    assert retry_lines(caplog_forge) == []
    assert all(bad not in s.path for s in proxy.seen)


def test_missing_repo_is_a_404_with_the_fix_and_no_retry(gitea: Gitea, proxy: FaultProxy) -> None:
    with GiteaForge(proxy.url, gitea.token, gitea.admin_user, "no-such-repo", policy=FAST) as forge:
        with pytest.raises(ForgeHTTPError) as info:
            forge.find_open(PREFIX)
    assert info.value.status == 404 and info.value.fix and "owner/repo" in info.value.fix
    assert len(proxy.seen) == 1


def test_token_never_in_urls_or_logs(gitea: Gitea, proxy: FaultProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx's own request log lines included
    name = repo_with_branches(gitea, tmp_path, "rebuild/capture-iii")
    proxy.inject(Fault("status", 500, times=1))
    with GiteaForge(proxy.url, gitea.token, gitea.admin_user, name, policy=FAST) as forge:
        ensure_pull_request(forge, head="rebuild/capture-iii", base="main", title="t", body="b", head_prefix=PREFIX, marker="d1")
        assert gitea.token not in repr(forge)
    assert proxy.seen and all(gitea.token not in s.path for s in proxy.seen)
    assert gitea.token not in caplog.text
    assert json.dumps([s.__dict__ for s in proxy.seen]).count(gitea.token) == 0
