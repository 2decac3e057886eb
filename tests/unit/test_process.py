from __future__ import annotations

import socket
from pathlib import Path

from rebuild.adapters import process


def test_spawn_and_stop_a_detached_process(tmp_path: Path) -> None:
    rec = process.spawn("sleeper", ["sleep", "60"], log=tmp_path / "s.log")
    assert process.alive(rec)
    assert process.stop(rec, timeout=5) is False  # SIGTERM was enough
    assert not process.alive(rec)


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    rec = process.spawn("sleeper", ["sleep", "60"], log=tmp_path / "s.log")
    other = process.ProcRecord(rec.name, rec.pid, rec.start_ticks + 1, rec.log)
    assert not process.alive(other)
    assert process.stop(other) is False
    assert process.alive(rec)
    process.stop(rec)


def test_port_free_and_free_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        assert not process.port_free(busy)
    p = process.free_port({busy})
    assert p != busy and process.port_free(p)
