"""What a file-backend write cut short (kill -9, a full disk) leaves behind is repaired before
Pulumi reads it, and nothing whole is ever deleted. Pure file logic: no Pulumi needed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rebuild.adapters.pulumi import Pulumi


def backend(tmp_path: Path) -> tuple[Pulumi, Path, Path]:
    p = Pulumi(root=tmp_path)
    stacks = tmp_path / "pulumi" / ".pulumi" / "stacks" / "rebuild-platform"
    locks = tmp_path / "pulumi" / ".pulumi" / "locks" / "organization" / "rebuild-platform" / "demo"
    stacks.mkdir(parents=True)
    locks.mkdir(parents=True)
    return p, stacks, locks


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_stale_tmp_files_are_removed_fresh_ones_kept(tmp_path: Path) -> None:
    p, stacks, locks = backend(tmp_path)
    stale_lock = locks / "b053.json.18eb.tmp"
    stale_lock.write_bytes(b"")
    age(stale_lock, 30)
    stale_ckpt = stacks / "demo.json.77aa.tmp"
    stale_ckpt.write_bytes(b"{")
    age(stale_ckpt, 30)
    live = locks / "c111.json.99ff.tmp"  # a write in progress right now
    live.write_bytes(b"")
    fixed = p.repair_state_files("rebuild-platform", "demo")
    assert not stale_lock.exists() and not stale_ckpt.exists() and live.exists()
    assert len(fixed) == 2 and all("cut short" in f for f in fixed)


def test_truncated_checkpoint_restored_from_bak_then_backups(tmp_path: Path) -> None:
    p, stacks, _ = backend(tmp_path)
    ckpt = stacks / "demo.json"
    ckpt.write_text("")
    (stacks / "demo.json.bak").write_text('{"version": 3, "checkpoint": {"n": "bak"}}')
    assert p.repair_state_files("rebuild-platform", "demo") == ["restored demo.json from demo.json.bak"]
    assert json.loads(ckpt.read_text())["checkpoint"]["n"] == "bak"

    ckpt.write_text('{"version": 3, "chec')
    (stacks / "demo.json.bak").write_text("")
    backups = tmp_path / "pulumi" / ".pulumi" / "backups" / "rebuild-platform" / "demo"
    backups.mkdir(parents=True)
    (backups / "demo.100.json").write_text('{"version": 3, "checkpoint": {"n": "old"}}')
    age(backups / "demo.100.json", 60)
    (backups / "demo.200.json").write_text('{"version": 3, "checkpoint": {"n": "new"}}')
    assert p.repair_state_files("rebuild-platform", "demo") == ["restored demo.json from demo.200.json"]
    assert json.loads(ckpt.read_text())["checkpoint"]["n"] == "new"


def test_unreadable_checkpoint_without_any_copy_is_moved_aside_not_deleted(tmp_path: Path) -> None:
    p, stacks, _ = backend(tmp_path)
    (stacks / "demo.json").write_text("{not json")
    (stacks / "demo.json.attrs").write_text('{"user.cache_control": ""}')
    fixed = p.repair_state_files("rebuild-platform", "demo")
    assert len(fixed) == 1 and "moved the unreadable demo.json" in fixed[0]
    assert not (stacks / "demo.json").exists()
    aside = list(stacks.glob("demo.json.broken-*"))
    assert len(aside) == 1 and aside[0].read_text() == "{not json"


def test_whole_state_is_left_alone(tmp_path: Path) -> None:
    p, stacks, locks = backend(tmp_path)
    (stacks / "demo.json").write_text('{"version": 3}')
    (stacks / "demo.json.attrs").write_text("{}")
    (locks / "a.json").write_text('{"pid": 1}')
    assert p.repair_state_files("rebuild-platform", "demo") == []
    assert sorted(f.name for f in stacks.iterdir()) == ["demo.json", "demo.json.attrs"]
    assert (locks / "a.json").exists()
