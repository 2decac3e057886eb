"""A Helm chart repository over HTTP on 127.0.0.1, built from chart folders in git.

Why it exists: a Flux ``HelmRepository`` fetches ``<url>/index.yaml`` and the packaged charts it
lists over http(s); a DR drill must need nothing from the internet, so rebuild serves the
charts that git holds as source folders (``charts/<name>/Chart.yaml``, ``templates/``, ...)
itself. What ``helm package`` and ``helm repo index`` would do is done here in Python:

- :func:`package_chart`: a chart folder becomes ``<name>-<version>.tgz``, a gzip'd tar whose
  top folder is the chart's name (from ``Chart.yaml``), as ``helm package`` writes it; files
  only, ``.helmignore`` honoured, ``.git`` skipped. Deterministic: entries sorted
  (``Chart.yaml`` first), one fixed mtime, uid/gid 0, mode 0644, no name or time in the gzip
  header; the same folder always gives the same bytes, so the same digest.
- :func:`build_index`: Helm's repository index (``apiVersion: v1``, ``entries`` per chart name
  newest version first, each with the ``Chart.yaml`` metadata plus ``urls``, ``created`` and
  ``digest``, the sha256 of the package; ``generated``). URLs are relative (``demo-0.1.0.tgz``)
  as ``helm repo index`` writes them without ``--url``: Helm and Flux resolve them against the
  repository URL, so the index stays valid when the server comes back on another port.
- :func:`build_repo`: every chart folder under a folder (or the folder itself) into an output
  folder: the packages and ``index.yaml``. Stale packages are removed.

Two ways to serve the output folder (the gitserver pattern):

- in-process: ``with HelmRepoServer(out_dir) as srv: srv.url`` (a thread; tests);
- detached: :func:`ensure_repo` builds ``<state>/helmrepo/`` from a charts folder and keeps one
  ``python -m rebuild.adapters.helmrepo`` process per state folder (recorded in
  ``<state>/helmrepo.json``, restarted on its previous port when that is free) so the
  repository outlives the CLI call that started it; :func:`stop_repo` stops it.

The server answers ``GET``/``HEAD`` of ``/index.yaml``, of the ``.tgz`` files of its folder and of
``/_health``, and nothing else (no listing, no path outside the folder). It reads from disk per
request, so a rebuilt index is served at once.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import gzip
import hashlib
import io
import logging
import re
import signal
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from rebuild.adapters import process
from rebuild.adapters.fs import atomic_write
from rebuild.adapters.process import ProcRecord
from rebuild.core.errors import ConfigError, RebuildError

log = logging.getLogger("rebuild.helmrepo")

HOST = "127.0.0.1"
INDEX = "index.yaml"
HEALTH_PATH = "/_health"
# 1980-01-01T00:00:00Z: the mtime of every packaged file and the default `created`, so a package
# depends only on the chart's content (a caller may pass the source commit's time instead).
FIXED_TIME = 315532800

# Helm's Metadata fields (Chart.yaml) that an index entry carries, in Helm's order.
METADATA_FIELDS = (
    "name",
    "home",
    "sources",
    "version",
    "description",
    "keywords",
    "maintainers",
    "icon",
    "apiVersion",
    "condition",
    "tags",
    "appVersion",
    "deprecated",
    "annotations",
    "kubeVersion",
    "dependencies",
    "type",
)
# Helm: chart names are lower case letters, digits and dashes; versions are SemVer 2.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


class HelmRepoError(RebuildError):
    """The chart repository could not be served (port, process)."""


# ---------------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class Package:
    """One packaged chart: its ``Chart.yaml`` metadata, file name and sha256."""

    metadata: dict[str, Any]
    filename: str
    digest: str
    source: Path

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def version(self) -> str:
        return str(self.metadata["version"])


def read_chart(folder: Path) -> dict[str, Any]:
    """A chart folder's ``Chart.yaml``, checked as ``helm package`` checks it (apiVersion, name, version)."""
    path = Path(folder) / "Chart.yaml"
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", fix="a chart folder holds a Chart.yaml") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", fix="fix the Chart.yaml") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: not a mapping", fix="Chart.yaml holds apiVersion, name and version")
    if str(meta.get("apiVersion", "")) not in ("v1", "v2"):
        raise ConfigError(f"{path}: apiVersion must be v2 (or v1), not {meta.get('apiVersion')!r}", fix="set apiVersion: v2")
    name = meta.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{path}: chart name {name!r} is not valid", fix="use lower case letters, digits and dashes (Helm's rule)"
        )
    version = meta.get("version")
    if not isinstance(version, str) or not _SEMVER.match(version):
        raise ConfigError(
            f"{path}: version {version!r} of chart {name} is not SemVer 2",
            fix='quote it and give three numbers, e.g. version: "0.1.0"',
        )
    if "appVersion" in meta and meta["appVersion"] is not None:
        meta["appVersion"] = str(meta["appVersion"])  # 1.27 in YAML is a float; Helm keeps a string
    return meta


def _ignore_patterns(folder: Path) -> list[str]:
    try:
        lines = (folder / ".helmignore").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _ignored(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    """``.helmignore`` rules as Helm reads them: shell globs on the path or its base name; a
    trailing ``/`` matches folders only; ``!`` negation is not supported (Helm does not either)."""
    base = rel.rsplit("/", 1)[-1]
    for pat in patterns:
        dir_only = pat.endswith("/")
        p = pat.rstrip("/").lstrip("/")
        if dir_only and not is_dir:
            continue
        if fnmatch.fnmatchcase(rel, p) or ("/" not in p and fnmatch.fnmatchcase(base, p)):
            return True
    return False


def chart_files(folder: Path) -> list[tuple[str, Path]]:
    """The files a package holds: (path inside the chart, file), ``Chart.yaml`` first, then sorted."""
    root = Path(folder).resolve()
    patterns = _ignore_patterns(root)
    out: list[tuple[str, Path]] = []

    def walk(d: Path) -> None:
        for entry in sorted(d.iterdir(), key=lambda p: p.name):
            rel = entry.relative_to(root).as_posix()
            if entry.name == ".git":
                continue
            real = entry.resolve()
            if not real.is_relative_to(root):
                raise ConfigError(f"{entry}: a link out of the chart folder {root}", fix="charts may only hold their own files")
            if real.is_dir():
                if not _ignored(rel, True, patterns):
                    walk(entry)
            elif real.is_file() and not _ignored(rel, False, patterns):
                out.append((rel, real))

    walk(root)
    out.sort(key=lambda item: (item[0] != "Chart.yaml", item[0]))
    return out


def package_bytes(folder: Path, *, mtime: int = FIXED_TIME) -> tuple[dict[str, Any], bytes]:
    """(metadata, the ``.tgz``) of a chart folder, as ``helm package`` lays it out, byte-for-byte
    the same for the same content."""
    meta = read_chart(folder)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in chart_files(folder):
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{meta['name']}/{rel}")
            info.size = len(data)
            info.mtime = mtime
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    # filename="" and a fixed mtime: nothing about this run in the gzip header
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=mtime, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return meta, out.getvalue()


def package_chart(folder: Path, out_dir: Path, *, mtime: int = FIXED_TIME) -> Package:
    """Write ``<name>-<version>.tgz`` of a chart folder into ``out_dir``."""
    meta, data = package_bytes(folder, mtime=mtime)
    filename = f"{meta['name']}-{meta['version']}.tgz"
    target = Path(out_dir) / filename
    if not (target.is_file() and target.read_bytes() == data):
        atomic_write(target, data, mode=0o644)
    return Package(meta, filename, hashlib.sha256(data).hexdigest(), Path(folder))


def find_charts(root: Path) -> list[Path]:
    """The chart folders of a folder: itself if it holds a Chart.yaml, else every folder below it
    that does (a chart's own ``charts/`` subcharts are part of it, not separate charts)."""
    root = Path(root)
    if (root / "Chart.yaml").is_file():
        return [root]
    found: list[Path] = []
    for chart_yaml in sorted(root.rglob("Chart.yaml")):
        folder = chart_yaml.parent
        if ".git" in folder.parts or any(folder.is_relative_to(f) for f in found):
            continue
        found.append(folder)
    return found


def _semver_key(version: str) -> tuple[Any, ...]:
    m = _SEMVER.match(version)
    if not m:
        return (0, 0, 0, 0, ())
    major, minor, patch, pre = int(m[1]), int(m[2]), int(m[3]), m[4]
    # a release sorts after its pre-releases; numeric identifiers before alphanumeric ones
    pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if pre else ()
    return (major, minor, patch, 0 if pre else 1, pre_key)


def _timestamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_index(packages: list[Package], *, created: int = FIXED_TIME, base_url: str = "") -> dict[str, Any]:
    """Helm's repository index for these packages (``apiVersion: v1``).

    Each entry: the chart's metadata fields, ``urls`` (relative to the repository unless
    ``base_url`` is given), ``created`` and ``digest`` (sha256 of the .tgz); entries of one chart
    newest version first, as Helm sorts them. Two packages of the same chart and version are an
    error (Helm would keep one silently)."""
    entries: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, str], Path] = {}
    for pkg in packages:
        key = (pkg.name, pkg.version)
        if key in seen:
            raise ConfigError(
                f"chart {pkg.name} version {pkg.version} is in both {seen[key]} and {pkg.source}",
                fix="give one of them another version",
            )
        seen[key] = pkg.source
        entry = {k: pkg.metadata[k] for k in METADATA_FIELDS if pkg.metadata.get(k) not in (None, "", [], {})}
        entry["urls"] = [f"{base_url.rstrip('/')}/{pkg.filename}" if base_url else pkg.filename]
        entry["created"] = _timestamp(created)
        entry["digest"] = pkg.digest
        entries.setdefault(pkg.name, []).append(entry)
    for versions in entries.values():
        versions.sort(key=lambda e: _semver_key(str(e["version"])), reverse=True)
    return {"apiVersion": "v1", "entries": dict(sorted(entries.items())), "generated": _timestamp(created)}


def build_repo(charts_dir: Path, out_dir: Path, *, created: int = FIXED_TIME, base_url: str = "") -> list[Package]:
    """Package every chart under ``charts_dir`` into ``out_dir`` and write its ``index.yaml``.

    ``created``: the packages' mtime and the index's timestamps (the source commit's time keeps
    them meaningful and still deterministic). Packages of charts no longer in the folder are removed."""
    charts = find_charts(charts_dir)
    if not charts:
        raise ConfigError(f"no chart (Chart.yaml) under {charts_dir}", fix="point at a folder of chart folders")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    packages = [package_chart(c, out, mtime=created) for c in charts]
    index = build_index(packages, created=created, base_url=base_url)
    atomic_write(out / INDEX, yaml.safe_dump(index, sort_keys=False), mode=0o644)
    keep = {p.filename for p in packages}
    for stale in out.glob("*.tgz"):
        if stale.name not in keep:
            stale.unlink()
    return packages


# ---------------------------------------------------------------------------------- server


def _served_name(path: str) -> str | None:
    """The file a request path names, or None: only ``index.yaml`` and ``*.tgz`` at the top."""
    name = path.partition("?")[0].partition("#")[0].lstrip("/")
    if name == INDEX or (name.endswith(".tgz") and re.fullmatch(r"[A-Za-z0-9._+-]+", name) and ".." not in name):
        return name
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, root: Path) -> None:
        self.root = root
        super().__init__((HOST, port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "rebuild-helmrepo"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        if self.path == HEALTH_PATH:
            self._send(200, b"ok\n", "text/plain; charset=utf-8", body)
            return
        name = _served_name(self.path)
        data: bytes | None = None
        if name is not None:
            with contextlib.suppress(OSError):
                data = (self.server.root / name).read_bytes()
        if data is None:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", body)
            return
        ctype = "application/x-yaml" if name == INDEX else "application/gzip"
        self._send(200, data, ctype, body)

    def _send(self, code: int, data: bytes, ctype: str, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


class HelmRepoServer:
    """The chart repository in ``root`` (``index.yaml`` + packages) over HTTP on 127.0.0.1 (a thread)."""

    def __init__(self, root: Path, *, port: int = 0) -> None:
        self.root = Path(root).resolve()
        self._port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise HelmRepoError("the chart repository is not started", fix="call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """What a HelmRepository's ``spec.url`` names."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> HelmRepoServer:
        if not self.root.is_dir():
            raise HelmRepoError(f"chart repository folder {self.root} does not exist", fix="build it with build_repo()")
        try:
            self._httpd = _Server(self._port, self.root)
        except OSError as exc:
            raise HelmRepoError(f"cannot listen on {HOST}:{self._port}: {exc.strerror}", fix="choose a free port") from exc
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"helmrepo:{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Run in the calling thread until SIGTERM/SIGINT (the detached mode)."""
        if self._httpd is None:
            self.start()
        assert self._thread is not None
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5) and self._thread.is_alive():
            pass
        self.stop()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HelmRepoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------- detached


@dataclass(frozen=True)
class RepoProcess:
    """A detached chart repository server: its process record, port and folder."""

    record: ProcRecord
    port: int
    root: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def alive(self) -> bool:
        return process.alive(self.record)

    def healthy(self) -> bool:
        return self.alive() and _answers(self.url)

    def stop(self, timeout: float = 10.0) -> None:
        process.stop(self.record, timeout=timeout)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + HEALTH_PATH, timeout=2) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def spawn(root: Path, *, log_path: Path, port: int | None = None, timeout: float = 15.0) -> RepoProcess:
    """Start ``python -m rebuild.adapters.helmrepo`` detached and wait until it answers."""
    port = port or process.free_port()
    argv = [sys.executable, "-m", "rebuild.adapters.helmrepo", "--root", str(Path(root).resolve()), "--port", str(port)]
    rec = process.spawn("helmrepo", argv, log=log_path)
    srv = RepoProcess(rec, port, Path(root).resolve())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive(rec):
            raise HelmRepoError(f"the chart repository exited during start:\n{process.tail(rec.log)}", fix=f"read {rec.log}")
        if _answers(srv.url):
            return srv
        time.sleep(0.1)
    process.stop(rec)
    raise HelmRepoError(f"the chart repository on {srv.url} did not answer in {timeout:.0f}s", fix=f"read {rec.log}")


def _record_path(state: Path) -> Path:
    return Path(state) / "helmrepo.json"


def ensure_repo(state: Path, charts_dir: Path, *, created: int = FIXED_TIME, port: int | None = None) -> RepoProcess:
    """Build ``<state>/helmrepo/`` from ``charts_dir`` and serve it with one detached process per
    state folder: a running one is reused (it reads the rebuilt files), a stopped one is restarted
    on its previous port when that is free, so a HelmRepository's URL keeps working."""
    state = Path(state).resolve()
    root = state / "helmrepo"
    build_repo(charts_dir, root, created=created)
    old = process.load_record(_record_path(state))
    if old.get("process"):
        srv = RepoProcess(ProcRecord.from_dict(old["process"]), int(old["port"]), Path(old["root"]))
        if srv.root == root and srv.healthy():
            return srv
        srv.stop()
    prev = old.get("port")
    if port is None and isinstance(prev, int) and process.port_free(prev):
        port = prev
    srv = spawn(root, log_path=state / "helmrepo.log", port=port)
    process.save_record(_record_path(state), {"port": srv.port, "root": str(root), "process": srv.record.to_dict()})
    return srv


def repo_running(state: Path) -> RepoProcess | None:
    """The detached chart repository of a state folder, if it is up and answering."""
    data = process.load_record(_record_path(Path(state).resolve()))
    try:
        srv = RepoProcess(ProcRecord.from_dict(data["process"]), int(data["port"]), Path(data["root"]))
    except (KeyError, TypeError, ValueError):
        return None
    return srv if srv.healthy() else None


def stop_repo(state: Path) -> bool:
    """Stop the detached chart repository recorded in a state folder; True if one was running."""
    record = _record_path(Path(state))
    data = process.load_record(record)
    raw = data.get("process")
    if not raw:
        return False
    rec = ProcRecord.from_dict(raw)
    was_alive = process.alive(rec)
    process.stop(rec)
    data["process"] = None
    process.save_record(record, data)
    return was_alive


def running_repos(parent: Path) -> dict[str, RepoProcess]:
    """The detached chart repositories answering under ``parent`` (one state folder per entry), by folder name."""
    found = {d.name: repo_running(d) for d in sorted(Path(parent).glob("*")) if d.is_dir()}
    return {name: srv for name, srv in found.items() if srv is not None}


def stop_repos(parent: Path, *, keep: frozenset[str] = frozenset()) -> list[str]:
    """Stop every chart repository recorded under ``parent`` but those in ``keep``; the names of
    those that were running."""
    return [d.name for d in sorted(Path(parent).glob("*")) if d.is_dir() and d.name not in keep and stop_repo(d)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rebuild.adapters.helmrepo",
        description=f"Serve a Helm chart repository folder (index.yaml and .tgz packages) over HTTP on {HOST}.",
    )
    parser.add_argument("--root", required=True, type=Path, help="folder holding index.yaml and the packages")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        srv = HelmRepoServer(args.root, port=args.port).start()
    except HelmRepoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("serving %s on %s", srv.root, srv.url)
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
