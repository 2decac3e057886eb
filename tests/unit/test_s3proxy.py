"""The S3Proxy tool: its download recipe (pinned sha256, bounded retries only for what can heal),
the Java prerequisite that install and doctor name with the fix, and the server's configuration
(keys in a 0600 properties file, never in argv). No network: a local HTTP server stands in for
Maven Central; the real server runs in tests/integration/test_objectstore.py."""

from __future__ import annotations

import hashlib
import http.server
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rebuild.adapters import objectstore as obs
from rebuild.core.errors import ToolchainError
from rebuild.toolchain import recipes as rc
from rebuild.toolchain import tools as tc

JAR = b"PK\x03\x04 not really a jar, but bytes with a known digest"


class _Maven(http.server.BaseHTTPRequestHandler):
    """Serves JAR at any path; ``fail`` holds status codes to answer first, one per request."""

    fail: list[int] = []
    hits: list[str] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        if type(self).fail:
            self.send_error(type(self).fail.pop(0))
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(JAR)))
        self.end_headers()
        self.wfile.write(JAR)

    def log_message(self, *_a: object) -> None:
        pass


@pytest.fixture
def maven(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Maven]]:
    _Maven.fail, _Maven.hits = [], []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Maven)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("REBUILD_MAVEN_REPO", f"http://127.0.0.1:{srv.server_address[1]}/maven2/")
    monkeypatch.setattr(rc.time, "sleep", lambda _s: None)
    try:
        yield _Maven
    finally:
        srv.shutdown()
        srv.server_close()


def _build(tmp_path: Path, sha256: str, lines: list[str]) -> rc.Build:
    versions = tc.Toolchain().versions
    versions["s3proxy"] = {**versions["s3proxy"], "sha256": sha256}
    b = rc.Build(tc.Toolchain(root=tmp_path, versions=versions), "s3proxy", lines.append)
    (b.stage / "bin").mkdir(parents=True)
    return b


def test_maven_url_is_central_unless_a_mirror_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REBUILD_MAVEN_REPO", raising=False)
    assert rc.maven_url("org.gaul", "s3proxy", "4.1.0", "jar-with-dependencies") == (
        "https://repo1.maven.org/maven2/org/gaul/s3proxy/4.1.0/s3proxy-4.1.0-jar-with-dependencies.jar"
    )
    monkeypatch.setenv("REBUILD_MAVEN_REPO", "https://nexus.example/repository/central/")
    assert (
        rc.maven_url("org.gaul", "s3proxy", "4.1.0")
        == "https://nexus.example/repository/central/org/gaul/s3proxy/4.1.0/s3proxy-4.1.0.jar"
    )


def test_the_jar_is_kept_only_with_the_pinned_digest(tmp_path: Path, maven: type[_Maven]) -> None:
    lines: list[str] = []
    b = _build(tmp_path, hashlib.sha256(JAR).hexdigest(), lines)
    rc._fetch_s3proxy(b)
    jar = b.stage / "bin" / rc.S3PROXY_JAR
    assert jar.read_bytes() == JAR and stat.S_IMODE(jar.stat().st_mode) == 0o644
    assert maven.hits == ["/maven2/org/gaul/s3proxy/4.1.0/s3proxy-4.1.0-jar-with-dependencies.jar"]
    assert [p.name for p in (b.stage / "bin").iterdir()] == [rc.S3PROXY_JAR]  # no .part left

    b = _build(tmp_path / "bad", "0" * 64, lines)
    with pytest.raises(ToolchainError) as err:
        rc._fetch_s3proxy(b)
    assert f"has sha256 {hashlib.sha256(JAR).hexdigest()}, rebuild/versions.toml pins {'0' * 64}" in err.value.message
    assert list((b.stage / "bin").iterdir()) == []


def test_5xx_is_retried_with_a_line_per_attempt_and_4xx_is_not(tmp_path: Path, maven: type[_Maven]) -> None:
    lines: list[str] = []
    maven.fail = [503, 502]
    rc._fetch_s3proxy(_build(tmp_path, hashlib.sha256(JAR).hexdigest(), lines))
    assert len(maven.hits) == 3
    assert [ln.split(": download ")[1].split(";")[0] for ln in lines if "attempt" in ln] == [
        "attempt #1/3 failed",
        "attempt #2/3 failed",
    ]

    maven.hits.clear()
    maven.fail = [404]
    with pytest.raises(ToolchainError) as err:
        rc._fetch_s3proxy(_build(tmp_path / "404", hashlib.sha256(JAR).hexdigest(), lines))
    assert len(maven.hits) == 1 and "HTTP 404" in err.value.message and "versions.toml" in (err.value.fix or "")

    maven.fail = [500, 500, 500]
    with pytest.raises(ToolchainError) as err:
        rc._fetch_s3proxy(_build(tmp_path / "5xx", hashlib.sha256(JAR).hexdigest(), lines))
    assert "failed 3 times: HTTP 500" in err.value.message


def _fake_java(home: Path, version_line: str) -> None:
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        ('openjdk version "17.0.15" 2025-04-15', True),
        ('openjdk version "21" 2023-09-19', True),
        ('openjdk version "11.0.22" 2024-01-16', False),
        ('java version "1.8.0_392"', False),
    ],
)
def test_java_version_is_read_from_java_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str, ok: bool) -> None:
    _fake_java(tmp_path, line)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    java = tc.find_java()
    assert java.path == tmp_path / "bin" / "java" and java.ok is ok
    if not ok:
        assert "S3Proxy needs Java >= 17" in java.problem and java.version in java.problem


def test_install_and_doctor_name_a_missing_java_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    t = tc.Toolchain(root=tmp_path)
    monkeypatch.setattr(tc, "check_prerequisites", lambda _root: None)
    monkeypatch.setattr(tc, "_run_recipe", lambda *_a: pytest.fail("a recipe ran without Java"))
    with pytest.raises(ToolchainError) as err:
        tc.install(t, progress=lambda _m: None, only=["s3proxy"])
    assert "needs Java: no `java` on PATH" in err.value.message
    assert "apt-get install openjdk-17-jre-headless" in (err.value.fix or "")
    row = next(r for r in t.status() if r.name == "java")
    assert not row.present and row.tool == "s3proxy" and "openjdk-17-jre-headless" in row.detail


def test_the_keys_go_to_a_0600_properties_file_not_to_argv(tmp_path: Path) -> None:
    access, secret = "rebuildabc123", "s3cr\\et with space"
    text = obs.properties(tmp_path, 4567, access, secret)
    assert "s3proxy.endpoint=http://127.0.0.1:4567\n" in text
    assert "s3proxy.credential=s3cr\\\\et with space\n" in text  # java.util.Properties escaping
    assert f"jclouds.filesystem.basedir={tmp_path / 'data'}\n" in text and "jclouds.provider=filesystem\n" in text
    f = tmp_path / obs.PROPERTIES
    f.write_text("old")
    f.chmod(0o644)
    obs._write_private(f, text)  # replaces, never inherits the old file's mode
    assert stat.S_IMODE(f.stat().st_mode) == 0o600 and f.read_text() == text
    argv = obs.server_argv(Path("/usr/bin/java"), tmp_path / "s3proxy.jar", tmp_path)
    assert not any(access in a or "s3cr" in a for a in argv)
    assert argv[-2:] == ["--properties", str(f)] and "-XX:TieredStopAtLevel=1" in argv
    assert f"-Djava.io.tmpdir={tmp_path / 'tmp'}" in argv and "-XX:-UsePerfData" in argv
