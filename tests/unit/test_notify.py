"""Webhook notification against a real HTTP receiver on 127.0.0.1 that records payloads and scripts its answers."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rebuild.core.errors import RebuildError
from rebuild.drills import notify
from tests.unit.test_report import sample_result


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


@dataclass
class Receiver:
    """Records every request; answers from ``script`` in order, then 200 for the rest."""

    server: ThreadingHTTPServer
    script: list[Answer] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [r["json"] for r in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            rec = state["r"]
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                rec.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "json": json.loads(raw), "at": time.monotonic()}
                )
                answer = rec.script.pop(0) if rec.script else Answer()
            if answer.delay:
                time.sleep(answer.delay)
            try:
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec = Receiver(server)
    state["r"] = rec
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield rec
    server.shutdown()
    server.server_close()


def fast(**kw: Any) -> dict[str, Any]:
    """Real sleeps, but short ones: the policy under test, scaled down."""
    return {"policy": notify.webhook_policy(base_delay=0.05, max_delay=2.0), **kw}


def test_posts_a_slack_compatible_summary(receiver: Receiver) -> None:
    result = sample_result(passed=False)
    notify.notify(receiver.url, result, report_path="/var/drills/x/report.html", **fast())
    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    assert req["path"] == "/hook" and req["headers"]["Content-Type"].startswith("application/json")
    body = req["json"]
    assert set(body) == {"text", "blocks"}
    text = body["text"]
    assert "rebuild drill drill-ab12cd: FAILED" in text and "RTO 1 m 06 s" in text and "2 failure(s)" in text
    assert "failed in verify" in text and "/var/drills/x/report.html" in text
    assert body["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "rebuild drill drill-ab12cd: FAILED"}}
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in body["blocks"][1]["fields"]}
    assert fields["*Cluster*"] == "drill-ab12cd" and fields["*Failures*"] == "2" and fields["*RPO (revision age)*"] == "1 h 00 m"
    failures = body["blocks"][2]["text"]["text"]
    assert "`Deployment/shop/cart` apps/base/cart/deployment.yaml:12" in failures
    assert "<script>" not in failures and "&lt;script&gt;" in failures  # Slack mrkdwn escaping
    assert body["blocks"][-1]["type"] == "context" and "report.html" in body["blocks"][-1]["elements"][0]["text"]


def test_passed_summary(receiver: Receiver) -> None:
    notify.notify(receiver.url, sample_result(), **fast())
    body = receiver.payloads[0]
    assert "PASSED" in body["text"] and "0 failure(s)" in body["text"]
    assert all(b["type"] != "context" for b in body["blocks"])


def test_retries_a_500_then_succeeds(receiver: Receiver) -> None:
    receiver.script = [Answer(500, body=b"boom")]
    lines: list[str] = []
    notify.notify(receiver.url, sample_result(), progress=lines.append, **fast())
    assert len(receiver.requests) == 2 and receiver.payloads[0] == receiver.payloads[1]
    assert len(lines) == 1 and lines[0].startswith("notify attempt #1/4 failed; will retry in 0.1s: POST http://127.0.0.1:")
    assert "-> 500" in lines[0] and "boom" in lines[0]


def test_429_honours_retry_after(receiver: Receiver) -> None:
    receiver.script = [Answer(429, {"Retry-After": "1"})]
    notify.notify(receiver.url, sample_result(), **fast(progress=lambda _m: None))
    assert len(receiver.requests) == 2
    waited = receiver.requests[1]["at"] - receiver.requests[0]["at"]
    assert 0.9 <= waited < 3.0


def test_never_retries_a_4xx(receiver: Receiver) -> None:
    receiver.script = [Answer(404, body=b"no such webhook")]
    with pytest.raises(notify.NotifyError) as err:
        notify.notify(receiver.url, sample_result(), **fast())
    assert isinstance(err.value, RebuildError) and err.value.status == 404
    assert len(receiver.requests) == 1
    assert "refused the summary: 404" in str(err.value) and "no such webhook" in str(err.value)


def test_gives_up_after_four_attempts(receiver: Receiver) -> None:
    receiver.script = [Answer(503)] * 10
    lines: list[str] = []
    with pytest.raises(notify.NotifyError, match="failed after 4 attempts"):
        notify.notify(receiver.url, sample_result(), progress=lines.append, policy=notify.webhook_policy(base_delay=0.2))
    assert len(receiver.requests) == 4 and len(lines) == 3
    gaps = [b["at"] - a["at"] for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert gaps[1] > gaps[0] * 1.5  # exponential backoff


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.script = [Answer(302, {"Location": "http://127.0.0.1:1/elsewhere"})]
    with pytest.raises(notify.NotifyError, match="redirect"):
        notify.notify(receiver.url, sample_result(), **fast())
    assert len(receiver.requests) == 1


def test_timeout_is_retried(receiver: Receiver) -> None:
    receiver.script = [Answer(200, delay=1.5)]
    lines: list[str] = []
    notify.notify(receiver.url, sample_result(), timeout=0.3, progress=lines.append, **fast())
    assert len(receiver.requests) == 2 and "attempt #1/4 failed" in lines[0]


def test_connection_refused_is_retried_and_the_error_hides_credentials() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nothing listens on `port` any more
    url = f"http://user:hunter2@127.0.0.1:{port}/services/T000/B000/SECRETTOKEN?token=abc"
    lines: list[str] = []
    with pytest.raises(notify.NotifyError) as err:
        notify.notify(url, sample_result(), progress=lines.append, **fast())
    msg = str(err.value) + "\n".join(lines)
    assert len(lines) == 3 and "Connection refused" in msg
    for secret in ("hunter2", "user:", "SECRETTOKEN", "T000", "token=abc"):
        assert secret not in msg
    assert f"http://127.0.0.1:{port}/services/…" in msg


def test_credentials_in_the_url_become_basic_auth(receiver: Receiver) -> None:
    url = receiver.url.replace("http://", "http://bot:s%40cret@")
    notify.notify(url, sample_result(), **fast())
    assert receiver.requests[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"bot:s@cret").decode()


def test_only_http_urls() -> None:
    with pytest.raises(notify.NotifyError, match="not http"):
        notify.notify("file:///etc/passwd", sample_result())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T00/B00/XXXX", "https://hooks.slack.com/services/…"),
        ("https://u:p@example.com:8443/hook?k=v", "https://example.com:8443/hook/…"),
        ("http://127.0.0.1:9/hook", "http://127.0.0.1:9/hook"),
        ("http://[::1]:9/", "http://[::1]:9"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert notify.redact_url(url) == shown


def test_retry_policy_as_data() -> None:
    p = notify.DEFAULT_POLICY
    assert p.attempts == 4 and p.heals(500) and p.heals(503) and p.heals(429)
    assert not p.heals(400) and not p.heals(404) and not p.heals(409)
    assert [p.next_delay(a)[0] for a in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert p.next_delay(1, retry_after=7)[0] == 7.0 and p.next_delay(1, retry_after=3600)[0] == p.retry_after_max == 30.0
