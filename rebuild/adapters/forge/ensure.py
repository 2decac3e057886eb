"""Exactly one open capture pull request: find it, leave it, update it, or create it."""

from __future__ import annotations

from rebuild.adapters.forge.base import Ensured, Forge, PullRequest, choose_pull_request, log, parse_marker, with_marker


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
