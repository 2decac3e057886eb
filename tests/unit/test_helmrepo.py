"""The Helm chart repository rebuild serves (rebuild/adapters/helmrepo.py): packaging as `helm
package` lays a chart out, deterministic; the index in Helm's documented repository format
(apiVersion v1; entries per chart, newest first, with the Chart.yaml metadata, urls, created and
the sha256 digest of the package; generated); and the server for real on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from rebuild.adapters import helmrepo, process
from rebuild.core.errors import ConfigError

CHART_YAML = (
    'apiVersion: v2\nname: {name}\nversion: "{version}"\nappVersion: 1.27\ndescription: A tiny chart\ntype: application\n'
)


def write_chart(folder: Path, name: str = "demo", version: str = "0.1.0", replicas: int = 1) -> Path:
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    (folder / "Chart.yaml").write_text(CHART_YAML.format(name=name, version=version))
    (folder / "values.yaml").write_text(f"replicas: {replicas}\ngreeting: hello\n")
    (folder / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-settings\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    return folder


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getmembers()


def test_package_is_a_gzip_tar_under_the_chart_name_like_helm_package(tmp_path: Path) -> None:
    folder = write_chart(tmp_path / "folder-named-otherwise")
    meta, data = helmrepo.package_bytes(folder)
    assert meta["name"] == "demo" and meta["version"] == "0.1.0" and meta["appVersion"] == "1.27"
    infos = members(data)
    names = [m.name for m in infos]
    assert names == ["demo/Chart.yaml", "demo/templates/configmap.yaml", "demo/values.yaml"]  # Chart.yaml first
    assert all(m.isfile() and m.mode == 0o644 and m.mtime == helmrepo.FIXED_TIME and m.uid == m.gid == 0 for m in infos)
    # the gzip header holds no file name and the fixed time (bytes 4-7: MTIME, flag FNAME unset)
    assert data[:2] == b"\x1f\x8b" and not data[3] & 0x08
    assert int.from_bytes(data[4:8], "little") == helmrepo.FIXED_TIME
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        f = tar.extractfile("demo/values.yaml")
        assert f is not None and f.read() == (folder / "values.yaml").read_bytes()


def test_packaging_is_deterministic(tmp_path: Path) -> None:
    a = write_chart(tmp_path / "a")
    b = write_chart(tmp_path / "b")
    _, first = helmrepo.package_bytes(a)
    os.utime(a / "values.yaml", (1_900_000_000, 1_900_000_000))  # mtimes and folder names do not matter
    (a / "values.yaml").chmod(0o600)
    assert helmrepo.package_bytes(a)[1] == first == helmrepo.package_bytes(b)[1]
    write_chart(b, replicas=2)
    assert helmrepo.package_bytes(b)[1] != first  # content does
    assert helmrepo.package_bytes(a, mtime=1_700_000_000)[1] != first  # and the chosen time


def test_helmignore_and_git_are_left_out_and_links_may_not_leave_the_chart(tmp_path: Path) -> None:
    folder = write_chart(tmp_path / "demo")
    (folder / ".helmignore").write_text("# comment\n*.bak\nsecrets/\n/notes.txt\n")
    (folder / "values.yaml.bak").write_text("x")
    (folder / "notes.txt").write_text("x")
    (folder / "secrets").mkdir()
    (folder / "secrets" / "a.yaml").write_text("x")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("x")
    names = [rel for rel, _ in helmrepo.chart_files(folder)]
    assert names == ["Chart.yaml", ".helmignore", "templates/configmap.yaml", "values.yaml"]
    (folder / "templates" / "leak.yaml").symlink_to(tmp_path / "outside.yaml")
    (tmp_path / "outside.yaml").write_text("x")
    with pytest.raises(ConfigError, match="a link out of the chart folder"):
        helmrepo.chart_files(folder)


@pytest.mark.parametrize(
    ("chart_yaml", "message"),
    [
        ("apiVersion: v2\nname: demo\nversion: 0.1\n", "is not SemVer 2"),
        ("apiVersion: v2\nname: Demo_App\nversion: 0.1.0\n", "chart name 'Demo_App' is not valid"),
        ("apiVersion: v3\nname: demo\nversion: 0.1.0\n", "apiVersion must be v2"),
        ("name: [\n", "not valid YAML"),
        ("- a\n", "not a mapping"),
    ],
)
def test_bad_chart_yaml_names_the_file_and_the_fix(tmp_path: Path, chart_yaml: str, message: str) -> None:
    (tmp_path / "Chart.yaml").write_text(chart_yaml)
    with pytest.raises(ConfigError) as err:
        helmrepo.read_chart(tmp_path)
    assert message in err.value.message and str(tmp_path / "Chart.yaml") in err.value.message and err.value.fix


def test_index_follows_helms_repository_format(tmp_path: Path) -> None:
    """Helm's chart repository guide: index.yaml has apiVersion v1, entries keyed by chart name
    (each a list of versions: the Chart.yaml fields plus urls, created and digest) and generated."""
    charts = tmp_path / "charts"
    write_chart(charts / "demo")
    write_chart(charts / "demo-next", version="0.10.0")
    write_chart(charts / "demo-rc", version="0.10.0-rc.1")
    write_chart(charts / "other", name="other", version="1.0.0")
    write_chart(charts / "other" / "charts" / "sub", name="sub")  # a subchart belongs to its parent
    out = tmp_path / "repo"
    pkgs = helmrepo.build_repo(charts, out, created=1_750_000_000)
    assert sorted(p.filename for p in pkgs) == ["demo-0.1.0.tgz", "demo-0.10.0-rc.1.tgz", "demo-0.10.0.tgz", "other-1.0.0.tgz"]
    index = yaml.safe_load((out / "index.yaml").read_text())
    assert index["apiVersion"] == "v1" and index["generated"] == "2025-06-15T15:06:40Z"
    assert list(index["entries"]) == ["demo", "other"]
    assert [e["version"] for e in index["entries"]["demo"]] == ["0.10.0", "0.10.0-rc.1", "0.1.0"]  # newest first
    entry = index["entries"]["demo"][-1]
    assert entry == {
        "name": "demo",
        "version": "0.1.0",
        "description": "A tiny chart",
        "apiVersion": "v2",
        "appVersion": "1.27",
        "type": "application",
        "urls": ["demo-0.1.0.tgz"],  # relative, as `helm repo index` writes it without --url
        "created": "2025-06-15T15:06:40Z",
        "digest": hashlib.sha256((out / "demo-0.1.0.tgz").read_bytes()).hexdigest(),
    }
    assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"])
    names = [m.name for m in members((out / "other-1.0.0.tgz").read_bytes())]
    assert "other/charts/sub/Chart.yaml" in names
    # absolute URLs on request; a chart gone from git loses its package
    helmrepo.build_repo(charts / "other", out, base_url="http://127.0.0.1:1/")
    index = yaml.safe_load((out / "index.yaml").read_text())
    assert list(index["entries"]) == ["other"] and index["entries"]["other"][0]["urls"] == ["http://127.0.0.1:1/other-1.0.0.tgz"]
    assert sorted(p.name for p in out.glob("*.tgz")) == ["other-1.0.0.tgz"]


def test_the_same_chart_version_twice_is_an_error(tmp_path: Path) -> None:
    write_chart(tmp_path / "charts" / "a")
    write_chart(tmp_path / "charts" / "b")
    with pytest.raises(ConfigError, match=r"chart demo version 0\.1\.0 is in both"):
        helmrepo.build_repo(tmp_path / "charts", tmp_path / "repo")
    with pytest.raises(ConfigError, match="no chart"):
        helmrepo.build_repo(tmp_path / "repo", tmp_path / "out")


def _get(url: str, method: str = "GET") -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as resp:
            return int(resp.status), resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, b"", ""


def test_server_serves_the_index_and_packages_only(tmp_path: Path) -> None:
    write_chart(tmp_path / "charts" / "demo")
    out = tmp_path / "repo"
    helmrepo.build_repo(tmp_path / "charts", out)
    (out / "secret.txt").write_text("no")
    with helmrepo.HelmRepoServer(out) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        code, body, ctype = _get(srv.url + "/index.yaml")
        assert code == 200 and yaml.safe_load(body)["apiVersion"] == "v1" and "yaml" in ctype
        url = yaml.safe_load(body)["entries"]["demo"][0]["urls"][0]
        code, tgz, ctype = _get(f"{srv.url}/{url}")
        assert code == 200 and ctype == "application/gzip" and tgz == (out / "demo-0.1.0.tgz").read_bytes()
        assert gzip.decompress(tgz)
        assert _get(srv.url + "/index.yaml", "HEAD")[:2] == (200, b"")
        for bad in ("/secret.txt", "/../repo/index.yaml", "/%2e%2e/x.tgz", "/", "/charts/demo/Chart.yaml"):
            assert _get(srv.url + bad)[0] == 404, bad
        # files are read per request: a rebuilt index is served at once
        write_chart(tmp_path / "charts" / "demo", version="0.2.0")
        helmrepo.build_repo(tmp_path / "charts", out)
        assert _get(srv.url + "/demo-0.2.0.tgz")[0] == 200 and _get(srv.url + "/demo-0.1.0.tgz")[0] == 404


def test_detached_repo_outlives_its_caller_keeps_its_port_and_stops(tmp_path: Path) -> None:
    write_chart(tmp_path / "charts" / "demo")
    state = tmp_path / "state"
    srv = helmrepo.ensure_repo(state, tmp_path / "charts")
    try:
        assert _get(srv.url + "/demo-0.1.0.tgz")[0] == 200
        assert helmrepo.ensure_repo(state, tmp_path / "charts").record == srv.record  # reused
        assert (state / "helmrepo.json").stat().st_mode & 0o777 == 0o600
        running = helmrepo.repo_running(state)
        assert running is not None and running.port == srv.port
        assert helmrepo.stop_repo(state) and not process.alive(srv.record)
        assert helmrepo.repo_running(state) is None
        again = helmrepo.ensure_repo(state, tmp_path / "charts")
        assert again.port == srv.port and again.record.pid != srv.record.pid  # same URL for Flux
        assert helmrepo.stop_repo(state) and not process.alive(again.record)
        assert not helmrepo.stop_repo(state)
    finally:
        helmrepo.stop_repo(state)
