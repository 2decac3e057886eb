"""Where the stacks' state lives (a Pulumi backend) and how its secrets are encrypted.

Why its own module: the default is a file backend inside rebuild's state dir with a generated
passphrase, but a user's infrastructure usually keeps its state elsewhere (an S3 bucket, a
shared folder) with its own secrets provider, and a drill runs the same stacks in a throwaway
file backend. Which backend, which passphrase, and where the per-backend workspaces go (the
private copies where Pulumi writes ``Pulumi.<stack>.yaml`` with the encryption salt) are decided
here once, so two backends never share those files.

The passphrase reaches Pulumi only through the child's environment: a file
(``PULUMI_CONFIG_PASSPHRASE_FILE``) or the value of a variable of rebuild's own environment
(``PULUMI_CONFIG_PASSPHRASE``, set in the child only): never argv, never written by rebuild.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from rebuild.adapters.fs import atomic_write
from rebuild.core.errors import ConfigError
from rebuild.core.state import StateLayout

PASSPHRASE = "passphrase"
_passphrase_lock = threading.Lock()


@dataclass(frozen=True)
class Backend:
    """A Pulumi backend and its secrets provider.

    ``url``: "" is the file backend of the state dir (``StateLayout(root).pulumi_backend``);
    ``file://...``, ``s3://...``, ``gs://...``, ``azblob://...`` as Pulumi accepts them.
    ``secrets_provider``: ``passphrase`` (the default), or a provider URL (``awskms://...``)
    given to ``pulumi stack init``. With the passphrase provider a non-file backend needs
    ``passphrase_file`` or ``passphrase_env``: a generated passphrase would live only in the state
    dir, and the state would be unreadable once that is lost.
    """

    url: str = ""
    secrets_provider: str = PASSPHRASE
    passphrase_file: Path | None = None
    passphrase_env: str = ""

    def __post_init__(self) -> None:
        if self.passphrase_file is not None and self.passphrase_env:
            raise ConfigError("backend: passphrase_file and passphrase_env are both set", fix="keep one of them")
        if self.uses_passphrase and not self.is_file and self.passphrase_file is None and not self.passphrase_env:
            raise ConfigError(
                f"backend {redact_url(self.url)}: the passphrase secrets provider needs a passphrase that outlives the state dir",
                fix="set backend.passphrase_file (a 0600 file) or backend.passphrase_env (a variable holding it), "
                "or a secrets_provider such as awskms://...",
            )

    @classmethod
    def file(cls, folder: Path) -> Backend:
        """A file backend in ``folder`` with a passphrase generated inside it on first use (0700 folder, 0600 file)."""
        folder = Path(folder).resolve()
        return cls(folder.as_uri(), PASSPHRASE, folder / PASSPHRASE, "")

    @property
    def is_file(self) -> bool:
        return not self.url or self.url.startswith("file:")

    @property
    def uses_passphrase(self) -> bool:
        return self.secrets_provider in ("", PASSPHRASE, "default")

    def folder(self, root: Path) -> Path | None:
        """The folder of a file backend (the state dir's for url ""), None for any other backend."""
        if not self.url:
            return StateLayout(root).pulumi_backend
        if not self.url.startswith("file:"):
            return None
        parsed = urlparse(self.url)
        path = unquote(parsed.path) if parsed.netloc in ("", "localhost") else unquote(parsed.netloc + parsed.path)
        return Path(os.path.expanduser(path)).resolve()

    def resolved_url(self, root: Path) -> str:
        folder = self.folder(root)
        return folder.as_uri() if folder is not None and not self.url else self.url

    def is_default(self, root: Path) -> bool:
        """Whether this is the state dir's own file backend (however it was spelled)."""
        folder = self.folder(root)
        return folder is not None and folder == StateLayout(root).pulumi_backend.resolve()

    def passphrase_path(self, root: Path) -> Path | None:
        """The passphrase file the child reads: the one configured, else ``passphrase`` in a file backend's folder."""
        if not self.uses_passphrase or self.passphrase_env:
            return None
        if self.passphrase_file is not None:
            return self.passphrase_file
        folder = self.folder(root)
        return folder / PASSPHRASE if folder is not None else None

    def workspaces(self, root: Path) -> Path:
        """Where the private copies of the programs live for this backend.

        The state dir's backend keeps ``<root>/stacks/`` (state dirs made before backends could
        be chosen keep working); another file backend keeps them in its own folder, so a drill's
        throwaway backend and its workspaces go away together; any other backend gets
        ``<root>/stacks/backend-<hash of its URL>/``. Two backends never share a
        ``Pulumi.<stack>.yaml`` (its salt belongs to one backend's checkpoint).
        """
        if self.is_default(root):
            return root / "stacks"
        folder = self.folder(root)
        if folder is not None:
            return folder / ".rebuild" / "stacks"
        return root / "stacks" / f"backend-{url_key(self.url)}"

    def env(self, root: Path) -> dict[str, str]:
        """The child's backend variables (PULUMI_BACKEND_URL and the passphrase); reads the variable named by passphrase_env."""
        env = {"PULUMI_BACKEND_URL": self.resolved_url(root)}
        if self.uses_passphrase:
            if self.passphrase_env:
                value = os.environ.get(self.passphrase_env, "")
                if not value:
                    raise ConfigError(
                        f"backend: variable ${self.passphrase_env} (passphrase_env) is not set",
                        fix=f"export {self.passphrase_env}=<the stacks' passphrase> before running rebuild",
                    )
                env["PULUMI_CONFIG_PASSPHRASE"] = value
            else:
                path = self.passphrase_path(root)
                if path is not None:
                    env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(path)
        return env

    def ensure(self, root: Path) -> None:
        """Make a file backend's folder (0700) and its generated passphrase (0600) if missing; check a given passphrase file."""
        folder = self.folder(root)
        generated = folder / PASSPHRASE if folder is not None else None
        try:
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                # Stack state holds encrypted secrets and the layout of the infrastructure: owner only.
                folder.chmod(0o700)
            path = self.passphrase_path(root)
            if path is not None and path == generated:
                create_passphrase(path)
        except OSError as exc:
            raise ConfigError(
                f"the Pulumi state folder {folder} is not writable ({exc.strerror})",
                fix="set REBUILD_STATE_DIR (or --state-dir) to a writable folder",
            ) from exc
        path = self.passphrase_path(root)
        if path is not None and not path.is_file():
            raise ConfigError(
                f"backend: the passphrase file {path} does not exist",
                fix="create it (mode 0600) with the stacks' passphrase, or point passphrase_file at it",
            )


def create_passphrase(path: Path) -> bool:
    """Write a new random passphrase to ``path`` unless one exists; True when written.

    Two stacks started at once in one backend (threads, or two runs) must end with one
    passphrase, not the last writer's: the file is written aside and linked into place, which
    fails when another writer won. Encrypts secret outputs (kubeconfigs); 0600, never logged.
    """
    with _passphrase_lock:
        if path.exists():
            return False
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_urlsafe(32))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        finally:
            Path(tmp).unlink(missing_ok=True)
    return True


def url_key(url: str) -> str:
    """A short, stable name for a backend URL (a folder name)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]


def redact_url(url: str) -> str:
    """A backend URL as it may be shown: no user:password, no query (it can hold keys)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    if parsed.port:
        host += f":{parsed.port}"
    return f"{parsed.scheme}://{host}{parsed.path}" if parsed.scheme else url


def restore_stack_settings(st: Any, stack_file: Path) -> bool:
    """Write a missing ``Pulumi.<stack>.yaml``'s secrets settings from the stack's checkpoint; True if written.

    The workspace copy (and with it the stack file holding the passphrase salt, or a KMS
    provider's encrypted data key) is lost with the state dir, while the backend keeps the
    checkpoint, which records the same settings (``secrets_providers``). Pulumi v3.274.1 copes
    with a missing salt by making a new one (checked: the secrets stay readable with the same
    passphrase), but a cloud provider's key cannot be remade; restoring both keeps the stack
    file and the checkpoint in agreement. A new stack has no checkpoint settings: nothing is written.
    """
    dep = st.export_stack()
    settings = stack_settings((dep.deployment or {}).get("secrets_providers"))
    if not settings:
        return False
    import yaml

    atomic_write(stack_file, yaml.safe_dump(settings, sort_keys=False))
    return True


def stack_settings(providers: Any) -> dict[str, str]:
    """A checkpoint's ``secrets_providers`` as the keys of ``Pulumi.<stack>.yaml``."""
    if not isinstance(providers, Mapping):
        return {}
    state = providers.get("state")
    if not isinstance(state, Mapping):
        return {}
    kind = providers.get("type")
    if kind == "passphrase" and isinstance(state.get("salt"), str):
        return {"encryptionsalt": state["salt"]}
    if kind == "cloud" and isinstance(state.get("url"), str) and isinstance(state.get("encryptedkey"), str):
        return {"secretsprovider": state["url"], "encryptedkey": state["encryptedkey"]}
    return {}
