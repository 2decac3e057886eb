"""The GitLab client: merge requests, addressed by the project's path."""

from __future__ import annotations

from typing import Any, Literal

import httpx2 as httpx

from rebuild.adapters.forge.base import PullRequest, _Call, _HttpForge, _q, _str
from rebuild.core.retry import RetryPolicy

GITLAB_URL = "https://gitlab.com"


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
