"""rebuild.yaml's ``stacks:`` and ``backend:``: which Pulumi programs a rebuild runs, in what order.

Why its own module: the user's infrastructure (storage classes, quotas, DNS, buckets) lives as
Pulumi projects in their own git repos, and a rebuild must run them at the manifests' revision,
in dependency order, with outputs flowing between them. Every mistake here (a path out of the
repo, a `needs` cycle, a secret written in the file) is reported with its line before anything
runs, like the rest of rebuild.yaml. The built-in ``cluster`` and ``platform`` stay entries of
the same list, so one DAG orders them all.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

BUILTIN = ("cluster", "platform")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
_STACK = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_KEY = re.compile(r"^([A-Za-z][\w-]*:)?[A-Za-z_][\w.-]*$")
_REF = re.compile(r"^([a-z0-9][-a-z0-9]*)\.([A-Za-z_][\w]*)$")


@dataclass(frozen=True)
class SecretSource:
    """A stack secret: read from an environment variable or a file at run time, never from rebuild.yaml."""

    env: str = ""
    file: str = ""

    def describe(self) -> str:
        return f"${self.env}" if self.env else f"file {self.file}"


@dataclass(frozen=True)
class StackSpec:
    """One entry of ``stacks:``: a built-in program or a Pulumi project folder in one of the sources."""

    name: str
    line: int = 0
    source: str = ""  # sources[].name; "" for the built-ins
    path: str = ""  # the project folder, relative to the repository root
    stack: str = ""  # the Pulumi stack name (filled with the cluster name when not given)
    config: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, SecretSource] = field(default_factory=dict)
    config_from: Mapping[str, str] = field(default_factory=dict)  # config key -> "<stack>.<output>"
    needs: tuple[str, ...] = ()
    drill_config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        return not self.source

    @property
    def phase(self) -> str:
        """The phase of `up` that runs it: the built-ins keep their names (runbooks use them)."""
        return self.name if self.builtin else f"stack:{self.name}"

    def depends_on(self) -> tuple[str, ...]:
        """``needs`` plus the stacks ``config_from`` reads (reading an output implies waiting for it)."""
        implied = [ref.split(".", 1)[0] for ref in self.config_from.values()]
        if self.name == "platform":
            implied.append("cluster")  # the platform's kubeconfig is the cluster stack's output
        return tuple(dict.fromkeys([*self.needs, *implied]))


@dataclass(frozen=True)
class BackendSpec:
    """Where every stack of this rebuild keeps its state ("" url: the file backend in the state dir)."""

    url: str = ""
    secrets_provider: str = "passphrase"
    passphrase_file: str = ""
    passphrase_env: str = ""
    line: int = 0


class Checker(Protocol):
    """What this module needs from config's checker (file:line problems)."""

    def line(self, p: tuple[str | int, ...]) -> int: ...
    def problem(self, p: tuple[str | int, ...], message: str, fix: str) -> None: ...
    def mapping(self, value: Any, p: tuple[str | int, ...], allowed: dict[str, str]) -> dict[str, Any]: ...
    def string(self, m: dict[str, Any], key: str, p: tuple[str | int, ...], default: str = "", required: bool = False) -> str: ...
    def strings(self, m: dict[str, Any], key: str, p: tuple[str | int, ...]) -> tuple[str, ...]: ...


_ENTRY_KEYS = {k: "" for k in ("name", "source", "path", "stack", "config", "secrets", "config_from", "needs", "drill_config")}


def parse_stacks(c: Checker, raw: Any, sources: tuple[str, ...], cluster_name: str) -> tuple[StackSpec, ...]:
    """The ``stacks:`` list, validated; without one, the built-ins in their usual order."""
    if raw is None:
        return tuple(StackSpec(n) for n in BUILTIN)
    if not isinstance(raw, list) or not raw:
        c.problem(("stacks",), "must be a non-empty list", "e.g. `stacks: [cluster, platform]`")
        return tuple(StackSpec(n) for n in BUILTIN)
    out: list[StackSpec] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        p: tuple[str | int, ...] = ("stacks", i)
        spec = _builtin(c, item, p) if isinstance(item, str) else _user(c, item, p, sources, cluster_name)
        if spec is None:
            continue
        if spec.name in seen:
            c.problem(
                (*p, "name") if not spec.builtin else p,
                f"stack {spec.name!r} is listed twice (also at line {seen[spec.name]})",
                "give each stack its own name",
            )
            continue
        seen[spec.name] = spec.line
        out.append(spec)
    if "cluster" not in seen:
        c.problem(("stacks",), "the built-in `cluster` stack is missing", "add `- cluster` (it creates the cluster)")
    if "platform" not in seen:
        c.problem(("stacks",), "the built-in `platform` stack is missing", "add `- platform` (it bootstraps the reconciler)")
    _check_graph(c, raw, out)
    return tuple(out)


def _builtin(c: Checker, item: str, p: tuple[str | int, ...]) -> StackSpec | None:
    if item not in BUILTIN:
        c.problem(
            p,
            f"{item!r} is not a built-in stack (cluster, platform)",
            "name a built-in, or describe your own project as `- {name: ..., source: ..., path: ...}`",
        )
        return None
    return StackSpec(item, c.line(p))


def _user(c: Checker, item: Any, p: tuple[str | int, ...], sources: tuple[str, ...], cluster_name: str) -> StackSpec | None:
    m = c.mapping(item, p, _ENTRY_KEYS)
    if not m:
        return None
    name = c.string(m, "name", p, required=True)
    if name and not _NAME.match(name):
        c.problem((*p, "name"), f"{name!r} is not a valid stack name", "use lowercase letters, digits and '-'")
    if name in BUILTIN:
        c.problem((*p, "name"), f"{name!r} is the name of a built-in stack", f"write `- {name}`, or pick another name")
    source = c.string(m, "source", p, required=True)
    if source and source not in sources:
        c.problem((*p, "source"), f"source {source!r} is not in sources", f"use one of {list(sources)}")
    path = c.string(m, "path", p, required=True)
    if path and (path.startswith("/") or ".." in Path(path).parts or "\\" in path):
        c.problem((*p, "path"), f"{path!r} must be a folder inside the repository", "e.g. `path: infra/storage`")
    stack = c.string(m, "stack", p, cluster_name)
    if stack and not _STACK.match(stack):
        c.problem((*p, "stack"), f"{stack!r} is not a valid Pulumi stack name", "use letters, digits, '-', '_' and '.'")
    return StackSpec(
        name=name,
        line=c.line(p),
        source=source,
        path=path.rstrip("/"),
        stack=stack,
        config=_config(c, m, "config", p),
        secrets=_secrets(c, m, p),
        config_from=_config_from(c, m, p),
        needs=c.strings(m, "needs", p),
        drill_config=_config(c, m, "drill_config", p),
    )


def _config(c: Checker, m: dict[str, Any], key: str, p: tuple[str | int, ...]) -> dict[str, Any]:
    cfg = m.get(key)
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        c.problem((*p, key), "must be a mapping of config keys to values", f"e.g. `{key}: {{replicas: 2}}`")
        return {}
    for k in cfg:
        if not isinstance(k, str) or not _KEY.match(k):
            c.problem((*p, key, str(k)), f"{k!r} is not a Pulumi config key", "use `name` or `namespace:name`")
    return dict(cfg)


def _secrets(c: Checker, m: dict[str, Any], p: tuple[str | int, ...]) -> dict[str, SecretSource]:
    raw = m.get("secrets")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        c.problem((*p, "secrets"), "must be a mapping", "e.g. `secrets: {dbPassword_env: DB_PASSWORD}`")
        return {}
    out: dict[str, SecretSource] = {}
    for k, v in raw.items():
        kp = (*p, "secrets", str(k))
        key, _, how = str(k).rpartition("_")
        if how not in ("env", "file") or not key:
            c.problem(
                kp,
                "secret values are not written in rebuild.yaml",
                f"name where the value comes from: `{k}_env: VARIABLE` or `{k}_file: path` (0600)",
            )
            continue
        if not _KEY.match(key):
            c.problem(kp, f"{key!r} is not a Pulumi config key", "use `name_env` or `namespace:name_env`")
        if not isinstance(v, str) or not v:
            c.problem(kp, f"must name {'a variable' if how == 'env' else 'a file'}", f"e.g. `{k}: ...`")
            continue
        if key in out:
            c.problem(kp, f"secret {key!r} is given twice", f"keep one of {key}_env and {key}_file")
        out[key] = SecretSource(env=v) if how == "env" else SecretSource(file=v)
    return out


def _config_from(c: Checker, m: dict[str, Any], p: tuple[str | int, ...]) -> dict[str, str]:
    raw = m.get("config_from")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        c.problem(
            (*p, "config_from"),
            "must map config keys to <stack>.<output>",
            "e.g. `config_from: {kubernetes:kubeconfig: cluster.kubeconfig}`",
        )
        return {}
    out: dict[str, str] = {}
    for k, v in raw.items():
        kp = (*p, "config_from", str(k))
        if not isinstance(k, str) or not _KEY.match(k):
            c.problem(kp, f"{k!r} is not a Pulumi config key", "use `name` or `namespace:name`")
        elif not isinstance(v, str) or not _REF.match(v):
            c.problem(kp, f"{v!r} is not <stack>.<output>", "e.g. `cluster.kubeconfig`")
        else:
            out[k] = v
    return out


def _check_graph(c: Checker, raw: list[Any], specs: list[StackSpec]) -> None:
    """Unknown names in needs/config_from, and cycles, each naming the lines involved."""
    names = {s.name: s for s in specs}
    index = {
        (item if isinstance(item, str) else str(item.get("name"))): i
        for i, item in enumerate(raw)
        if isinstance(item, (str, dict))
    }
    for s in specs:
        i = index.get(s.name, 0)
        for n, dep in enumerate(s.needs):
            if dep not in names:
                c.problem(
                    ("stacks", i, "needs", n),
                    f"stack {s.name!r} needs {dep!r}, which is not in stacks",
                    f"use one of {sorted(names)}",
                )
            elif dep == s.name:
                c.problem(("stacks", i, "needs", n), f"stack {s.name!r} needs itself", "remove it from needs")
        for key, ref in s.config_from.items():
            if ref.split(".", 1)[0] not in names:
                c.problem(
                    ("stacks", i, "config_from", key),
                    f"{ref!r} reads a stack that is not in stacks",
                    f"use one of {sorted(names)}",
                )
    cycle = find_cycle({s.name: [d for d in s.depends_on() if d in names and d != s.name] for s in specs})
    if cycle:
        lines = " -> ".join(f"{n} (line {names[n].line})" for n in [*cycle, cycle[0]])
        c.problem(("stacks", index.get(cycle[0], 0)), f"the stacks' needs form a cycle: {lines}", "remove one of these needs")


def find_cycle(graph: Mapping[str, list[str]]) -> list[str]:
    """One cycle of the graph (its nodes in order), or [] when it is a DAG."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for d in graph.get(n, []):
            if state.get(d) == 1:
                return stack[stack.index(d) :]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in graph:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def topo_order(specs: tuple[StackSpec, ...]) -> list[StackSpec]:
    """The stacks in an order where each comes after what it depends on (list order among equals)."""
    by = {s.name: s for s in specs}
    done: set[str] = set()
    out: list[StackSpec] = []
    pending = list(specs)
    while pending:
        ready = [s for s in pending if all(d in done or d not in by for d in s.depends_on())]
        if not ready:  # a cycle: rejected at load; never loop forever
            raise ValueError(f"stacks form a cycle: {[s.name for s in pending]}")
        for s in ready:
            out.append(s)
            done.add(s.name)
        pending = [s for s in pending if s.name not in done]
    return out


def parse_backend(c: Checker, raw: Any) -> BackendSpec:
    """``backend:``; absent: the file backend in the state dir."""
    p: tuple[str | int, ...] = ("backend",)
    m = c.mapping(raw, p, {"url": "", "secrets_provider": "", "passphrase_file": "", "passphrase_env": "", "passphrase": ""})
    if raw is None:
        return BackendSpec()
    string = c.string
    if "passphrase" in m:
        c.problem((*p, "passphrase"), "the passphrase is not written in rebuild.yaml", "use passphrase_file or passphrase_env")
    url = string(m, "url", p, required=True)
    if url and not re.match(r"^(file|s3|gs|azblob|https?)://", url):
        c.problem(
            (*p, "url"),
            f"{url!r} is not a Pulumi backend URL",
            "e.g. s3://bucket?region=..., file:///abs/path, https://api.pulumi.com",
        )
    if re.match(r"^[a-z0-9+]+://[^/@?]*:[^/@?]*@", url):
        c.problem((*p, "url"), "the URL contains credentials", "give them in the environment (e.g. AWS_ACCESS_KEY_ID)")
    provider = string(m, "secrets_provider", p, "passphrase")
    pfile = string(m, "passphrase_file", p)
    penv = string(m, "passphrase_env", p)
    if pfile and penv:
        c.problem(p, "both passphrase_file and passphrase_env are set", "keep one")
    if provider == "passphrase" and url and not url.startswith("file://") and not (pfile or penv):
        c.problem(
            p,
            "a non-file backend with the passphrase secrets provider needs passphrase_file or passphrase_env "
            "(rebuild's generated passphrase lives in the state dir, which a disaster may take)",
            "add `passphrase_env: PULUMI_CONFIG_PASSPHRASE` or `passphrase_file: /secure/path`",
        )
    return BackendSpec(url, provider, pfile, penv, c.line(p))
