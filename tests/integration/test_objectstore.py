"""A real S3 backend for Pulumi: S3Proxy on 127.0.0.1 (rebuild/adapters/objectstore.py) and the
pinned pulumi CLI with a Pulumi YAML program (the YAML language host from the toolchain).

The state object must be in the bucket, survive a stop and restart of the store, and be gone
after ``destroy`` + ``stack rm``; the keys never appear in an argv, an environment or a file
left on disk; when the store is stopped no process, listener, record or /tmp file of it is left."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rebuild.adapters import process
from rebuild.adapters.objectstore import PROPERTIES, RECORD, ObjectStore, ObjectStoreError
from tests.procs import pid_alive, processes_naming

pytestmark = pytest.mark.integration

PROGRAM = """\
name: s3-smoke
runtime: yaml
description: "No provider and no resource, only outputs: the state is the stack's own."
config:
  greeting: {type: string, default: hello from s3}
outputs:
  greeting: ${greeting}
  where: s3proxy
"""
STATE_KEY = ".pulumi/stacks/s3-smoke/dev.json"


def tcp_listeners(ports: list[int]) -> dict[int, str]:
    """port -> local address of every listening TCP socket (v4 and v6) on one of ``ports``."""
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) in ports:  # 0A: LISTEN
                found[int(port_hex, 16)] = addr
    return found


def pulumi_env(tc: Any, home: Path, store: ObjectStore) -> dict[str, str]:
    """The CLI's environment: a private PULUMI_HOME sharing the toolchain's plugins, the bucket as
    backend, the store's keys; offline (no update check, no plugin download)."""
    home.mkdir(exist_ok=True)
    if not (home / "plugins").exists():
        (home / "plugins").symlink_to(tc.pulumi_home / "plugins")
    env: dict[str, str] = tc.env(process.inherited_env())
    env.update(store.env)
    env.update(
        {
            "PULUMI_HOME": str(home),
            "PULUMI_BACKEND_URL": store.s3_url,
            "PULUMI_CONFIG_PASSPHRASE": "s3-smoke-passphrase",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        }
    )
    return env


def pulumi(tc: Any, env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(tc.binary("pulumi")), *args, "--non-interactive"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, f"pulumi {' '.join(args)}: {out.stdout[-1500:]}\n{out.stderr[-1500:]}"
    return out


def _tmp_entries() -> set[str]:
    return set(os.listdir("/tmp"))


def test_pulumi_state_in_s3proxy(tmp_path: Path, toolchain: Any) -> None:
    tc = toolchain
    data = tmp_path / "store"
    project = tmp_path / "s3-smoke"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(PROGRAM)
    seen: list[tuple[ObjectStore, int]] = []
    tmp_before = _tmp_entries()

    store = ObjectStore.start(data, "pulumi-state", toolchain=tc)
    seen.append((store, store.proc.pid))
    try:
        # the keys are in neither the server's argv nor its environment; the properties file that
        # carried them is gone once the server answers, and the record (0600) holds none of them
        proc = Path(f"/proc/{store.proc.pid}")
        for f in ("cmdline", "environ"):
            raw = (proc / f).read_bytes()
            assert store.secret_key.encode() not in raw and store.access_key.encode() not in raw, f
        assert not (data / PROPERTIES).exists()
        record = data / RECORD
        assert stat.S_IMODE(record.stat().st_mode) == 0o600 and store.secret_key not in record.read_text()
        # one listener, on 127.0.0.1: 0100007F in /proc/net/tcp, or ::ffff:127.0.0.1 in tcp6 (the
        # JVM opens dual-stack sockets; bound to the mapped loopback it still takes only 127.0.0.1)
        assert tcp_listeners([store.port]) in ({store.port: "0100007F"}, {store.port: "0000000000000000FFFF00000100007F"})
        assert store.s3_url.startswith("s3://pulumi-state?endpoint=http://127.0.0.1:") and "use_path_style=true" in store.s3_url
        assert store.list_keys() == []
        with pytest.raises(ObjectStoreError, match="HTTP 404"):
            store.get(STATE_KEY)

        env = pulumi_env(tc, tmp_path / "pulumi-home", store)
        pulumi(tc, env, project, "stack", "init", "dev")
        up = pulumi(tc, env, project, "up", "--yes", "--skip-preview", "--stack", "dev")
        assert "from $PATH" not in up.stdout + up.stderr  # the YAML host comes from beside pulumi
        out = json.loads(pulumi(tc, env, project, "stack", "output", "--json", "--stack", "dev").stdout)
        assert out == {"greeting": "hello from s3", "where": "s3proxy"}

        assert STATE_KEY in store.list_keys(".pulumi/")
        state = json.loads(store.get(STATE_KEY))
        root = state["checkpoint"]["latest"]["resources"][0]
        assert root["type"] == "pulumi:pulumi:Stack" and root["outputs"]["greeting"] == "hello from s3"
        assert not store.list_keys(".pulumi/locks/"), "the update left its lock behind"

        # stop (SIGTERM: Jetty's shutdown hook) and start again on the same data: the state is
        # still there, behind another port, and the existing bucket is kept
        first = store
        assert first.stop() is False, "S3Proxy ignored SIGTERM and needed SIGKILL"
        assert not first.alive() and not tcp_listeners([first.port])
        store = ObjectStore.start(data, "pulumi-state", first.access_key, first.secret_key, toolchain=tc)
        seen.append((store, store.proc.pid))
        assert STATE_KEY in store.list_keys(".pulumi/stacks/")
        env = pulumi_env(tc, tmp_path / "pulumi-home", store)
        again = json.loads(pulumi(tc, env, project, "stack", "output", "--json", "--stack", "dev").stdout)
        assert again == out

        pulumi(tc, env, project, "destroy", "--yes", "--skip-preview", "--stack", "dev")
        pulumi(tc, env, project, "stack", "rm", "--yes", "dev")
        assert STATE_KEY not in store.list_keys(".pulumi/")
    finally:
        for s, _ in seen:
            s.stop()

    for s, pid in seen:
        assert not pid_alive(pid), f"S3Proxy {pid} still runs"
        assert not tcp_listeners([s.port]), "a listener of the object store is left"
    assert not (data / RECORD).exists() and not (data / PROPERTIES).exists()
    assert processes_naming(tmp_path) == {}, "a process working under the test folder is left"
    # nothing of the JVM's in /tmp (no hsperfdata, java.io.tmpdir is the data dir's tmp/); other
    # tests running at the same time may add their own entries, so only JVM-shaped names count
    new = {n for n in _tmp_entries() - tmp_before if n.startswith(("hsperfdata", "jetty", "jclouds", "s3proxy"))}
    assert not new, new
    # the keys were never written by pulumi or the store outside its data (the login is PULUMI_BACKEND_URL)
    for f in [*(tmp_path / "pulumi-home").rglob("*"), *data.rglob("*")]:
        if f.is_file() and not f.is_symlink():
            assert store.secret_key.encode() not in f.read_bytes(), f
