"""The one way rebuild writes a file that matters: atomically, owner-only by default.

Reports, runbook state, the render cache, passphrases, keys and kubeconfigs are all read back
by something (a browser, CI, a resumed runbook, the next run). Writing through a temporary
file in the same folder, fsynced and renamed over the target, means a reader sees the old file
or the new one, never half of one, even when the process is killed or the disk fills mid-write;
the temporary file is created 0600 (mkstemp), so a secret is never readable by others, even
briefly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o600) -> None:
    """Write via a temporary file in the same folder, fsync, then rename over the target.

    A reader (a browser, CI, a resumed runbook) sees either the old file or the new one,
    never half of one, even if the process is killed mid-write. Owner-only by default:
    results name internal objects and repositories.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
