"""Issue 6, "Secrets": an audit of everything the end-to-end runs leave behind.

Why: rebuild handles three kinds of secrets (git credentials, a forge token, Secret values
in the cluster and in git) and starts many processes (control plane, Flux, its git server,
Pulumi and its plugins, git). A leak is rarely in the code one reads: it is an argv built by
a library, a log line, a report, a PR body. So this test runs the real CLI end to end (``up``
from a real Gitea plus a local folder, a manual change with a hand-made Secret, ``verify``,
``capture`` opening a PR on Gitea, ``drill --live`` with every report and the history) with
random secret values, and then looks everywhere for them:

- argv: every CLI call runs under ``strace -f --seccomp-bpf -e trace=execve,execveat``, so
  every process the tool spawns, detached daemons included (kube-apiserver, etcd, Flux, the
  git server and the ``git http-backend`` it runs per request, pulumi and its plugins, git),
  has its argv recorded. strace stays attached to the daemons until they exit at teardown:
  detached early, their seccomp filter would have no tracer and their later execve calls
  would fail with ENOSYS. ``-s 65536`` so no argument is cut short (checked). A /proc
  poller (every 20 ms) also reads the cmdline of every process that appears, and the
  long-lived daemons' cmdlines are read once more while they run;
- files: every file under the test's folder (state dir: logs, JSON records, Pulumi state
  and stack config, reports, history; the report dir; the CLI's stdout and stderr), as raw
  bytes, for each value and every base64 alignment of it; tarballs are read decompressed.
  Outside it, every file created or modified during the run (ctime or mtime after the start)
  under PULUMI_HOME (and ~/.pulumi, where a pulumi ignoring PULUMI_HOME would write), Go's
  build and module caches, pip's cache and /tmp;
- git: every commit on every branch of every repository (the forge's, after a mirror
  clone, and rebuild's own mirrors and capture clone), through ``git log --all -p``;
- the pull request's title, body and comments through the Gitea API;
- listeners: every LISTEN socket of a process of this run binds 127.0.0.1 or ::1;
- modes: kubeconfigs, private keys, process records and the Pulumi passphrase are 0600.

Files whose purpose is to hold a secret are not searched for it: they are listed in
``EXCLUDED`` with the reason (and get a mode check instead where rebuild writes them).
The counts are printed (run with ``-s``) for docs to quote.

The git source authenticates with the forge admin's password (``GIT_USER``/``GIT_PASSWORD``)
and capture with the API token (``FORGE_TOKEN``), both from the environment as rebuild.yaml
asks, so the two paths are told apart. The example's own Python stack (cluster-classes, issue
12) gets a secret of its own (``secrets: {auditToken_env: STACK_TOKEN}``): `up` and the drill
give it to Pulumi, and every place above is searched for it; its one home is the stack's
config, where the test checks it is stored encrypted. Without a working strace (not on PATH,
or ptrace or seccomp filters denied, as in a container without CAP_SYS_PTRACE) the audit
FAILS before starting anything, naming why: the /proc poller alone can miss a process living
less than 20 ms, so the argv claim would hold only vacuously. scripts/test.sh installs strace
(Debian's package) when it is missing.

What it found: the Automation API handed the git credentials to ``pulumi config set-all
--secret key=value``, in argv (fixed in rebuild/adapters/pulumi/: secrets go through stdin).
"""

from __future__ import annotations

import base64
import fnmatch
import io
import ipaddress
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from rebuild.adapters.gitea import Gitea
from rebuild.clusters.local import LocalCluster
from tests.conftest import REPO, example_config
from tests.kubectl import kubectl, suspend_flux
from tests.procs import stop_servers

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "gitops-repo"
STRACE_FIX = "install it (`apt-get install -y strace`, as scripts/test.sh does) and put it on PATH"
GIT_SECRET_FILE = "apps/base/payments-api/secret.yaml"


# --------------------------------------------------------------------------- the secrets


@dataclass(frozen=True)
class TestSecret:
    """A value that must not leak, and the forms it could leak in."""

    name: str
    value: str
    in_git: bool = False  # declared in git on purpose (the example's demo Secret)
    extra: tuple[str, ...] = ()  # other encodings that carry it (e.g. a Basic auth header)

    __test__ = False  # not a pytest test class

    def needles(self) -> list[bytes]:
        raw = self.value.encode()
        out = {raw, *(e.encode() for e in self.extra), *b64_cores(raw)}
        # strace prints argv strings with C escapes
        out.add(self.value.replace("\\", "\\\\").replace('"', '\\"').encode())
        return sorted(out)


def b64_cores(raw: bytes) -> list[bytes]:
    """The base64 characters that only ``raw`` determines, for each of the 3 alignments it can
    have inside a longer base64 text (standard and URL-safe alphabets): any base64 of a text
    containing ``raw`` contains one of them."""
    out: list[bytes] = []
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + raw)
        core = enc[-(-8 * k // 6) : 8 * (k + len(raw)) // 6]
        out += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return out


def random_value(prefix: str) -> str:
    return f"{prefix}-{os.urandom(12).hex()}"


# Paths (relative to the test's tmp folder, fnmatch patterns) that are not searched for some
# secrets, and why. "*" is every secret, "git" the values git declares on purpose.
EXCLUDED: list[tuple[str, str, str]] = [
    (
        "gitea/*",
        "*",
        "the test's forge, not written by rebuild: app.ini, its admin password and token files "
        "and its SQLite DB exist to hold them; its repositories are searched through git instead",
    ),
    ("seed/*", "git", "the test's own working copy that seeded the forge: git declares this Secret"),
    ("audit/*.strace", "*", "the audit's record of every argv, searched on its own (argv check)"),
    ("audit/git/*", "*", "the audit's mirror clone of the forge repo, searched through git"),
    (
        "state/clusters/*/etcd/*",
        "*",
        "the cluster's datastore: the API server keeps every Secret there "
        "(no encryption at rest in a throwaway cluster); the folder is checked to be 0700",
    ),
    ("state/git/*", "git", "rebuild's mirrors of the sources: git declares this Secret (searched through git)"),
    ("state/checkouts/*", "git", "extracted commits of the sources: git declares this Secret"),
    ("state/capture/*", "git", "capture's working clone of the source: git declares this Secret"),
    ("state/clusters/*/flux/artifacts/*", "git", "source-controller's tarballs of the source revision"),
]


def excluded(rel: str, secret: TestSecret) -> str | None:
    for pattern, which, reason in EXCLUDED:
        if fnmatch.fnmatchcase(rel, pattern) and (which == "*" or (which == "git" and secret.in_git)):
            return reason
    return None


# --------------------------------------------------------------------------- strace


@dataclass
class Run:
    name: str
    rc: int
    stdout: str
    stderr: str


def find_strace() -> tuple[str | None, str]:
    """(path of a strace that can trace here, "") or (None, why not). ptrace and seccomp
    filters may be denied (a container without CAP_SYS_PTRACE, a restrictive seccomp profile)."""
    path = shutil.which("strace")
    if path is None:
        return None, (
            f"no working tracer: strace is not on PATH ({os.environ.get('PATH', '')}); the argv audit needs it "
            f"to see every process rebuild starts (a /proc poller misses short-lived ones). Fix: {STRACE_FIX}"
        )
    probe = [path, "-f", "-q", "--seccomp-bpf", "-e", "trace=execve", "-o", os.devnull, "--", "true"]
    try:
        r = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"no working tracer: {path} could not run ({exc}). Fix: {STRACE_FIX}"
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["no message"])[-1]
        return None, (
            f"no working tracer: {path} cannot trace here ({why}): ptrace or seccomp filters are denied, "
            "or the tests already run under a tracer. Fix: allow ptrace (e.g. `docker run --cap-add SYS_PTRACE "
            "--security-opt seccomp=unconfined`) and run the tests untraced"
        )
    return path, ""


def require_strace() -> str:
    """The audit fails (never skips, never runs untraced) without a working strace."""
    path, why = find_strace()
    if path is None:
        pytest.fail(why, pytrace=False)
    return path


@dataclass
class Tracer:
    """Runs ``python -m rebuild.cli`` under strace; sessions live as long as any daemon they traced."""

    work: Path
    env: dict[str, str]
    strace: str  # the strace binary (find_strace)
    sessions: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def run(self, name: str, args: list[str], timeout: float = 600) -> Run:
        trace, out, err = (self.work / f"{name}.{ext}" for ext in ("strace", "stdout", "stderr"))
        argv = [sys.executable, "-m", "rebuild.cli", *args]
        opts = ["-f", "-q", "--seccomp-bpf", "-e", "trace=execve,execveat", "-e", "signal=none", "-s", "65536"]
        argv = [self.strace, *opts, "-o", str(trace), "--", *argv]
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, env=self.env, cwd=self.work)
        self.sessions.append((name, proc, trace))
        rc = self._wait_cli(proc, trace, timeout)
        return Run(name, rc, out.read_text(errors="replace"), err.read_text(errors="replace"))

    @staticmethod
    def _wait_cli(proc: subprocess.Popen[bytes], trace: Path, timeout: float) -> int:
        """The CLI's exit status, read from strace's record (strace itself keeps running while
        daemons the CLI started are alive)."""
        deadline = time.monotonic() + timeout
        pid: str | None = None
        offset, partial = 0, b""
        while time.monotonic() < deadline:
            if trace.exists():
                with trace.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                offset += len(chunk)
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                for ln in lines:
                    text = ln.decode(errors="replace")
                    if pid is None:
                        pid = text.split()[0]
                    m = re.match(rf"^{pid} +\+\+\+ (?:exited with (\d+)|killed by (\S+))", text)
                    if m:
                        return int(m.group(1)) if m.group(1) else 128 + int(getattr(signal, m.group(2), 0))
            if proc.poll() is not None:
                return proc.returncode
            time.sleep(0.1)
        if pid is not None:
            os.kill(int(pid), signal.SIGTERM)
        raise AssertionError(f"the CLI under strace did not finish in {timeout:.0f}s (trace: {trace})")

    def finish(self, timeout: float = 60) -> None:
        """Wait for every session (its daemons were stopped); detach strace from any survivor."""
        deadline = time.monotonic() + timeout
        for _, proc, _ in self.sessions:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()  # strace detaches from its tracees and exits
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@dataclass
class Execs:
    """What the strace records say: every execve of every process of every CLI call."""

    lines: int = 0  # execve/execveat calls, including PATH-search attempts
    started: int = 0  # successful ones: programs started
    pids: set[int] = field(default_factory=set)
    programs: dict[str, int] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    http_backends: int = 0  # `git http-backend` started by the detached git server, per request


EXEC_RE = re.compile(r'^(\d+) +(?:<\.\.\. execve(?:at)? resumed>|execve(?:at)?\((?:\w+, )?"([^"]*)")')


def read_execs(traces: list[Path], secrets: list[TestSecret]) -> Execs:
    ex = Execs()
    needles = [(s, n.decode()) for s in secrets for n in s.needles()]
    for trace in traces:
        for ln in trace.read_text(errors="replace").splitlines():
            m = EXEC_RE.match(ln)
            if not m:
                continue
            pid = int(m.group(1))
            if m.group(2) is not None:
                ex.lines += 1
                ex.pids.add(pid)
                for s, n in needles:
                    if n in ln:
                        ex.leaks.append(f"{s.name} in the argv of pid {pid} ({trace.name}): {ln[:300]}")
                        break
                if re.search(r'"\.\.\.|, \.\.\.\]', ln):
                    ex.truncated.append(ln[:200])
            if re.search(r"\) = 0$", ln):
                ex.started += 1
                if m.group(2):
                    prog = Path(m.group(2)).name
                    ex.programs[prog] = ex.programs.get(prog, 0) + 1
                    ex.http_backends += '"http-backend"]' in ln
    return ex


# --------------------------------------------------------------------------- /proc poller


def _decode_addr(hexaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    return ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def is_loopback(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def listen_sockets() -> dict[int, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """inode -> (address, port) of every TCP socket in state LISTEN."""
    out: dict[int, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = {}
    for fam in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/net/{fam}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            if len(parts) > 9 and parts[3] == "0A":
                addr, port = parts[1].split(":")
                out[int(parts[9])] = (_decode_addr(addr), int(port, 16))
    return out


def socket_owners(inodes: set[int]) -> dict[int, int]:
    """inode -> pid holding it, by reading /proc/<pid>/fd of every process."""
    want = {f"socket:[{i}]": i for i in inodes}
    owners: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                if target in want:
                    owners.setdefault(want[target], int(entry.name))
    return owners


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass
class Listener:
    pid: int
    cmd: str
    address: str
    port: int
    loopback: bool


class ProcWatch(threading.Thread):
    """Every 20 ms: the cmdline of every new process (read again for its first 200 ms, to see
    it after its exec); every 200 ms: new LISTEN sockets and the process holding each."""

    def __init__(self, secrets: list[TestSecret]) -> None:
        super().__init__(daemon=True, name="proc-watch")
        self.needles = [(s, n) for s in secrets for n in s.needles()]
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.seen: set[int] = set()
        self.cmdlines: dict[int, str] = {}  # every cmdline read, last one per pid
        self.reads = 0
        self.leaks: list[str] = []
        self.leaked: set[int] = set()
        self.listeners: dict[int, Listener] = {}
        self.tries: dict[int, int] = {}  # inode -> attempts to find its process
        self.unmapped: list[str] = []  # listeners no process of this pid namespace holds

    def run(self) -> None:
        young: dict[int, int] = {}
        tick = 0
        while not self.stop_event.wait(0.02):
            pids = {int(n) for n in os.listdir("/proc") if n.isdigit()}
            with self.lock:
                for pid in pids - self.seen:
                    young[pid] = 10
                self.seen = pids
                for pid in list(young):
                    if pid not in pids or young[pid] <= 0:
                        young.pop(pid)
                        continue
                    young[pid] -= 1
                    self.check(pid)
            tick += 1
            if tick % 10 == 0:
                self.sample_listeners()

    def check(self, pid: int) -> None:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        self.reads += 1
        text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if text:
            self.cmdlines[pid] = text
        for s, n in self.needles:
            if n in raw and pid not in self.leaked:
                self.leaked.add(pid)
                self.leaks.append(f"{s.name} in /proc/{pid}/cmdline: {text[:300]}")

    def sample_listeners(self) -> list[Listener]:
        """The LISTEN sockets now (new ones are recorded with their process)."""
        socks = listen_sockets()
        with self.lock:
            new = {i for i in socks if i not in self.listeners and self.tries.get(i, 0) < 3}
        owners = socket_owners(new) if new else {}
        with self.lock:
            for inode in new:
                pid = owners.get(inode)
                if pid is None:  # gone already, or held by a process outside this pid namespace
                    self.tries[inode] = self.tries.get(inode, 0) + 1
                    if self.tries[inode] == 3:
                        self.unmapped.append(f"{socks[inode][0]}:{socks[inode][1]}")
                    continue
                ip, port = socks[inode]
                mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
                address = f"::ffff:{mapped}" if mapped else str(ip)
                self.listeners[inode] = Listener(pid, cmdline(pid), address, port, is_loopback(ip))
            return [self.listeners[i] for i in socks if i in self.listeners]

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)


# --------------------------------------------------------------------------- file and git scans


@dataclass
class Findings:
    files: int = 0
    tar_members: int = 0
    bytes: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # exclusion reason -> files
    leaks: list[str] = field(default_factory=list)


def scan_bytes(data: bytes, where: str, secrets: list[TestSecret], rel: str, out: Findings) -> None:
    for s in secrets:
        reason = excluded(rel, s)
        if reason:
            out.skipped[reason] = out.skipped.get(reason, 0) + 1
            continue
        for n in s.needles():
            if n in data:
                i = data.index(n)
                out.leaks.append(f"{s.name} in {where}: ...{data[max(0, i - 80) : i + 80]!r}...")
                break


def scan_tree(tmp: Path, root: Path, secrets: list[TestSecret], out: Findings) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(tmp).as_posix()
        if all(excluded(rel, s) for s in secrets):
            for s in secrets:
                reason = excluded(rel, s) or ""
                out.skipped[reason] = out.skipped.get(reason, 0) + 1
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue  # a file that went away (a lock, a temp file)
        out.files += 1
        out.bytes += len(data)
        scan_bytes(data, rel, secrets, rel, out)
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            try:
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    for member in tar.getmembers():
                        fh = tar.extractfile(member)
                        if fh is not None:
                            out.tar_members += 1
                            scan_bytes(fh.read(), f"{rel}!{member.name}", secrets, rel, out)
            except (tarfile.TarError, OSError, EOFError) as exc:
                out.leaks.append(f"cannot read the tarball {rel} to search it: {exc}")


@dataclass
class ChangedScan:
    """Files outside the test's folder created or modified during the run, per place searched."""

    roots: dict[str, tuple[Path, int, int]] = field(default_factory=dict)  # label -> (path, files, bytes)
    absent: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> folders not entered


def _go_env(var: str, default: Path) -> Path:
    go = shutil.which("go")
    if go:
        r = subprocess.run([go, "env", var], capture_output=True, text=True, check=False)
        if r.returncode == 0 and r.stdout.strip():
            return Path(r.stdout.strip())
    return default


def _pip_cache() -> Path:
    r = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, check=False)
    if r.returncode == 0 and r.stdout.strip():
        return Path(r.stdout.strip())
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pip"


def outside_places() -> list[tuple[str, Path]]:
    """Where rebuild (or a program it runs) could write outside its state dir: Pulumi's home
    (rebuild sets PULUMI_HOME; ~/.pulumi is where a pulumi ignoring it would write), Go's caches
    (the toolchain builds), pip's cache, and the temporary folder."""
    from rebuild.toolchain.tools import Toolchain

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    places = [
        ("PULUMI_HOME", Toolchain().pulumi_home),
        ("~/.pulumi", Path.home() / ".pulumi"),
        ("GOCACHE", _go_env("GOCACHE", cache / "go-build")),
        ("GOMODCACHE", _go_env("GOMODCACHE", Path.home() / "go" / "pkg" / "mod")),
        ("pip cache", _pip_cache()),
        ("/tmp", Path("/tmp")),
    ]
    tmpdir = Path(tempfile.gettempdir())
    if tmpdir.resolve() != Path("/tmp").resolve():
        places.append(("TMPDIR", tmpdir))
    return places


def scan_changed(
    places: list[tuple[str, Path]], since: float, secrets: list[TestSecret], tmp: Path, out: Findings
) -> ChangedScan:
    """Every regular file under ``places`` whose ctime or mtime is after ``since``, as raw bytes.

    Not entered: the test's own folder (searched file by file above, with its exclusions) and
    other pytest sessions' and pytest-xdist workers' folders (other tests running on this machine
    at the same time: their clusters' etcd data alone is hundreds of MB; no process of this run
    writes there).
    """
    worker = tmp.resolve().parent  # /tmp/pytest-of-<user>/pytest-<n>, or .../pytest-<n>/popen-gw<i> under pytest-xdist
    session = worker.parent if worker.name.startswith("popen-gw") else worker
    result = ChangedScan()

    def skip(path: Path) -> str | None:
        if path == tmp.resolve():
            return "the test's own folder (searched above with its own rules)"
        if fnmatch.fnmatchcase(path.as_posix(), "*/pytest-of-*/pytest-*") and path.parent == session.parent and path != session:
            return "another pytest session's folder (tests running concurrently on this machine)"
        if worker != session and path.parent == session and path != worker:
            return "another pytest-xdist worker's folder (the suite's other tests, running at the same time)"
        return None

    for label, root in places:
        root = root.resolve() if root.exists() else root
        if not root.is_dir():
            result.absent[label] = root
            continue
        files = size = 0
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            for name in list(dirnames):
                reason = skip(here / name)
                if reason:
                    dirnames.remove(name)
                    result.skipped[reason] = result.skipped.get(reason, 0) + 1
            for name in filenames:
                path = here / name
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or max(st.st_mtime, st.st_ctime) < since:
                    continue
                try:
                    data = path.read_bytes()
                except OSError:
                    continue  # went away meanwhile (a lock, a temp file)
                files += 1
                size += len(data)
                where = f"{label}: {path}"
                scan_bytes(data, where, secrets, where, out)
        result.roots[label] = (root, files, size)
    return result


def git_out(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


@dataclass
class GitScan:
    repos: int = 0
    refs: int = 0
    commits: int = 0
    leaks: list[str] = field(default_factory=list)


def scan_git_repo(repo: Path, label: str, secrets: list[TestSecret], out: GitScan) -> None:
    """Every commit on every ref (branches, PR refs, remote-tracking refs): messages and patches.
    A value git declares on purpose may appear only in the file that declares it."""
    refs = git_out("for-each-ref", "--format=%(refname)", cwd=repo).split()
    if not refs:
        return
    out.repos += 1
    out.refs += len(refs)
    revs = git_out("rev-list", "--all", cwd=repo).split()
    out.commits += len(revs)
    log = git_out("log", "--all", "-p", "--format=fuller", "--no-color", "--no-ext-diff", "--binary", cwd=repo).encode()
    for s in secrets:
        if s.in_git:
            # the pattern from stdin (-f -), not argv: the audit's own processes are watched too
            hits = subprocess.run(
                ["git", "grep", "-l", "-F", "-f", "-", *revs],
                input=s.value,
                cwd=repo,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            stray = sorted({h.split(":", 1)[1] for h in hits} - {GIT_SECRET_FILE})
            if stray:
                out.leaks.append(f"{s.name} (declared in {GIT_SECRET_FILE}) also in {label}: {stray}")
            continue
        for n in s.needles():
            if n in log:
                i = log.index(n)
                out.leaks.append(f"{s.name} in the history of {label}: ...{log[max(0, i - 120) : i + 80]!r}...")
                break


def git_repos_under(root: Path) -> list[Path]:
    found = [p for p in root.rglob("HEAD") if (p.parent / "objects").is_dir() and (p.parent / "refs").is_dir()]
    return sorted({p.parent for p in found})


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --------------------------------------------------------------------------- fixture


def git(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    return git_out(*args, cwd=cwd, env=env)


@pytest.fixture
def setup(tmp_path: Path, toolchain: Any) -> Iterator[dict[str, Any]]:
    """A real Gitea holding the example (its demo Secret given random values) and a small local
    folder served by rebuild's git server: two sources, so both git paths are exercised."""
    since = time.time() - 1.0  # files outside tmp_path changed after this belong to the run (1 s: timestamp slack)
    forge = Gitea(tmp_path / "gitea", toolchain=toolchain)
    state = tmp_path / "state"
    watch: ProcWatch | None = None
    tracer: Tracer | None = None
    try:
        forge.start()
        token = forge.token
        password = (forge.root / "secrets" / "admin-password").read_text().strip()
        git_secrets = [
            TestSecret("git-declared DB_PASSWORD", random_value("dbpw"), in_git=True),
            TestSecret("git-declared PSP_API_KEY", random_value("psp"), in_git=True),
        ]
        basic = base64.b64encode(f"{forge.admin_user}:{password}".encode()).decode()
        # A secret of the user's own stack (issue 12): read from $STACK_TOKEN at run time, given
        # to Pulumi on stdin, kept only encrypted in the stack's config and state.
        stack_secret = TestSecret("user stack secret (STACK_TOKEN)", random_value("stack"))
        secrets = [
            TestSecret("forge token (FORGE_TOKEN)", token),
            TestSecret("git source password (GIT_PASSWORD)", password, extra=(basic,)),
            TestSecret("hand-made Secret shop/hotfix-api-key", random_value("hand")),
            TestSecret("hand-rotated payments-db password", random_value("rotated")),
            *git_secrets,
            stack_secret,
        ]
        forge.create_repo("gitops", auto_init=False)
        url = forge.clone_url(forge.admin_user, "gitops")
        work = tmp_path / "seed"
        shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("rebuild.yaml"))
        secret_file = work / GIT_SECRET_FILE
        text = secret_file.read_text()
        text = text.replace("demo-password-not-secret", git_secrets[0].value)
        text = text.replace("demo-api-key-not-secret", git_secrets[1].value)
        assert git_secrets[0].value in text and git_secrets[1].value in text
        secret_file.write_text(text)
        git("init", "-q", "-b", "main", cwd=work)
        git("add", ".", cwd=work)
        git("-c", "user.name=seed", "-c", "user.email=seed@localhost", "commit", "-qm", "seed", cwd=work)
        git("push", "-q", url, "main", cwd=work, env=forge.git_env())

        extras = tmp_path / "extras"
        extras.mkdir()
        (extras / "configmap.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: audit-extras\n  namespace: rebuild-system\n"
            "data:\n  note: served by rebuild's own git server\n"
        )
        cfg = example_config()
        cfg["sources"] = [
            {**cfg["sources"][0], "url": url, "credentials": {"username_env": "GIT_USER", "password_env": "GIT_PASSWORD"}},
            {"name": "extras", "url": str(extras), "branch": "main", "path": "."},
        ]
        classes = [s for s in cfg["stacks"] if isinstance(s, dict) and s["name"] == "cluster-classes"]
        assert len(classes) == 1, cfg["stacks"]
        classes[0]["secrets"] = {"auditToken_env": "STACK_TOKEN"}
        cfg["capture"]["forge"] = {
            "kind": "gitea",
            "url": forge.url,
            "repo": f"{forge.admin_user}/gitops",
            "token_env": "FORGE_TOKEN",
        }
        config = tmp_path / "rebuild.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        capture_config = tmp_path / "rebuild-capture.yaml"
        capture_config.write_text(yaml.safe_dump({**cfg, "sources": cfg["sources"][:1]}, sort_keys=False))

        audit = tmp_path / "audit"
        audit.mkdir()
        env = dict(
            os.environ,
            REBUILD_STATE_DIR=str(state),
            GIT_USER=forge.admin_user,
            GIT_PASSWORD=password,
            FORGE_TOKEN=token,
            STACK_TOKEN=stack_secret.value,
        )
        env.pop("REBUILD_NOTIFY_URL", None)
        tracer = Tracer(audit, env, strace=require_strace())
        watch = ProcWatch(secrets)
        watch.start()
        yield {
            "forge": forge,
            "config": config,
            "capture_config": capture_config,
            "state": state,
            "tmp": tmp_path,
            "audit": audit,
            "url": url,
            "secrets": secrets,
            "tracer": tracer,
            "watch": watch,
            "since": since,
        }
    finally:
        for d in sorted((state / "clusters").glob("*")) if (state / "clusters").is_dir() else ():
            LocalCluster(d.name, root=state).delete(purge=True)
        stop_servers(state)
        forge.stop()
        if tracer is not None:
            tracer.finish()
        if watch is not None:
            watch.stop()


# --------------------------------------------------------------------------- the test


def test_no_secret_leaks_in_argv_files_git_or_the_pr_and_every_listener_is_loopback(request: pytest.FixtureRequest) -> None:
    require_strace()  # before anything starts: without a tracer the argv claim could only pass vacuously
    setup: dict[str, Any] = request.getfixturevalue("setup")
    forge: Gitea = setup["forge"]
    tmp, state, audit = setup["tmp"], setup["state"], setup["audit"]
    secrets: list[TestSecret] = setup["secrets"]
    tracer: Tracer = setup["tracer"]
    watch: ProcWatch = setup["watch"]
    cfg = ["--config", str(setup["config"])]
    problems: dict[str, list[str]] = {}
    runs: list[Run] = []

    # 1. the recovery, from the forge (with credentials) and the local folder
    up = tracer.run("up", ["-o", "json", *cfg, "up"])
    runs.append(up)
    assert up.rc == 0, up.stderr[-3000:]
    assert json.loads(up.stdout)["converged"] is True

    # 2. manual changes, a hand-made Secret and a hand-rotated value of the git-declared one
    hand, rotated = secrets[2].value, secrets[3].value
    # Made with real kubectl. The Secret values go to kubectl on stdin (create -f -, patch
    # --patch-file=/dev/stdin), never in an argv or a file: this audit counts those places, and
    # the test's own tools must not plant the values there (so no EDITOR script for this one).
    kubeconfig = state / "clusters/demo/kubeconfig"
    suspend_flux(kubeconfig)
    kubectl(kubeconfig, "-n", "shop", "scale", "deployment/cart", "--replicas=5")
    hand_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hotfix-api-key", "namespace": "shop"},
        "type": "Opaque",
        "data": {"api-key": base64.b64encode(hand.encode()).decode()},
    }
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(hand_secret))
    rotation = {"data": {"DB_PASSWORD": base64.b64encode(rotated.encode()).decode()}}
    patch = ["-n", "payments", "patch", "secret/payments-db", "--type=merge", "--patch-file=/dev/stdin"]
    kubectl(kubeconfig, *patch, stdin=json.dumps(rotation))

    # 3. verify (names the drifted Secret), capture (opens the PR)
    verify = tracer.run("verify", ["-o", "json", *cfg, "verify", "--timeout", "3"])
    runs.append(verify)
    assert verify.rc == 1, verify.stderr[-3000:]
    drifted = [o["ref"] for o in json.loads(verify.stdout)["objects"] if not o["ok"]]
    assert "Secret/payments/payments-db" in drifted, drifted
    # capture from a config naming the forge's source only (capture backports into one
    # repository, the one on the forge where the PR is opened)
    capture = tracer.run("capture", ["-o", "json", "--config", str(setup["capture_config"]), "capture"])
    runs.append(capture)
    assert capture.rc == 1, capture.stderr[-3000:]
    assert json.loads(capture.stdout)["action"] == "created"

    # 4. every listener binds loopback, while the cluster, Flux, both git servers and Gitea run
    now = watch.sample_listeners()
    expected_pids: dict[str, int] = {}
    cluster = json.loads((state / "clusters/demo/cluster.json").read_text())
    flux = json.loads((state / "clusters/demo/flux/flux.json").read_text())
    gsrv = json.loads((state / "gitserver/gitserver.json").read_text())
    for rec in [*cluster["processes"], *flux["processes"], gsrv["process"]]:
        expected_pids[rec["name"]] = int(rec["pid"])
    gitea_pid = forge.status().pid
    assert gitea_pid is not None
    expected_pids["gitea"] = gitea_pid
    listening_pids = {ls.pid for ls in now}
    for name in (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "source-controller",
        "kustomize-controller",
        "gitserver",
        "gitea",
    ):
        assert expected_pids[name] in listening_pids, f"{name} (pid {expected_pids[name]}) has no listener"
    for name, pid in expected_pids.items():  # the long-lived ones, still running: argv without secrets
        text = Path(f"/proc/{pid}/cmdline").read_bytes()
        for s in secrets:
            for n in s.needles():
                if n in text:
                    problems.setdefault("argv", []).append(f"{s.name} in /proc/{pid}/cmdline of {name}")

    # 5. a drill with every report, the history, and the live RPO count
    report_dir = tmp / "reports"
    drill = tracer.run(
        "drill",
        [
            "-o",
            "json",
            *cfg,
            "drill",
            "--live",
            "--report-dir",
            str(report_dir),
            "--history",
            str(state / "drills/history.jsonl"),
        ],
    )
    runs.append(drill)
    assert drill.rc == 0, drill.stderr[-3000:]
    res = json.loads(drill.stdout)
    assert res["passed"] is True and set(res["reports"]) == {"json", "markdown", "junit", "html"}
    assert res["rpo"]["uncaptured_changes"] >= 3

    # 6. the pull request, through the API
    owner = forge.admin_user
    prs = forge.list_pull_requests(owner, "gitops", "all")
    assert len(prs) == 1
    pr = prs[0]
    assert "Secret/shop/hotfix-api-key" in pr["body"] and "Secret/payments/payments-db" in pr["body"]
    comments = forge.api("GET", f"/repos/{owner}/gitops/issues/{pr['number']}/comments") or []
    pr_texts = {"PR title": pr["title"], "PR body": pr["body"], **{f"PR comment {c['id']}": c["body"] for c in comments}}
    for where, text in pr_texts.items():
        for s in secrets:
            if any(n in text.encode() for n in s.needles()):
                problems.setdefault("pull request", []).append(f"{s.name} in the {where}")

    # 7. every file: state dir, reports, CLI output (before anything is stopped or purged)
    files = Findings()
    scan_tree(tmp, tmp, secrets, files)
    problems["files"] = files.leaks
    for r in runs:  # the CLI output again as text, with the needles decoded (JSON may escape nothing here)
        for s in secrets:
            if any(n.decode() in r.stdout + r.stderr for n in s.needles()):
                problems["files"].append(f"{s.name} in the output of `rebuild {r.name}`")

    # 8. git: every commit of every ref of the forge repo and of rebuild's own repositories
    gscan = GitScan()
    mirror = audit / "git" / "gitops.git"
    mirror.parent.mkdir()
    git("clone", "-q", "--mirror", setup["url"], str(mirror), cwd=audit, env=forge.git_env())
    assert any(
        r.startswith("refs/heads/rebuild/capture-") for r in git("for-each-ref", "--format=%(refname)", cwd=mirror).split()
    )
    scan_git_repo(mirror, "the forge's gitops repo", secrets, gscan)
    for repo in git_repos_under(state):
        scan_git_repo(repo, str(repo.relative_to(tmp)), secrets, gscan)
    problems["git"] = gscan.leaks
    assert gscan.repos >= 3  # the forge's, the mirror of each source, capture's clone

    # the git credentials reached the platform stack's config as Pulumi secrets (encrypted)
    stack_cfg = yaml.safe_load((state / "stacks/platform/Pulumi.demo.yaml").read_text())["config"]
    creds = stack_cfg["rebuild-platform:gitCredentials"]["demo"]
    assert set(creds) == {"username", "password"} and all(set(v) == {"secure"} for v in creds.values()), creds
    # and the user stack's secret reached cluster-classes' config the same way (encrypted)
    tokens = [
        (f, value)
        for f in state.glob("stacks/**/Pulumi.demo.yaml")
        for key, value in ((yaml.safe_load(f.read_text()) or {}).get("config") or {}).items()
        if key == "cluster-classes:auditToken"
    ]
    assert len(tokens) == 1 and set(tokens[0][1]) == {"secure"}, tokens

    # 9. modes: what holds credentials is 0600 (its folder too, where rebuild makes one)
    modes: list[str] = []
    private = [
        *state.glob("clusters/*/kubeconfig"),
        *state.glob("clusters/*/pki/*.key"),
        *state.glob("clusters/*/cluster.json"),
        *state.glob("clusters/*/flux/flux.json"),
        state / "gitserver/gitserver.json",
        state / "pulumi/passphrase",
    ]
    assert len([p for p in private if p.name.endswith(".key")]) >= 3 and len(private) >= 8
    for p in private:
        if mode(p) != 0o600:
            modes.append(f"{p.relative_to(tmp)} is {mode(p):04o}, not 0600")
    markers = (b"PRIVATE KEY-----", b"client-key-data", b"Authorization:")
    content_checked = 0
    for p in state.rglob("*"):
        if (
            p.is_file()
            and not p.is_symlink()
            and not fnmatch.fnmatchcase(p.relative_to(tmp).as_posix(), "state/clusters/*/etcd/*")
        ):
            data = p.read_bytes()
            if any(m in data for m in markers):
                content_checked += 1
                if mode(p) != 0o600:
                    modes.append(f"{p.relative_to(tmp)} holds key material and is {mode(p):04o}, not 0600")
    for etcd in state.glob("clusters/*/etcd"):
        if mode(etcd) & 0o077:
            modes.append(f"{etcd.relative_to(tmp)} (etcd data: every Secret) is {mode(etcd):04o}, not 0700")
    problems["modes"] = modes

    # 10. stop the daemons, so strace's records are complete; then every argv
    LocalCluster("demo", root=state).delete()
    stop_servers(state)
    tracer.finish()
    watch.stop()
    execs = read_execs([t for _, _, t in tracer.sessions], secrets)
    problems.setdefault("argv", []).extend(execs.leaks + watch.leaks)
    problems["argv truncated by strace"] = execs.truncated
    polled = {Path(c.split(" ")[0]).name for c in watch.cmdlines.values()}
    for prog in ("kube-apiserver", "etcd", "source-controller", "kustomize-controller", "pulumi", "git"):
        assert execs.programs.get(prog), f"strace never saw {prog} start: {sorted(execs.programs)}"
        assert prog in polled or prog == "git", f"the poller never saw {prog}"
    assert any("rebuild.adapters.gitserver" in c for c in watch.cmdlines.values())
    # the daemons stay traced after the CLI that started them exits: the git server's children too
    assert execs.http_backends > 0

    # 11. files outside the test's folder that changed during the run (daemons stopped: all written)
    changed = scan_changed(outside_places(), setup["since"], secrets, tmp, files)
    assert "/tmp" in changed.roots and "PULUMI_HOME" in changed.roots, changed

    # listeners of this run's processes: traced pids, Gitea, or anything whose argv names our tmp
    ours = [
        ls
        for ls in watch.listeners.values()
        if ls.pid in execs.pids or ls.pid == gitea_pid or str(tmp) in ls.cmd or str(tmp) in watch.cmdlines.get(ls.pid, "")
    ]
    problems["listeners"] = [f"{ls.address}:{ls.port} (pid {ls.pid}: {ls.cmd[:160]})" for ls in ours if not ls.loopback]

    print(f"\nsecrets audit (tracer: {tracer.strace}):")
    print(f"  secrets: {len(secrets)} values, {sum(len(s.needles()) for s in secrets)} forms searched (raw, base64 alignments)")
    print(f"  CLI runs: {', '.join(f'{r.name} (exit {r.rc})' for r in runs)}")
    print(
        f"  argv: {execs.started} programs started by {len(execs.pids)} processes checked under strace "
        f"({execs.lines} execve calls); {len(watch.cmdlines)} process cmdlines polled ({watch.reads} reads); "
        f"{len(expected_pids)} long-lived daemons re-read"
    )
    print(
        f"  files scanned: {files.files} ({files.bytes / 1e6:.1f} MB) + {files.tar_members} tarball members; "
        f"CLI outputs: {len(runs) * 2}; PR texts: {len(pr_texts)}"
    )
    for reason, count in sorted(files.skipped.items()):
        print(f"    not searched ({count} file-secret pairs): {reason}")
    started = time.strftime("%H:%M:%S", time.localtime(setup["since"]))
    print(f"  changed during the run, outside the test's folder (since {started}):")
    for label, (root, count, written) in changed.roots.items():
        print(f"    {label} ({root}): {count} files, {written / 1e6:.1f} MB")
    for label, root in changed.absent.items():
        print(f"    {label} ({root}): absent, nothing written there")
    for reason, count in sorted(changed.skipped.items()):
        print(f"    not entered ({count} folders): {reason}")
    print(f"  git: {gscan.repos} repositories, {gscan.refs} refs, {gscan.commits} commits")
    print(f"  modes: {len(private)} credential files named + {content_checked} found by content checked 0600")
    by_program: dict[str, list[str]] = {}
    for ls in ours:  # "?": a process gone before its cmdline was read (a short-lived plugin)
        by_program.setdefault(Path(ls.cmd.split(" ")[0]).name if ls.cmd else "?", []).append(ls.address)
    print(
        f"  listeners checked: {len(ours)} of this run ({len(now)} at the snapshot); ignored: "
        f"{len(watch.listeners) - len(ours)} of other processes, {len(watch.unmapped)} held by no visible process"
    )
    for prog, addrs in sorted(by_program.items()):
        print(f"    {prog}: {len(addrs)} on {', '.join(sorted(set(addrs)))}")
    found = {k: v for k, v in problems.items() if v}
    leaks = sum(len(problems.get(k, [])) for k in ("argv", "files", "git", "pull request"))
    print(f"  secrets found: {leaks}; modes not 0600: {len(modes)}; non-loopback listeners: {len(problems['listeners'])}")
    assert not found, json.dumps(found, indent=2)


# --------------------------------------------------------------------------- a SOPS capture run


def scan_git_objects(repo: Path, label: str, secrets: list[TestSecret], out: GitScan) -> int:
    """Every object of a repository, reachable or not (``git cat-file --batch-all-objects``): a
    blob written and then dropped from every ref is still there until git collects it. Returns
    how many objects were read."""
    listed = git_out("cat-file", "--batch-all-objects", "--batch-check", cwd=repo).splitlines()
    r = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch"], cwd=repo, capture_output=True, check=True)
    for s in secrets:
        if any(n in r.stdout for n in s.needles()):
            out.leaks.append(f"{s.name} in an object of {label} (git cat-file --batch-all-objects)")
    return len(listed)


def test_a_sops_secret_changed_live_and_captured_leaks_its_new_value_nowhere(tmp_path: Path, toolchain: Any) -> None:
    """The capture of a SOPS-encrypted Secret whose value a person changed with ``kubectl patch``
    (issue 13): capture decrypts the file, sets the live value, re-encrypts it through sops pipes
    for the ``.sops.yaml`` recipients (tests/integration/test_capture_sops.py) and opens a pull
    request on a real Gitea. The new value, and the values git holds encrypted, must then be in
    no argv of any process (strace, every CLI run), no file under this test's folder (state dir,
    logs, render cache, records; Gitea's own folder aside, its repository read through git) nor
    one written during the run under PULUMI_HOME, the Go and pip caches or /tmp, no CLI output,
    diff, pull request title, body or comment, and no object of any git repository of the run:
    the forge's (a mirror clone), rebuild's mirror and capture's clone (``git log -p --all`` and
    ``git cat-file --batch-all-objects``, unreachable objects included)."""
    from rebuild.toolchain.tools import Toolchain
    from tests.integration.test_capture_sops import DB_FILE, b64, write_repo
    from tests.integration.test_sops_cli import age_keygen

    strace = require_strace()  # before anything starts: without a tracer the argv claim could only pass vacuously
    since = time.time() - 1.0
    tools: Toolchain = toolchain
    seed, state, audit = tmp_path / "seed", tmp_path / "state", tmp_path / "audit"
    (tmp_path / "keys").mkdir()
    audit.mkdir()
    public = age_keygen(tools, tmp_path / "keys" / "age.agekey")
    values = {"password": random_value("pw"), "token": random_value("tok"), "key": random_value("key")}
    write_repo(seed, tools, public, values)  # encrypted by the real sops; the plaintexts stay in memory
    new_password = random_value("rotated")
    secrets = [
        TestSecret("SOPS Secret db: the password set live (kubectl patch)", new_password),
        *(TestSecret(f"SOPS-encrypted {k} (clear only in memory)", v) for k, v in values.items()),
    ]
    forge = Gitea(tmp_path / "gitea", toolchain=toolchain)
    name = "auditsops"
    tracer: Tracer | None = None
    watch = ProcWatch(secrets)
    problems: dict[str, list[str]] = {}
    try:
        forge.start()
        forge.create_repo("gitops", auto_init=False)
        url = forge.clone_url(forge.admin_user, "gitops")
        git("init", "-q", "-b", "main", cwd=seed)
        git("add", ".", cwd=seed)
        git("-c", "user.name=seed", "-c", "user.email=seed@localhost", "commit", "-qm", "seed", cwd=seed)
        git("push", "-q", url, "main", cwd=seed, env=forge.git_env())
        config = tmp_path / "rebuild.yaml"
        source: dict[str, Any] = {"name": "apps", "url": url, "branch": "main", "path": "apps"}
        source["credentials"] = {"username_env": "GIT_USER", "password_env": "GIT_PASSWORD"}
        forge_cfg = {"kind": "gitea", "url": forge.url, "repo": f"{forge.admin_user}/gitops", "token_env": "FORGE_TOKEN"}
        config.write_text(
            yaml.safe_dump(
                {
                    "sources": [source],
                    "cluster": {"provider": "local", "name": name, "nodes": 1},
                    "reconciler": {"kind": "flux", "interval": "1m", "sops_age_key_file": "keys/age.agekey"},
                    "verify": {"timeout": "4m"},
                    "capture": {"forge": forge_cfg},
                },
                sort_keys=False,
            )
        )
        password = (forge.root / "secrets" / "admin-password").read_text().strip()
        env = dict(os.environ, REBUILD_STATE_DIR=str(state), GIT_USER=forge.admin_user, GIT_PASSWORD=password)
        env["FORGE_TOKEN"] = forge.token
        env.pop("CI", None)
        tracer = Tracer(audit, env, strace=strace)
        watch.start()

        up = tracer.run("up", ["-o", "json", "--config", str(config), "up"])
        assert up.rc == 0, up.stderr[-3000:]
        kubeconfig = state / "clusters" / name / "kubeconfig"
        suspend_flux(kubeconfig, "apps")
        # the new value reaches kubectl on stdin, never in its argv
        patch = ["-n", "shop", "patch", "secret", "db", "--type=merge", "--patch-file=/dev/stdin"]
        kubectl(kubeconfig, *patch, stdin=json.dumps({"data": {"password": b64(new_password)}}))
        capture = tracer.run("capture", ["-o", "json", "--config", str(config), "capture"])
        assert capture.rc == 1, capture.stderr[-3000:]
        res = json.loads(capture.stdout)
        # the run did what it is audited for: the new value went to the pull request (encrypted for the
        # rule: the branch's diff is checked below, on the forge's repository)
        assert res["action"] == "created" and res["files"] == [DB_FILE], res
        for r in (up, capture):
            for s in secrets:
                if any(n.decode() in r.stdout + r.stderr for n in s.needles()):
                    problems.setdefault("CLI output, diff", []).append(f"{s.name} in the output of `rebuild {r.name}`")

        (pr,) = forge.list_pull_requests(forge.admin_user, "gitops", "all")
        assert "encrypted with sops for the .sops.yaml:2 rule" in pr["body"], pr["body"]
        comments = forge.api("GET", f"/repos/{forge.admin_user}/gitops/issues/{pr['number']}/comments") or []
        texts = {"PR title": pr["title"], "PR body": pr["body"], **{f"PR comment {c['id']}": c["body"] for c in comments}}
        for where, text in texts.items():
            for s in secrets:
                if any(n in text.encode() for n in s.needles()):
                    problems.setdefault("pull request", []).append(f"{s.name} in the {where}")

        files = Findings()
        scan_tree(tmp_path, tmp_path, secrets, files)
        problems["files"] = files.leaks
        mirror = audit / "git" / "gitops.git"
        mirror.parent.mkdir()
        git("clone", "-q", "--mirror", url, str(mirror), cwd=audit, env=forge.git_env())
        gscan, objects = GitScan(), 0
        for repo in git_repos_under(tmp_path):
            label = str(repo.relative_to(tmp_path))
            scan_git_repo(repo, label, secrets, gscan)
            objects += scan_git_objects(repo, label, secrets, gscan)
        problems["git"] = gscan.leaks
        # the forge's (with the PR's branch), the seed, rebuild's mirror, capture's clone
        assert gscan.repos >= 4 and objects > 0, (gscan, objects)
        branch = git("log", "-p", "--all", "--format=%H", cwd=mirror)
        assert f"+++ b/{DB_FILE}" in branch and "ENC[AES256_GCM," in branch
    finally:
        LocalCluster(name, root=state).delete(purge=True)
        stop_servers(state)
        forge.stop()
        if tracer is not None:
            tracer.finish()
        watch.stop()
    assert tracer is not None
    execs = read_execs([t for _, _, t in tracer.sessions], secrets)
    problems["argv"] = execs.leaks + watch.leaks
    problems["argv truncated by strace"] = execs.truncated
    # the tracer saw the processes that held the values: sops (decrypt and re-encrypt), the control plane
    for prog in ("sops", "kube-apiserver", "kustomize-controller", "git"):
        assert execs.programs.get(prog), f"strace never saw {prog} start: {sorted(execs.programs)}"
    changed = scan_changed(outside_places(), since, secrets, tmp_path, files)
    assert "/tmp" in changed.roots and "PULUMI_HOME" in changed.roots, changed
    print(f"\nSOPS capture audit: {len(secrets)} values, {sum(len(s.needles()) for s in secrets)} forms searched")
    sops_runs = execs.programs.get("sops", 0)
    print(f"  argv: {execs.started} programs started ({sops_runs} sops runs), {len(watch.cmdlines)} cmdlines polled")
    print(f"  files: {files.files} under the test's folder; outside it, changed during the run:")
    for label, (root, count, written) in changed.roots.items():
        print(f"    {label} ({root}): {count} files, {written / 1e6:.1f} MB")
    print(f"  git: {gscan.repos} repositories, {gscan.commits} commits, {objects} objects; PR texts: {len(texts)}")
    found = {k: v for k, v in problems.items() if v}
    assert not found, json.dumps(found, indent=2)
