"""The Kubernetes API, as rebuild uses it: raw objects in, raw objects out.

Why raw: rebuild applies, lists and diffs *arbitrary* objects (whatever git declares,
custom resources included), so it works on plain dicts keyed by discovery, not on typed
models. lightkube supplies what is tedious to get right (kubeconfig parsing, client
certificates, tokens, exec credential plugins, TLS) and its httpx transport; the verbs
here are a thin layer on that connection: server-side apply, paginated LIST, GET,
DELETE, discovery. There is no client-side rate limiter (client-go's 5 QPS default is why
restores are slow); the server's priority and fairness decides, and 429s are honoured.

Retries follow the project's one policy and loop (rebuild/core/retry.py), with this
client's numbers written down as data (POLICY, THROTTLE_POLICY) and only for what can heal:
connection errors, 5xx, 429 with Retry-After. Connection errors and 5xx get MAX_ATTEMPTS
attempts. A 429 is different: the server is up and asks to be called again later (API
priority and fairness under load, a lowered --max-requests-inflight), which can last for
minutes during a restore or a capture of thousands of objects; so 429s are retried, waiting as
long as Retry-After says, until THROTTLE_BUDGET seconds have passed since the request was
first sent, not for a fixed number of attempts. Each retry logs
``Request attempt #2/8 failed; will retry: GET /api/v1/... -> 503`` or
``Request attempt #9 failed; will retry in 1.0s (throttled, 8s of 300s): GET ... -> HTTP 429: ...``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import msgspec
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig

from rebuild.core.errors import ClusterError, ConfigError, KubeError
from rebuild.core.retry import THROTTLED as THROTTLED
from rebuild.core.retry import GaveUp, Retryable, RetryPolicy, log_retries, parse_retry_after, retry

log = logging.getLogger("rebuild.kube")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# connection errors and 5xx: attempts per request; the backoff adds up to ~16 s, longer than an
# API server restart takes (tests/integration/test_faults.py kills and restarts one mid-capture)
MAX_ATTEMPTS = 8
THROTTLE_BUDGET = 300.0  # 429: retried until this many seconds after the first attempt
BACKOFF_BASE = 0.2
BACKOFF_MAX = 5.0
RETRY_AFTER_MAX = 32.0  # the longest Retry-After honoured (API priority and fairness asks for 1..32 s)
THROTTLE_POLICY = RetryPolicy(
    attempts=None,
    backoff_base=BACKOFF_BASE,
    backoff_max=BACKOFF_MAX,
    max_wait=None,
    deadline=THROTTLE_BUDGET,
    retry_after_max=RETRY_AFTER_MAX,
    statuses=RETRY_STATUSES,
)
POLICY = RetryPolicy(
    attempts=MAX_ATTEMPTS,
    backoff_base=BACKOFF_BASE,
    backoff_max=BACKOFF_MAX,
    max_wait=None,
    retry_after_max=RETRY_AFTER_MAX,
    statuses=RETRY_STATUSES,
    throttled=THROTTLE_POLICY,
)
_LOG_RETRY = log_retries(
    log,
    throttled="Request attempt #{attempt} failed; will retry in {delay:.1f}s (throttled, {elapsed:.0f}s of {budget:.0f}s): "
    "{operation} -> {error}",
)
FIELD_MANAGER = "rebuild"
# kubectl's Accept for aggregated discovery: every group's resources in one document
AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

Obj = dict[str, Any]


@dataclass(frozen=True)
class ResourceInfo:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: frozenset[str]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        return base


def subject(obj: Obj) -> str:
    """``Kind/namespace/name`` (or ``Kind/name``), the way messages name an object."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{ns}/{meta.get('name')}" if ns else f"{obj.get('kind')}/{meta.get('name')}"


class Kube:
    """One connection to one cluster. Thread-safe: the verbs may be called from a pool."""

    def __init__(self, http: httpx.Client, server: str) -> None:
        self.http = http
        self.server = server
        self._discovery: dict[tuple[str, str], ResourceInfo] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_kubeconfig(cls, path: Path | str, context: str | None = None, timeout: float = 30.0) -> Kube:
        try:
            cfg = KubeConfig.from_file(str(path)).get(context)
        except Exception as exc:
            raise ConfigError(f"cannot load kubeconfig {path}: {exc}", fix="check the file and the context name") from exc
        if cfg is None:
            raise ConfigError(f"kubeconfig {path} has no context {context or '(current)'}", fix="pass an existing context")
        params = client_adapter.ConnectionParams(timeout=httpx.Timeout(timeout), trust_env=False)
        # lightkube resolves TLS and auth (certs, tokens, exec plugins); the pool is sized for
        # concurrent apply/list, with no client-side QPS limit.
        http = httpx.Client(**params.httpx_params(cfg), limits=httpx.Limits(max_connections=64, max_keepalive_connections=32))
        return cls(http, str(cfg.cluster.server))

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ transport

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (200, 201, 202),
        what: str = "",
        accept: str = "application/json",
    ) -> httpx.Response:
        """One API call with the retry policy; returns the response when its status is in ``ok``."""
        headers = {"Accept": accept, "Content-Type": content_type}

        def attempt(_n: int) -> httpx.Response:
            try:
                resp = self.http.request(method, path, params=params, content=body, headers=headers)
            except (httpx.TransportError, OSError) as exc:
                raise Retryable(f"{type(exc).__name__}: {exc}") from exc
            if resp.status_code in ok:
                return resp
            if not POLICY.heals(resp.status_code) or _permanent_500(resp):
                raise _api_error(resp, method, path, what)
            raise Retryable(
                f"HTTP {resp.status_code}: {_status_message(resp)[:200]}",
                status=resp.status_code,
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                throttled=resp.status_code == THROTTLED,
            )

        try:
            return retry(attempt, POLICY, operation=f"{method} {path}", on_retry=_LOG_RETRY)
        except GaveUp as gave:
            target = f"{method} {path}{' (' + what + ')' if what else ''}"
            if gave.throttled:
                raise ClusterError(
                    f"{target} was still throttled after {gave.elapsed:.0f}s ({gave.failures} HTTP 429 answers): {gave.error}",
                    fix=f"the API server at {self.server} is overloaded or its priority and fairness limits this user; "
                    "retry later, or give the user a priority level with more concurrency",
                ) from gave.__cause__
            raise ClusterError(
                f"{target} failed after {MAX_ATTEMPTS} attempts: {gave.error}",
                fix=f"check that the API server at {self.server} is up",
            ) from gave.__cause__

    # ------------------------------------------------------------------ discovery

    def discovery(self, refresh: bool = False) -> dict[tuple[str, str], ResourceInfo]:
        """(apiVersion, kind) -> ResourceInfo for every served top-level resource, each group's
        preferred version first. Two requests where the server has aggregated discovery
        (Kubernetes >= 1.30, what kubectl uses), else one per group version."""
        with self._lock:
            if self._discovery is not None and not refresh:
                return self._discovery
            found = self._aggregated_discovery()
            self._discovery = found if found is not None else self._legacy_discovery()
            return self._discovery

    def _aggregated_discovery(self) -> dict[tuple[str, str], ResourceInfo] | None:
        """Discovery from /api and /apis as APIGroupDiscoveryList (apidiscovery.k8s.io/v2); None
        when the server answers with the legacy documents instead."""
        found: dict[tuple[str, str], ResourceInfo] = {}
        for top in ("/api", "/apis"):
            resp = self.request("GET", top, accept=f"{AGGREGATED_DISCOVERY},application/json")
            if "apidiscovery.k8s.io" not in resp.headers.get("content-type", ""):
                return None
            for group in resp.json().get("items") or []:
                name = str((group.get("metadata") or {}).get("name") or "")
                for v in group.get("versions") or []:
                    for r in v.get("resources") or []:
                        kind = (r.get("responseKind") or {}).get("kind")
                        if not kind:
                            continue
                        namespaced = r.get("scope") == "Namespaced"
                        info = ResourceInfo(name, v["version"], kind, r["resource"], namespaced, frozenset(r.get("verbs") or []))
                        found[(info.api_version, info.kind)] = info
        return found

    def _legacy_discovery(self) -> dict[tuple[str, str], ResourceInfo]:
        """Discovery the pre-1.30 way: /api, /apis, then one request per group version."""
        found: dict[tuple[str, str], ResourceInfo] = {}
        groups: list[tuple[str, str]] = [("", v) for v in self.request("GET", "/api").json().get("versions", [])]
        for g in self.request("GET", "/apis").json().get("groups", []):
            for v in g.get("versions", []):
                groups.append((g["name"], v["version"]))
        for group, version in groups:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            try:
                resources = self.request("GET", path).json().get("resources", [])
            except KubeError:
                continue  # an aggregated API that is down must not break everything else
            for r in resources:
                if "/" in r["name"]:
                    continue
                info = ResourceInfo(group, version, r["kind"], r["name"], bool(r["namespaced"]), frozenset(r.get("verbs", [])))
                found[(info.api_version, info.kind)] = info
        return found

    def info(self, api_version: str, kind: str, *, refresh_on_miss: bool = True) -> ResourceInfo:
        disc = self.discovery()
        hit = disc.get((api_version, kind))
        if hit is None and refresh_on_miss:
            hit = self.discovery(refresh=True).get((api_version, kind))
        if hit is None:
            raise KubeError(
                f"the cluster does not serve {kind} in {api_version}",
                status=404,
                fix="install the CRD (or API) that defines it, or fix apiVersion/kind",
            )
        return hit

    def info_for(self, obj: Obj) -> ResourceInfo:
        return self.info(str(obj.get("apiVersion")), str(obj.get("kind")))

    # ------------------------------------------------------------------ verbs

    def peek(self, path: str) -> Obj | None:
        """GET an API path once, outside the retry policy: the object, or None when it is absent,
        refused or the API server does not answer. For polls that ask again soon anyway (and must
        not sit in 16 s of backoff, nor log retries, while a phase beside them fails)."""
        try:
            resp = self.http.request("GET", path, headers={"Accept": "application/json"})
        except (httpx.TransportError, OSError):
            return None
        return dict(resp.json()) if resp.status_code == 200 else None

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        info = self.info(api_version, kind)
        resp = self.request("GET", info.path(namespace, name), ok=(200, 404), what=f"{kind}/{name}")
        return None if resp.status_code == 404 else dict(resp.json())

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        limit: int = 500,
    ) -> list[Obj]:
        return list(self.iter_list(api_version, kind, namespace, label_selector=label_selector, limit=limit))

    def iter_list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        limit: int = 500,
    ) -> Iterator[Obj]:
        """Paginated LIST; items get their apiVersion/kind filled in (the API omits them in lists)."""
        info = self.info(api_version, kind)
        params: dict[str, str] = {"limit": str(limit)}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            # msgspec decodes large LIST bodies several times faster than json.loads.
            body = _decode(self.request("GET", info.path(namespace), params=params, what=f"list {kind}").content)
            for item in body.get("items") or []:
                item.setdefault("apiVersion", info.api_version)
                item.setdefault("kind", info.kind)
                yield item
            cont = (body.get("metadata") or {}).get("continue")
            if not cont:
                return
            params["continue"] = cont

    def apply(
        self, obj: Obj, *, field_manager: str = FIELD_MANAGER, force: bool = True, dry_run: bool = False, strict: bool = False
    ) -> Obj:
        """Server-side apply of one object; returns the object as the server stored it.

        ``strict``: refuse unknown or duplicate fields (``fieldValidation=Strict``) instead of
        dropping them, which is how rebuild finds a field git declares that no schema has."""
        info = self.info_for(obj)
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") if info.namespaced else None
        if info.namespaced and not ns:
            ns = "default"
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        if dry_run:
            params["dryRun"] = "All"
        if strict:
            params["fieldValidation"] = "Strict"
        resp = self.request(
            "PATCH",
            info.path(ns, meta.get("name")),
            params=params,
            body=json.dumps(obj).encode(),
            content_type="application/apply-patch+yaml",
            what=subject(obj),
        )
        return dict(resp.json())

    def create(self, obj: Obj, *, field_manager: str = FIELD_MANAGER) -> Obj:
        info = self.info_for(obj)
        ns = (obj.get("metadata") or {}).get("namespace") if info.namespaced else None
        resp = self.request(
            "POST", info.path(ns), params={"fieldManager": field_manager}, body=json.dumps(obj).encode(), what=subject(obj)
        )
        return dict(resp.json())

    def patch(self, obj_ref: Obj, patch: Obj, *, field_manager: str, patch_type: str = "merge", subresource: str = "") -> Obj:
        """A merge/strategic/json patch, as kubectl edit/patch/scale send them (used to make drift in tests)."""
        info = self.info_for(obj_ref)
        meta = obj_ref.get("metadata") or {}
        path = info.path(meta.get("namespace"), meta.get("name")) + (f"/{subresource}" if subresource else "")
        ctype = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[patch_type]
        resp = self.request(
            "PATCH",
            path,
            params={"fieldManager": field_manager},
            body=json.dumps(patch).encode(),
            content_type=ctype,
            what=subject(obj_ref),
        )
        return dict(resp.json())

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        info = self.info(api_version, kind)
        resp = self.request("DELETE", info.path(namespace, name), ok=(200, 202, 404), what=f"{kind}/{name}")
        return resp.status_code != 404

    def readyz(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except (httpx.TransportError, OSError):
            return False


_DECODER = msgspec.json.Decoder()


def _decode(content: bytes) -> dict[str, Any]:
    out: dict[str, Any] = _DECODER.decode(content)
    return out


def next_delay(status: int | None, *, failures: int, throttles: int, elapsed: float, retry_after: float | None) -> float | None:
    """Seconds to wait before the next attempt of a request, or None to give up (POLICY's rules, as a function).

    ``status`` is the retryable HTTP status just received (None: a connection error);
    ``failures`` and ``throttles`` count the request's non-429 and 429 answers so far, this
    one included; ``elapsed`` is the time since its first attempt.
    """
    if status == THROTTLED:
        return THROTTLE_POLICY.next_delay(throttles, retry_after=retry_after, elapsed=elapsed)[0]
    return POLICY.next_delay(failures, retry_after=retry_after, elapsed=elapsed)[0]


# A 500 that names a problem of the request itself, not of the server: the API server answers
# a server-side apply of a field no schema declares this way; retrying sends the same bytes.
_PERMANENT_500 = ("failed to create typed patch object",)


def _permanent_500(resp: httpx.Response) -> bool:
    return resp.status_code == 500 and any(m in _status_message(resp) for m in _PERMANENT_500)


def _status_message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("message") or resp.text)
    except ValueError:
        return resp.text


def _api_error(resp: httpx.Response, method: str, path: str, what: str) -> KubeError:
    try:
        status = resp.json()
        message = str(status.get("message") or resp.text[:300])
    except ValueError:
        message = resp.text[:300]
    target = what or path
    fix = {
        401: "check the kubeconfig's credentials",
        403: "the kubeconfig's user lacks RBAC permission for this",
        404: "the object or its API does not exist",
        409: "the object changed or is owned by another manager; rerun",
        422: "the object is invalid: fix it in git",
    }.get(resp.status_code)
    return KubeError(f"{method} {target}: HTTP {resp.status_code}: {message}", status=resp.status_code, fix=fix)
