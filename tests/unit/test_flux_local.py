"""How the Flux controllers are started (no cluster needed): argv, environment, ports, record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rebuild.adapters import process
from rebuild.reconcilers.flux_local import CONTROLLERS, FluxLocal, _established
from rebuild.toolchain.tools import Toolchain


@pytest.fixture
def flux(tmp_path: Path) -> FluxLocal:
    return FluxLocal(tmp_path / "flux", tmp_path / "kubeconfig", toolchain=Toolchain(root=tmp_path / "cache"))


def test_argv_binds_loopback_only_and_never_names_the_kubeconfig(flux: FluxLocal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_CONTROLLER_LOCALHOST", "elsewhere:80")
    ports = flux._choose_ports()
    assert len(set(ports.values())) == len(ports) == 2 * len(CONTROLLERS) + 1  # + storage
    for name in CONTROLLERS:
        argv = flux._argv(name, Path(f"/bin/{name}"), ports)
        addrs = [a.split("=", 1)[1] for a in argv if a.endswith(tuple(str(p) for p in ports.values())) and "=" in a]
        assert addrs and all(a.startswith("127.0.0.1:") for a in addrs), argv
        assert not any("kubeconfig" in a for a in argv)
        assert "--log-encoding=console" in argv and "--enable-leader-election=false" in argv
        assert "--watch-all-namespaces=true" in argv
    sc = flux._argv("source-controller", Path("/bin/sc"), ports)
    storage = f"127.0.0.1:{ports['storage']}"
    assert f"--storage-addr={storage}" in sc and f"--storage-adv-addr={storage}" in sc
    assert f"--storage-path={flux.storage_path}" in sc
    env = flux._env()
    assert env["KUBECONFIG"] == str(flux.kubeconfig) and env["RUNTIME_NAMESPACE"] == "flux-system"
    assert "SOURCE_CONTROLLER_LOCALHOST" not in env


def test_status_reads_the_record_and_stop_only_touches_recorded_pids(flux: FluxLocal, tmp_path: Path) -> None:
    assert flux.status().state == "absent"
    sleeper = process.spawn("source-controller", ["sleep", "60"], log=tmp_path / "s.log")
    try:
        flux._save({"ports": flux._choose_ports(), "processes": [sleeper.to_dict()]})
        assert flux.record_path.stat().st_mode & 0o777 == 0o600
        st = flux.status()
        assert st.state == "degraded"  # one of two alive, and not answering /readyz
        assert [c.alive for c in st.components] == [True, False]
        assert flux.pids() == [sleeper.pid]
        flux.stop()
        assert not process.alive(sleeper)
        assert json.loads(flux.record_path.read_text())["processes"] == []
        assert flux.status().state == "stopped"
    finally:
        process.stop(sleeper)


def test_established() -> None:
    assert _established({"status": {"conditions": [{"type": "Established", "status": "True"}]}})
    assert not _established({"status": {"conditions": [{"type": "Established", "status": "False"}]}})
    assert not _established(None)
