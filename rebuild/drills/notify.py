"""Post a drill summary to a chat webhook, so a failed drill is seen by people, not only by CI.

The payload is Slack-compatible (``text`` plus Block Kit ``blocks``); Mattermost, Rocket.Chat,
Google Chat-style bridges and most generic JSON webhooks accept it. urllib only: a DR tool
should not need another HTTP stack to say "the drill failed".

Retries follow the project's one policy (core/retry.py, :func:`webhook_policy`) and its one
retry loop: connection errors, timeouts, 5xx and 429 (honouring
Retry-After) heal and are retried with backoff, at most 4 attempts, one line per failed
attempt; any other 4xx is bad input (a revoked webhook, a wrong URL) and fails at once.
Redirects are not followed: urllib would turn the POST into a GET and drop the payload
without a word.

Webhook URLs carry their secret in the path or the query (Slack's
``/services/T…/B…/<token>``), so errors and logs name only ``scheme://host[:port]/first-segment/…``.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rebuild.core import retry
from rebuild.core.errors import RebuildError
from rebuild.core.results import RunResult
from rebuild.drills.report import fmt_seconds

log = logging.getLogger(__name__)

USER_AGENT = "rebuild-notify/1"


class NotifyError(RebuildError):
    """The webhook refused the summary or could not be reached after every retry."""

    def __init__(self, message: str, *, status: int = 0, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.status = status


# Every 5xx heals for a webhook (chat services answer 501/505 from overloaded proxies too).
_5XX = frozenset(range(500, 600))
LINE = "notify attempt #{attempt}/{attempts} failed; will retry in {delay:.1f}s: {error}"


STATUSES = frozenset({429}) | _5XX


def webhook_policy(*, attempts: int = 4, base_delay: float = 1.0, max_delay: float = 30.0) -> retry.RetryPolicy:
    """The webhook's rules as the project's one policy: bounded by attempts only, the backoff
    doubling from ``base_delay`` up to ``max_delay``, which also caps a server's Retry-After;
    429 and every 5xx heal."""
    return retry.RetryPolicy(
        attempts=attempts,
        backoff_base=base_delay,
        backoff_max=max_delay,
        max_wait=None,
        retry_after_max=max_delay,
        statuses=STATUSES,
    )


DEFAULT_POLICY = webhook_policy()


def redact_url(url: str) -> str:
    """``scheme://host[:port]/first-segment/…``: never the user:password, token path or query."""
    try:
        p = urllib.parse.urlsplit(url)
        host = p.hostname or ""
        port = p.port
    except ValueError:
        return "(unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    segments = [s for s in p.path.split("/") if s]
    path = f"/{segments[0]}" if segments else ""
    if len(segments) > 1 or p.query or p.fragment:
        path += "/…"
    return f"{p.scheme}://{netloc}{path}"


def _slack_escape(s: str) -> str:
    # Slack's mrkdwn gives &, < and > control meaning (links, mentions): escape them.
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def build_payload(
    result: RunResult | dict[str, Any], *, report_path: str | Path | None = None, max_failures: int = 5
) -> dict[str, Any]:
    """The Slack-compatible summary: verdict, cluster, RTO, RPO, failures count, report path."""
    run = RunResult.read(result)
    passed, verdict, kind = run.passed, run.verdict, run.kind
    cluster = run.cluster or "?"
    rto, age_s = run.rto_seconds, run.revision_age_seconds
    failures = run.failures
    failed_phases = [p.name for p in run.phases if p.status == "failed"]
    icon = ":white_check_mark:" if passed else ":x:"
    text = f"rebuild {kind} {cluster}: {verdict} - RTO {fmt_seconds(rto)}, {len(failures)} failure(s)"
    if failed_phases:
        text += f", failed in {', '.join(failed_phases)}"
    if report_path:
        text += f" - report: {report_path}"
    fields = [
        ("Cluster", cluster),
        ("RTO", fmt_seconds(rto)),
        ("RPO (revision age)", fmt_seconds(age_s)),
        ("Failures", str(len(failures))),
        ("Objects verified", f"{run.objects.verified}/{run.objects.objects}"),
    ]
    if run.uncaptured_changes is not None:
        fields.append(("Uncaptured manual changes", str(run.uncaptured_changes)))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(f"rebuild {kind} {cluster}: {verdict}", 150)}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": f"{icon} *{verdict}*"
                + (f" (failed in {_slack_escape(', '.join(failed_phases))})" if failed_phases else ""),
            },
            "fields": [{"type": "mrkdwn", "text": _clip(f"*{k}*\n{_slack_escape(v)}", 2000)} for k, v in fields[:10]],
        },
    ]
    if failures:
        lines = [
            f"• `{_slack_escape(f.object)}` {_slack_escape(f.source)}: {_slack_escape(_clip(f.message, 200))}"
            for f in failures[:max_failures]
        ]
        if len(failures) > max_failures:
            lines.append(f"… and {len(failures) - max_failures} more (see the report)")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip("*Failures*\n" + "\n".join(lines), 3000)}})
    error = run.error
    if error and not failures:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*Error*\n{_slack_escape(error)}", 3000)}})
    if report_path:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": _clip(f"Report: {_slack_escape(str(report_path))}", 2000)}],
            }
        )
    return {"text": text, "blocks": blocks}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _split_credentials(url: str) -> tuple[str, dict[str, str]]:
    """user:password in the URL becomes a Basic Authorization header (urllib would try to resolve it as a host)."""
    p = urllib.parse.urlsplit(url)
    if p.username is None and p.password is None:
        return url, {}
    netloc = p.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if p.port:
        netloc += f":{p.port}"
    user = urllib.parse.unquote(p.username or "")
    password = urllib.parse.unquote(p.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urllib.parse.urlunsplit(p._replace(netloc=netloc)), {"Authorization": f"Basic {token}"}


def notify(
    url: str,
    result: RunResult | dict[str, Any],
    *,
    timeout: float = 10,
    report_path: str | Path | None = None,
    policy: retry.RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] | None = None,
) -> None:
    """POST the summary of ``result`` to ``url``; retries what can heal, raises NotifyError otherwise."""
    shown = redact_url(url)
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in ("http", "https"):
        raise NotifyError(f"webhook URL {shown} is not http(s)", fix="pass an https:// webhook URL to --notify")
    target, headers = _split_credentials(url)
    body = json.dumps(build_payload(result, report_path=report_path), ensure_ascii=False).encode("utf-8")
    opener = urllib.request.build_opener(_NoRedirect)
    say = progress or (lambda m: log.warning("%s", m))

    def attempt(_n: int) -> None:
        req = urllib.request.Request(
            target,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT, **headers},
        )
        try:
            with opener.open(req, timeout=timeout) as resp:
                resp.read(65536)
                return
        except urllib.error.HTTPError as exc:
            status = exc.code
            detail = ""
            try:
                detail = exc.read(300).decode("utf-8", "replace").strip()
            except OSError:
                pass
            finally:
                exc.close()
            last = f"POST {shown} -> {status} {exc.reason}" + (f": {_clip(detail, 200)}" if detail else "")
            if 300 <= status < 400:
                raise NotifyError(
                    f"webhook {shown} answered a redirect ({status}); the summary was not delivered",
                    status=status,
                    fix="use the final webhook URL (redirects would drop the POST body)",
                ) from exc
            if not policy.heals(status):
                raise NotifyError(
                    f"webhook {shown} refused the summary: {status} {exc.reason}"
                    + (f" ({_clip(detail, 200)})" if detail else ""),
                    status=status,
                    fix="check the webhook URL and that it accepts Slack-style JSON; 4xx is not retried",
                ) from exc
            after = retry.parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            raise retry.Retryable(last, status=status, retry_after=after) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise retry.Retryable(f"POST {shown} -> {type(reason).__name__}: {reason}") from exc

    try:
        retry.retry(attempt, policy, operation=f"POST {shown}", on_retry=lambda e: say(e.line(LINE)), sleep=sleep)
    except retry.GaveUp as gave:
        raise NotifyError(
            f"webhook {shown} failed after {gave.attempt} attempts: {gave.error}",
            fix="check that the webhook host is reachable; the drill result and reports are unaffected",
        ) from gave.__cause__
