"""The pull request's title, body and commit message, written from a finished plan.

Separate from planning: these only read the plan (rows, new and deleted objects, Secrets, notes)
and the final texts for the file:line of each edit; Secret values never reach them.
"""

from __future__ import annotations

from rebuild.capture.backport.model import Backport, PlannerState
from rebuild.capture.drift import DriftReport, Finding


def _by(f: Finding) -> str:
    """``by kubectl-edit at 2026-11-26T11:05:17Z`` (the manager alone: the commit is one line per change)."""
    return f"by {f.manager or 'an unknown client'}" + (f" at {f.time}" if f.time else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def _code(text: str) -> str:
    return f"`{_cell(text)}`"


def pr_title(report: DriftReport) -> str:
    n = len(report.findings)
    if n == 0:
        return "rebuild capture: no manual changes"
    counts: dict[str, int] = {}
    for f in report.findings:
        ns = f.ref.namespace or "cluster-scoped"
        counts[ns] = counts.get(ns, 0) + 1
    namespaces = sorted(counts, key=lambda ns: (-counts[ns], ns))
    return f"rebuild capture: {n} manual change{'s' if n != 1 else ''} in {', '.join(namespaces)}"


def pr_body(p: PlannerState, backport: Backport) -> str:
    report = p.report
    out: list[str] = [
        "Changes made directly in the cluster, found by `rebuild capture` and written back to the files that declare them,",
        "so the next reconcile or rebuild keeps them. Review each one: merge what should stay, revert the rest in the cluster.",
        "",
    ]
    if p.rows:
        out += ["| object | field | git → live | changed by | when | file:line |", "|---|---|---|---|---|---|"]
        for row in p.rows:
            f = row.finding
            if f.secret_value:
                change = "secret value differs (not shown)"
            else:
                g, lv = f.values()
                change = f"{_code(g)} → {_code(lv)}"
            if row.where is not None:
                loc = _code(p.location(row.where))
                if f.helm is not None and f.helm.mapped:
                    loc += f" ({', '.join(_code(e.rendered) for e in f.helm.edits)} of {_cell(f.helm.name)})"
            else:
                loc = (_code(str(f.source)) if f.source else "") + " (not edited, see below)"
            who = _cell(f.changed_by())
            out.append(f"| {_cell(str(f.ref))} | {_code(f.rendered or '')} | {change} | {who} | {f.time or ''} | {loc} |")
        out.append("")
    if p.created or p.created_listed:
        out += ["### New objects", "", "| object | created by | when | file |", "|---|---|---|---|"]
        for f, path in p.created:
            out.append(f"| {_cell(str(f.ref))} | {_cell(f.changed_by())} | {f.time or ''} | {_code(path)} |")
        for f, why in p.created_listed:
            out.append(f"| {_cell(str(f.ref))} | {_cell(f.changed_by())} | {f.time or ''} | not written: {_cell(why)} |")
        out.append("")
    if p.deleted or p.deletions_listed:
        out += ["### Deletions", ""]
        out += [f"- {f.ref}: deleted live; removed from `{where}`" for f, where in p.deleted]
        out += [f"- {f.ref}: {why}" for f, why in p.deletions_listed]
        out.append("")
    if p.sops_written:
        out += [
            "### Secrets written encrypted with SOPS",
            "",
            "The live values were decrypted, set and encrypted again in memory, for the recipients of the",
            "repository's `.sops.yaml` rule: only ciphertext is in this PR. Check them with `sops --decrypt <file>`.",
            "",
        ]
        out += [f"- {s}" for s in p.sops_written]
        out.append("")
    if p.secrets:
        out += ["### Secrets", "", "Secret values are never written to git in clear, nor to this PR or its logs.", ""]
        out += [f"- {s}" for s in p.secrets]
        out.append("")
    not_edited = [r for r in p.rows if r.reason is not None and not r.finding.secret_value]
    if not_edited:
        out += ["### Not edited", "", "Written to no file because it cannot be done safely; edit by hand:", ""]
        out += [f"- {r.finding.ref} `{r.finding.rendered}`: {r.reason}" for r in not_edited]
        out.append("")
    if p.notes:
        out += ["### To do by hand", ""]
        out += [f"- {n}" for n in p.notes]
        out.append("")
    edited = sum(1 for r in p.rows if r.where is not None)
    files = len([k for k in backport.edits if k not in backport.deleted_files])
    out += [
        "### Summary",
        "",
        f"- {report.coverage.summary()}",
        f"- {edited} field{'s' if edited != 1 else ''} edited in {files} file{'s' if files != 1 else ''}, "
        f"{len(p.created)} new object file{'s' if len(p.created) != 1 else ''}, {len(backport.deleted_files)} file"
        f"{'s' if len(backport.deleted_files) != 1 else ''} deleted, {len(backport.listed)} item"
        f"{'s' if len(backport.listed) != 1 else ''} listed for a person",
        f"- Controller and reconciler changes left out as noise: {len(report.noise)} (see `rebuild capture -o json`)",
        f"- Drift digest: `{report.digest()}`",
        "",
    ]
    return "\n".join(out)


def commit_message(p: PlannerState, title: str) -> str:
    lines = [title, ""]
    for row in p.rows:
        f = row.finding
        if f.secret_value or row.where is None:
            continue
        g, lv = f.values()
        lines.append(f"- {f.ref} {f.rendered}: {g} -> {lv} ({_by(f)}; {p.location(row.where)})")
    for row in p.rows:
        f = row.finding
        if f.secret_value and row.where is not None:
            lines.append(f"- {f.ref} {f.rendered}: new value encrypted with sops ({_by(f)}; {p.location(row.where)})")
    for f, path in p.created:
        lines.append(f"- {f.ref}: new file {path} (created {_by(f)})")
    for f, where in p.deleted:
        lines.append(f"- {f.ref}: removed from {where} (deleted live)")
    return "\n".join(lines) + f"\n\nrebuild-capture-digest: {p.report.digest()}\n"
