"""Bare repositories for the server: created, and filled with a snapshot of a plain folder.

:func:`publish_dir` commits a folder (e.g. ``examples/gitops-repo``) on ``main``; it is
idempotent, so publishing unchanged content keeps the same revision (and Flux sees nothing new).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

from rebuild.core.errors import GitError

DEFAULT_BRANCH = "main"


def init_bare(path: Path, branch: str = DEFAULT_BRANCH) -> Path:
    """Create a bare repository (if missing) whose HEAD names ``branch``."""
    import git

    path = Path(path)
    if not (path / "HEAD").exists():
        path.mkdir(parents=True, exist_ok=True)
        git.Repo.init(path, bare=True)
    repo = git.Repo(path)
    repo.git.symbolic_ref("HEAD", f"refs/heads/{branch}")
    return path


_AUTHOR = {
    "GIT_AUTHOR_NAME": "rebuild",
    "GIT_AUTHOR_EMAIL": "rebuild@localhost",
    "GIT_COMMITTER_NAME": "rebuild",
    "GIT_COMMITTER_EMAIL": "rebuild@localhost",
}


def publish_dir(src_dir: Path, bare_repo: Path, message: str, *, branch: str = DEFAULT_BRANCH) -> str:
    """Commit a snapshot of ``src_dir`` to ``branch`` of ``bare_repo``; return the head commit sha.

    The folder needs no git metadata of its own (its ``.gitignore`` is honoured). When the
    snapshot's tree equals the branch head's tree, nothing is committed and the existing head
    is returned, so publishing is idempotent.
    """
    import git

    src = Path(src_dir).resolve()
    if not src.is_dir():
        raise GitError(f"cannot publish {src}: not a folder", fix="pass the folder holding the manifests")
    init_bare(Path(bare_repo), branch)
    repo = git.Repo(bare_repo)
    ref = f"refs/heads/{branch}"
    try:
        parent: str | None = repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
    except git.GitCommandError:
        parent = None
    # The index of the last snapshot of this folder is kept beside the bare repo: with it, `git
    # add` re-reads only files whose size or mtime changed (a 10,000-object folder: about 0.1 s
    # instead of hashing every file again). Each run works on its own copy, so two runs never
    # contend for one index lock; the copy is kept once it produced a tree.
    kept = Path(bare_repo) / "rebuild-publish" / (hashlib.sha256(str(src).encode()).hexdigest()[:16] + ".index")
    with tempfile.TemporaryDirectory(prefix="rebuild-publish-") as tmp:
        index = Path(tmp) / "index"
        if kept.is_file():
            shutil.copy2(kept, index)  # with its mtime: git's racy-file check depends on it
        env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(src), **_AUTHOR}
        try:
            with repo.git.custom_environment(**env):
                repo.git.add("--all", ".")
                tree = repo.git.write_tree()
                kept.parent.mkdir(exist_ok=True)
                # not adapters.fs.atomic_write: the copy must keep the index's mtime (copy2)
                fresh = kept.with_name(f".{os.getpid()}.{threading.get_ident()}.{kept.name}")
                shutil.copy2(index, fresh)
                os.replace(fresh, kept)
                if parent and repo.git.rev_parse(f"{parent}^{{tree}}") == tree:
                    return parent
                args = [tree, "-m", message] + (["-p", parent] if parent else [])
                sha = str(repo.git.commit_tree(*args))
                # compare-and-swap: a concurrent push in between fails loudly instead of being lost
                repo.git.update_ref(ref, sha, parent or "0" * 40, "-m", f"publish: {message}")
        except git.GitCommandError as exc:
            raise GitError(
                f"publishing {src} to {bare_repo} failed: {str(exc.stderr).strip()}", fix="check the folder and the repository"
            ) from exc
    return sha
