"""rebuild.yaml: the model and its validation.

One file says where the desired state lives (one or more git sources), which cluster to
build into, which reconciler to bootstrap, and how to verify and capture. Validation
collects *every* problem before anything runs and names the file, the line and the fix:
a DR runbook must not fail at minute 20 on a typo at line 3.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rebuild.core.errors import ConfigError
from rebuild.core.stackspec import BackendSpec, StackSpec, parse_backend, parse_stacks
from rebuild.core.yamlload import LoadedDoc, YamlLoadError, load_all

DEFAULT_NAME = "rebuild.yaml"


@dataclass(frozen=True)
class CredentialSource:
    """Where a git credential comes from: environment variables or files, never the config itself."""

    username_env: str = ""
    password_env: str = ""
    username_file: str = ""
    password_file: str = ""

    @property
    def configured(self) -> bool:
        return bool(self.password_env or self.password_file)

    def resolve(self, base: Path) -> tuple[str, str] | None:
        """(username, secret) or None; raises ConfigError naming the variable or file that is missing."""
        if not self.configured:
            return None
        user = (
            _read_secret(self.username_env, self.username_file, base, "username")
            if (self.username_env or self.username_file)
            else "git"
        )
        secret = _read_secret(self.password_env, self.password_file, base, "password")
        return user, secret


def _read_secret(env: str, file: str, base: Path, what: str) -> str:
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"git {what} variable ${env} is not set", fix=f"export {env}=... before running rebuild")
        return value
    path = Path(file) if Path(file).is_absolute() else base / file
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"git {what} file {path} cannot be read ({exc.strerror})", fix="create it (mode 0600)") from exc


@dataclass(frozen=True)
class SourceSpec:
    name: str
    url: str
    branch: str = "main"
    path: str = "."
    revision: str = ""
    credentials: CredentialSource = field(default_factory=CredentialSource)
    # Flux's targetNamespace: every namespaced object of the source lands here. Without it,
    # objects that name no namespace land in `default`, as kubectl would put them.
    namespace: str = ""
    # A folder of chart folders in this source (``charts/<name>/Chart.yaml``) that rebuild packages
    # at the fetched commit and serves over HTTP on 127.0.0.1 as the Flux HelmRepository
    # ``flux-system/<name>-charts`` (a drill then needs no chart repository on the internet).
    charts: str = ""

    @property
    def charts_repository(self) -> str:
        """The name of the HelmRepository rebuild creates for ``charts`` (empty without it)."""
        return f"{self.name}-charts" if self.charts else ""

    def is_local(self) -> bool:
        return not re.match(r"^(https?|ssh|git)://|^[\w.-]+@[\w.-]+:", self.url)


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    provider: str = "local"
    nodes: int = 1
    context: str = ""


@dataclass(frozen=True)
class ReconcilerSpec:
    kind: str = "flux"
    interval: str = "1m"
    # The SOPS age private key, kept outside git (the one secret a rebuild must bring along).
    sops_age_key_file: str = ""


@dataclass(frozen=True)
class IgnoreRule:
    kind: str = "*"
    name: str = "*"
    namespace: str = "*"
    path: str = ""

    def matches(self, kind: str, namespace: str, name: str, path: str) -> bool:
        return (
            fnmatch.fnmatchcase(kind, self.kind)
            and fnmatch.fnmatchcase(name, self.name)
            and fnmatch.fnmatchcase(namespace or "", self.namespace)
            and (not self.path or path == self.path or path.startswith(self.path + ".") or path.startswith(self.path + "["))
        )


@dataclass(frozen=True)
class HealthRuleSpec:
    kind: str
    condition: str = ""
    field: str = ""
    equals: str = ""


@dataclass(frozen=True)
class VerifySpec:
    timeout: float = 300.0
    ignore: tuple[IgnoreRule, ...] = ()
    health: tuple[HealthRuleSpec, ...] = ()


@dataclass(frozen=True)
class ForgeSpec:
    """Where capture opens pull requests. The token comes from an env var or a file."""

    kind: str = ""  # gitea | github | gitlab ("" = no forge: capture can only --dry-run or push)
    url: str = ""  # API base (Gitea/GitLab: the server URL; GitHub: https://api.github.com)
    repo: str = ""  # owner/name (GitLab: group/project path)
    token_env: str = ""
    token_file: str = ""

    def token(self, base: Path) -> str:
        if not (self.token_env or self.token_file):
            raise ConfigError("capture.forge has no token_env or token_file", fix="set capture.forge.token_env")
        return _read_secret(self.token_env, self.token_file, base, "forge token")


@dataclass(frozen=True)
class CaptureSpec:
    forge: ForgeSpec = field(default_factory=ForgeSpec)
    source: str = ""  # which sources[].name receives the pull request (default: the first)
    namespaces: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    new_objects_dir: str = "captured"
    humans: tuple[str, ...] = ()
    controllers: tuple[str, ...] = ()
    reconcilers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    path: Path
    sources: tuple[SourceSpec, ...]
    cluster: ClusterSpec
    reconciler: ReconcilerSpec = field(default_factory=ReconcilerSpec)
    stacks: tuple[StackSpec, ...] = (StackSpec("cluster"), StackSpec("platform"))
    backend: BackendSpec = field(default_factory=BackendSpec)
    verify: VerifySpec = field(default_factory=VerifySpec)
    capture: CaptureSpec = field(default_factory=CaptureSpec)

    @property
    def base_dir(self) -> Path:
        return self.path.parent


# --------------------------------------------------------------------------- parsing


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?$")


def parse_duration(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m and any(m.groups()):
            h, mi, s = (int(g or 0) for g in m.groups())
            return float(h * 3600 + mi * 60 + s)
    return None


class _Checker:
    """Walks the loaded document and collects problems as 'file:line: message (fix: ...)'."""

    def __init__(self, path: Path, doc: LoadedDoc) -> None:
        self.path = path
        self.doc = doc
        self.problems: list[str] = []

    def line(self, p: tuple[str | int, ...]) -> int:
        for n in range(len(p), 0, -1):
            if p[:n] in self.doc.lines:
                return self.doc.lines[p[:n]]
        return self.doc.line

    def problem(self, p: tuple[str | int, ...], message: str, fix: str) -> None:
        where = ".".join(str(x) for x in p) or "(top level)"
        self.problems.append(f"{self.path}:{self.line(p)}: {where}: {message} (fix: {fix})")

    def mapping(self, value: Any, p: tuple[str | int, ...], allowed: dict[str, str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(p, f"must be a mapping, not {_typename(value)}", "write it as `key: value` lines")
            return {}
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(key, list(allowed), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
                self.problem((*p, key), f"unknown key {key!r}", hint)
        return value

    def string(self, m: dict[str, Any], key: str, p: tuple[str | int, ...], default: str = "", required: bool = False) -> str:
        if key not in m or m[key] is None:
            if required:
                self.problem((*p, key) if p else (key,), f"{key} is required", f"add `{key}: ...`")
            return default
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            self.problem((*p, key), f"must be a string, not {_typename(v)}", "quote the value")
            return default
        return str(v)

    def integer(self, m: dict[str, Any], key: str, p: tuple[str | int, ...], default: int, lo: int, hi: int) -> int:
        if key not in m:
            return default
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.problem((*p, key), f"must be an integer between {lo} and {hi}, not {v!r}", f"e.g. `{key}: {default}`")
            return default
        return v

    def strings(self, m: dict[str, Any], key: str, p: tuple[str | int, ...]) -> tuple[str, ...]:
        if key not in m or m[key] is None:
            return ()
        v = m[key]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            self.problem((*p, key), f"must be a list of strings, not {_typename(v)}", f"e.g. `{key}: [a, b]`")
            return ()
        return tuple(v)


def _typename(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(v), "null" if v is None else type(v).__name__
    )


def load(path: Path | str | None = None) -> Config:
    """Load and validate rebuild.yaml; raises ConfigError listing every problem with file:line."""
    p = Path(path) if path else Path.cwd() / DEFAULT_NAME
    p = p.resolve()
    try:
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{p} does not exist", fix="pass --config PATH or run where rebuild.yaml is") from exc
    except OSError as exc:
        raise ConfigError(f"{p} cannot be read ({exc.strerror})", fix="check the file's permissions") from exc
    return parse(raw, p)


def parse(raw: bytes | str, path: Path) -> Config:
    try:
        docs = load_all(raw)
    except YamlLoadError as exc:
        lines = [f"{path}:{pr.line}: {pr.message}" for pr in exc.problems]
        raise ConfigError("\n".join(lines), fix="fix the YAML syntax at the line shown") from exc
    if len(docs) != 1:
        raise ConfigError(f"{path}: expected one YAML document, found {len(docs)}", fix="keep only the rebuild configuration")
    c = _Checker(path, docs[0])
    top = c.mapping(
        docs[0].data,
        (),
        {
            "sources": "",
            "cluster": "",
            "reconciler": "",
            "stacks": "",
            "backend": "",
            "verify": "",
            "capture": "",
        },
    )
    sources = _sources(c, top)
    cl = c.mapping(top.get("cluster"), ("cluster",), {"provider": "", "name": "", "nodes": "", "context": ""})
    if "cluster" not in top:
        c.problem((), "cluster is required", "add `cluster: {provider: local, name: demo}`")
    provider = c.string(cl, "provider", ("cluster",), "local")
    if provider not in ("local", "kind", "kubeconfig"):
        c.problem(("cluster", "provider"), f"unknown provider {provider!r}", "use local, kind or kubeconfig")
    name = c.string(cl, "name", ("cluster",), "", required="cluster" in top)
    if name and not re.match(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$", name):
        c.problem(("cluster", "name"), f"{name!r} is not a valid cluster name", "use lowercase letters, digits and '-'")
    cluster = ClusterSpec(
        name=name,
        provider=provider,
        nodes=c.integer(cl, "nodes", ("cluster",), 1, 1, 1000),
        context=c.string(cl, "context", ("cluster",)),
    )
    rc = c.mapping(top.get("reconciler"), ("reconciler",), {"kind": "", "interval": "", "sops_age_key_file": ""})
    kind = c.string(rc, "kind", ("reconciler",), "flux")
    if kind not in ("flux", "argocd"):
        c.problem(("reconciler", "kind"), f"unknown reconciler {kind!r}", "use flux or argocd")
    interval = c.string(rc, "interval", ("reconciler",), "1m")
    if parse_duration(interval) is None:
        c.problem(("reconciler", "interval"), f"{interval!r} is not a duration", "use e.g. 30s, 1m, 1h")
    stacks = parse_stacks(c, top.get("stacks"), tuple(s.name for s in sources), name)
    config = Config(
        path=path,
        sources=sources,
        cluster=cluster,
        reconciler=ReconcilerSpec(kind, interval, c.string(rc, "sops_age_key_file", ("reconciler",))),
        stacks=stacks,
        backend=parse_backend(c, top.get("backend")),
        verify=_verify(c, top),
        capture=_capture(c, top),
    )
    if c.problems:
        raise ConfigError("\n".join(c.problems), fix=f"correct {path.name} at the lines shown")
    return config


def _sources(c: _Checker, top: dict[str, Any]) -> tuple[SourceSpec, ...]:
    raw = top.get("sources")
    if raw is None:
        c.problem((), "sources is required", "add `sources: [{name: apps, url: https://..., path: clusters/prod}]`")
        return ()
    if not isinstance(raw, list) or not raw:
        c.problem(("sources",), "must be a non-empty list", "add `- name: ...` items")
        return ()
    out: list[SourceSpec] = []
    names: set[str] = set()
    allowed = {"name": "", "url": "", "branch": "", "path": "", "revision": "", "credentials": "", "namespace": "", "charts": ""}
    for i, item in enumerate(raw):
        p: tuple[str | int, ...] = ("sources", i)
        m = c.mapping(item, p, allowed)
        name = c.string(m, "name", p, required=True)
        if name and not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name):
            c.problem((*p, "name"), f"{name!r} is not a valid source name", "use lowercase letters, digits and '-'")
        if name in names:
            c.problem((*p, "name"), f"source name {name!r} is used twice", "give each source its own name")
        names.add(name)
        url = c.string(m, "url", p, required=True)
        if re.match(r"^[a-z+]+://[^/@]*:[^/@]*@", url):
            c.problem((*p, "url"), "the URL contains credentials", "remove them; use credentials.password_env instead")
        spath = c.string(m, "path", p, ".")
        if spath.startswith("/") or ".." in Path(spath).parts:
            c.problem((*p, "path"), f"{spath!r} must be a relative path inside the repository", "e.g. clusters/prod")
        branch = c.string(m, "branch", p, "main")
        if not re.match(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/-]+(?<![./])$", branch):
            c.problem((*p, "branch"), f"{branch!r} is not a valid branch name", "use letters, digits, '.', '_', '-' and '/'")
        revision = c.string(m, "revision", p)
        if revision and not re.match(r"^[0-9a-f]{7,40}$", revision):
            c.problem((*p, "revision"), f"{revision!r} is not a commit SHA", "use a 7-40 character hex SHA")
        cm = c.mapping(
            m.get("credentials"),
            (*p, "credentials"),
            {"username_env": "", "password_env": "", "username_file": "", "password_file": ""},
        )
        for forbidden in ("password", "token", "username"):
            if forbidden in cm:
                c.problem((*p, "credentials", forbidden), "secrets are not written in rebuild.yaml", f"use {forbidden}_env")
        creds = CredentialSource(**{k: c.string(cm, k, (*p, "credentials")) for k in CredentialSource.__dataclass_fields__})
        namespace = c.string(m, "namespace", p)
        if namespace and not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", namespace):
            c.problem((*p, "namespace"), f"{namespace!r} is not a valid namespace name", "use lowercase letters, digits and '-'")
        charts = c.string(m, "charts", p)
        if charts and (charts.startswith("/") or ".." in Path(charts).parts):
            c.problem((*p, "charts"), f"{charts!r} must be a relative path inside the repository", "e.g. charts")
        out.append(SourceSpec(name, url, branch, spath, revision, creds, namespace, charts))
    return tuple(out)


def _verify(c: _Checker, top: dict[str, Any]) -> VerifySpec:
    v = c.mapping(top.get("verify"), ("verify",), {"timeout": "", "ignore": "", "health": ""})
    timeout = 300.0
    if "timeout" in v:
        t = parse_duration(v["timeout"])
        if t is None:
            c.problem(("verify", "timeout"), f"{v['timeout']!r} is not a duration", "use e.g. 5m or 300s")
        else:
            timeout = t
    ignores: list[IgnoreRule] = []
    for i, item in enumerate(v.get("ignore") or []):
        p: tuple[str | int, ...] = ("verify", "ignore", i)
        m = c.mapping(item, p, {"kind": "", "name": "", "namespace": "", "path": ""})
        ignores.append(
            IgnoreRule(
                c.string(m, "kind", p, "*"), c.string(m, "name", p, "*"), c.string(m, "namespace", p, "*"), c.string(m, "path", p)
            )
        )
    rules: list[HealthRuleSpec] = []
    for i, item in enumerate(v.get("health") or []):
        p = ("verify", "health", i)
        m = c.mapping(item, p, {"kind": "", "condition": "", "field": "", "equals": ""})
        rule = HealthRuleSpec(
            c.string(m, "kind", p, required=True),
            c.string(m, "condition", p),
            c.string(m, "field", p),
            c.string(m, "equals", p),
        )
        if not rule.condition and not rule.field:
            c.problem(p, "a health rule needs `condition` or `field`", "e.g. `condition: Ready`")
        rules.append(rule)
    return VerifySpec(timeout, tuple(ignores), tuple(rules))


def _capture(c: _Checker, top: dict[str, Any]) -> CaptureSpec:
    p: tuple[str | int, ...] = ("capture",)
    m = c.mapping(
        top.get("capture"),
        p,
        {
            "namespaces": "",
            "kinds": "",
            "new_objects_dir": "",
            "humans": "",
            "controllers": "",
            "reconcilers": "",
            "forge": "",
            "source": "",
        },
    )
    fp: tuple[str | int, ...] = (*p, "forge")
    fm = c.mapping(m.get("forge"), fp, {"kind": "", "url": "", "repo": "", "token_env": "", "token_file": "", "token": ""})
    if "token" in fm:
        c.problem((*fp, "token"), "tokens are not written in rebuild.yaml", "use token_env or token_file")
    forge = ForgeSpec(
        c.string(fm, "kind", fp),
        c.string(fm, "url", fp),
        c.string(fm, "repo", fp),
        c.string(fm, "token_env", fp),
        c.string(fm, "token_file", fp),
    )
    if forge.kind and forge.kind not in ("gitea", "github", "gitlab"):
        c.problem((*fp, "kind"), f"unknown forge {forge.kind!r}", "use gitea, github or gitlab")
    if forge.kind and (not forge.repo or "/" not in forge.repo):
        c.problem((*fp, "repo"), "repo must be owner/name", "e.g. `repo: platform/gitops`")
    if re.match(r"^[a-z+]+://[^/@]*:[^/@]*@", forge.url):
        c.problem((*fp, "url"), "the URL contains credentials", "remove them; use token_env")
    new_dir = c.string(m, "new_objects_dir", p, "captured")
    if new_dir.startswith("/") or ".." in Path(new_dir).parts:
        c.problem((*p, "new_objects_dir"), f"{new_dir!r} must be a relative path inside the repository", "e.g. apps/captured")
    return CaptureSpec(
        forge=forge,
        source=c.string(m, "source", p),
        namespaces=c.strings(m, "namespaces", p),
        kinds=c.strings(m, "kinds", p),
        new_objects_dir=new_dir,
        humans=c.strings(m, "humans", p),
        controllers=c.strings(m, "controllers", p),
        reconcilers=c.strings(m, "reconcilers", p),
    )
