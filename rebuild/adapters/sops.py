"""SOPS: decrypt a file of the repo in memory, encrypt a new value for the repo's ``.sops.yaml`` rule.

Why one module, and why these rules: most Flux repositories keep their Secrets encrypted with
SOPS, and rebuild must read them (``verify`` compares a live Secret with the value git declares)
and may write them (``capture`` proposes a changed value), while never holding a plaintext
anywhere but in memory. This is the only module that runs ``sops`` and ``age-keygen``, so the
rules live in one place:

- the plaintext travels through pipes only: ``sops`` reads the encrypted (or plain) text on
  stdin (``/dev/stdin``) and writes its result to stdout, which is returned as bytes and never
  written to a file, logged or put in an error message;
- the private key reaches ``sops`` as a file path in ``SOPS_AGE_KEY_FILE`` in the child's
  environment, never argv (``/proc/<pid>/cmdline`` is world-readable); recipients (public keys)
  may be in argv;
- the child's environment is built from nothing: no ``HOME``/``XDG_CONFIG_HOME`` (so sops cannot
  fall back to ``~/.config/sops/age/keys.txt`` or ``~/.ssh/id_ed25519``), no ``SOPS_AGE_KEY`` of
  the operator's shell, no cloud credentials. A decrypt that succeeds here succeeds with exactly
  the key rebuild hands to Flux (``reconciler.sops_age_key_file``), not with whatever key the
  person running the drill happens to have;
- ``--config /dev/null``: sops never looks for a ``.sops.yaml`` of its own (it would search
  from its working directory); the rule comes from :func:`creation_rule`, which reads the repo's
  ``.sops.yaml`` with sops's own semantics, and is passed as explicit flags.

Whole documents are read as YAML (and JSON, which sops's YAML store reads); a
secretGenerator's files are decrypted in their own format (dotenv, INI, binary, as
kustomize-controller does); only YAML documents are written. Only age recipients are supported
for writing: a rule that also (or only) names PGP, KMS or Vault keys is refused rather than
silently dropping those recipients.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import yaml

from rebuild.core.errors import ConfigError, RebuildError, ToolchainError
from rebuild.core.yamlload import YamlLoadError, load_all
from rebuild.toolchain.registry import ToolPaths

SOPS_CONFIG = ".sops.yaml"
TIMEOUT = 60.0  # seconds; a local age decrypt takes milliseconds, nothing here is retried
# sops's exit status when no master key could decrypt the data key (cmd/sops/codes: CouldNotRetrieveKey).
EXIT_NO_KEY = 128
EXIT_MAC_MISMATCH = 51
# A value that does not decrypt (its ENC[...] text edited by hand, or not ENC[...] text at all).
EXIT_DECRYPTING_TREE = 25
# A HOME and XDG_CONFIG_HOME that do not exist: sops's fallback key locations are then absent.
NO_HOME = "/nonexistent"

# The creation-rule fields that choose which values get encrypted; sops allows at most one per rule.
SELECTORS = (
    "encrypted_regex",
    "unencrypted_regex",
    "encrypted_suffix",
    "unencrypted_suffix",
    "encrypted_comment_regex",
    "unencrypted_comment_regex",
)
# Key types besides age, as a flat creation rule names them and as a key group does.
OTHER_KEYS = ("pgp", "kms", "gcp_kms", "azure_keyvault", "hc_vault_transit_uri", "hckms")
OTHER_GROUP_KEYS = ("pgp", "kms", "gcp_kms", "azure_keyvault", "hc_vault", "hckms")


@dataclass(frozen=True)
class Rule:
    """The ``creation_rules`` entry of ``.sops.yaml`` that applies to a file, as sops reads it.

    ``source`` is where it is written (``.sops.yaml:7``) for messages. ``age`` are the age
    recipients; ``other_keys`` the other key types the rule names (``pgp``, ``kms``, ...);
    ``key_groups`` how many key groups it declares (0: the flat form)."""

    source: str
    path_regex: str
    age: tuple[str, ...] = ()
    other_keys: tuple[str, ...] = ()
    key_groups: int = 0
    shamir_threshold: int = 0
    encrypted_regex: str = ""
    unencrypted_regex: str = ""
    encrypted_suffix: str = ""
    unencrypted_suffix: str = ""
    encrypted_comment_regex: str = ""
    unencrypted_comment_regex: str = ""
    mac_only_encrypted: bool = False

    def selector_flags(self) -> list[str]:
        """The sops flags for which values to encrypt (none: sops's default, all but ``*_unencrypted``)."""
        flags: list[str] = []
        for name in SELECTORS:
            value = getattr(self, name)
            if value:
                flags.append(f"--{name.replace('_', '-')}={value}")  # one word: a value may start with "-"
        if self.mac_only_encrypted:
            flags.append("--mac-only-encrypted")
        return flags


def is_sops_document(data: object) -> bool:
    """Whether a loaded YAML/JSON document is SOPS-encrypted: a mapping with a top-level ``sops``
    mapping carrying ``mac`` and ``lastmodified`` (what every sops version writes)."""
    if not isinstance(data, Mapping):
        return False
    meta = data.get("sops")
    return isinstance(meta, Mapping) and "mac" in meta and "lastmodified" in meta


# ------------------------------------------------------------------------------------ .sops.yaml


def creation_rule(repo_root: Path, path_in_repo: str) -> Rule | None:
    """The rule of ``<repo_root>/.sops.yaml`` sops would use to encrypt ``path_in_repo``, or None.

    sops's semantics (``config/config.go`` of v3.13.3): the rules are tried in order and the first
    match wins (no merging); a rule without ``path_regex`` matches every file; ``path_regex`` is an
    unanchored search in the file's path relative to the folder of ``.sops.yaml``. None when there
    is no ``.sops.yaml``, it has no ``creation_rules``, or no rule matches. ``.sops.yaml`` is read
    at the top of the repository only (where people run sops from). A broken file or rule raises
    ConfigError with its line.
    """
    cfg = repo_root / SOPS_CONFIG
    try:
        raw = cfg.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{SOPS_CONFIG} cannot be read: {exc.strerror}", fix=f"check {cfg}") from exc
    return match_rule(raw, path_in_repo)


def match_rule(text: str | bytes, path_in_repo: str) -> Rule | None:
    """:func:`creation_rule` on the text of a ``.sops.yaml`` (pure)."""
    try:
        docs = load_all(text)
    except YamlLoadError as exc:
        line = exc.problems[0].line if exc.problems else 0
        raise ConfigError(f"{SOPS_CONFIG}:{line}: {exc}", fix=f"fix the YAML of {SOPS_CONFIG}") from exc
    if not docs or docs[0].data is None:
        return None
    doc = docs[0]  # sops unmarshals the first document only
    if not isinstance(doc.data, dict):
        raise ConfigError(f"{SOPS_CONFIG}:{doc.line}: expected a mapping with creation_rules", fix=_FIX_CONFIG)
    rules = doc.data.get("creation_rules")
    if rules is None:
        return None
    at = doc.lines.get(("creation_rules",), doc.line)
    if not isinstance(rules, list):
        raise ConfigError(f"{SOPS_CONFIG}:{at}: creation_rules must be a list of rules", fix=_FIX_CONFIG)
    path = _relative(path_in_repo)
    for i, rule in enumerate(rules):
        line = doc.lines.get(("creation_rules", i), at)
        where = f"{SOPS_CONFIG}:{line}"
        if not isinstance(rule, dict):
            raise ConfigError(f"{where}: a creation rule must be a mapping", fix=_FIX_CONFIG)
        pattern = rule.get("path_regex") or ""
        if not isinstance(pattern, str):
            raise ConfigError(f"{where}: path_regex must be a string", fix=_FIX_CONFIG)
        if pattern and not _compile(pattern, where).search(path):
            continue
        return _parse_rule(rule, where, pattern)
    return None


_FIX_CONFIG = f"see https://getsops.io/docs/#using-sops-yaml-conf-to-select-kms-pgp-and-age-for-new-files ({SOPS_CONFIG})"


def _relative(path_in_repo: str) -> str:
    """The path as sops matches it: relative to the folder of .sops.yaml, with ``/``."""
    p = str(PurePosixPath(path_in_repo.replace("\\", "/")))
    return p[2:] if p.startswith("./") else p


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    """A Go (RE2) regexp as a Python one. The syntax people write in path_regex is the same in
    both; Go's end-of-text ``\\z`` is Python's ``\\Z``. What Python cannot compile is an error."""
    py = re.sub(r"(?<!\\)((?:\\\\)*)\\z", r"\1\\Z", pattern)
    try:
        return re.compile(py)
    except re.error as exc:
        raise ConfigError(f"{where}: path_regex {pattern!r} is not a valid regular expression ({exc})", fix=_FIX_CONFIG) from exc


def _key_list(value: object, name: str, where: str) -> list[str]:
    """A key field: a comma-separated string or a list of strings (each may hold commas too, as
    sops joins the list with commas before splitting); blanks dropped."""
    if value is None:
        return []
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise ConfigError(f"{where}: {name} must be a string or a list of strings", fix=_FIX_CONFIG)
    return [k.strip() for item in items for k in item.split(",") if k.strip()]


def _group_keys(group: object, where: str, age: list[str], other: set[str]) -> None:
    if not isinstance(group, dict):
        raise ConfigError(f"{where}: each key_groups entry must be a mapping", fix=_FIX_CONFIG)
    ages = group.get("age")
    if ages is not None and not isinstance(ages, list):
        raise ConfigError(f"{where}: age in a key group must be a list of recipients", fix=_FIX_CONFIG)
    age += _key_list(ages, "age", where)
    for name in OTHER_GROUP_KEYS:
        if group.get(name):
            other.add(name)
    merge = group.get("merge") or []
    if not isinstance(merge, list):
        raise ConfigError(f"{where}: merge in a key group must be a list of key groups", fix=_FIX_CONFIG)
    for sub in merge:
        _group_keys(sub, where, age, other)


def _parse_rule(rule: dict[str, Any], where: str, pattern: str) -> Rule:
    age: list[str] = []
    other: set[str] = set()
    groups = rule.get("key_groups") or []
    if not isinstance(groups, list):
        raise ConfigError(f"{where}: key_groups must be a list", fix=_FIX_CONFIG)
    if groups:  # sops then ignores the flat key fields
        for group in groups:
            _group_keys(group, where, age, other)
    else:
        age = _key_list(rule.get("age"), "age", where)
        other = {name for name in OTHER_KEYS if _key_list(rule.get(name), name, where)}
    selectors: dict[str, str] = {}
    for name in SELECTORS:
        value = rule.get(name) or ""
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string", fix=_FIX_CONFIG)
        if value:
            selectors[name] = value
    if len(selectors) > 1:
        raise ConfigError(
            f"{where}: the rule sets {' and '.join(selectors)}; sops allows only one of "
            "encrypted_suffix, unencrypted_suffix, encrypted_regex, unencrypted_regex, "
            "encrypted_comment_regex, unencrypted_comment_regex per rule",
            fix=_FIX_CONFIG,
        )
    threshold = rule.get("shamir_threshold") or 0
    if not isinstance(threshold, int) or isinstance(threshold, bool):
        raise ConfigError(f"{where}: shamir_threshold must be a number", fix=_FIX_CONFIG)
    return Rule(
        source=where,
        path_regex=pattern,
        age=tuple(dict.fromkeys(age)),  # sops de-duplicates a key group's keys
        other_keys=tuple(sorted(other)),
        key_groups=len(groups),
        shamir_threshold=threshold,
        encrypted_regex=selectors.get("encrypted_regex", ""),
        unencrypted_regex=selectors.get("unencrypted_regex", ""),
        encrypted_suffix=selectors.get("encrypted_suffix", ""),
        unencrypted_suffix=selectors.get("unencrypted_suffix", ""),
        encrypted_comment_regex=selectors.get("encrypted_comment_regex", ""),
        unencrypted_comment_regex=selectors.get("unencrypted_comment_regex", ""),
        mac_only_encrypted=bool(rule.get("mac_only_encrypted")),
    )


# ------------------------------------------------------------------------------------ running sops


def sops_env(age_key_file: Path | None = None) -> dict[str, str]:
    """The whole environment of a sops child: the key file (if any) and nothing of ours."""
    # No PATH either: sops then finds no gpg, age plugin or key command to run.
    env = {"HOME": NO_HOME, "XDG_CONFIG_HOME": NO_HOME, "SOPS_DISABLE_VERSION_CHECK": "1"}
    if age_key_file is not None:
        env["SOPS_AGE_KEY_FILE"] = str(age_key_file)
    return env


def decrypt_argv(sops: Path, path_in_repo: str, *, ignore_mac: bool = False, store: str = "") -> list[str]:
    """``sops --decrypt`` of stdin to stdout; argv holds no key and no plaintext.

    ``ignore_mac``: ``--ignore-mac``, sops's integrity check of the whole document skipped (what
    Flux's kustomize-controller does, see :func:`decrypt`). ``store``: read and write that sops
    format (``dotenv``, ``binary``, ``ini``, ``json``, ``yaml``: a secretGenerator's file, decrypted
    in its own format as kustomize-controller does); "" reads YAML/JSON by the file's name and
    writes YAML."""
    kind, out = (store, store) if store else (_store(path_in_repo), "yaml")
    return [
        str(sops), "--config", "/dev/null", "--decrypt", *(["--ignore-mac"] if ignore_mac else []),
        "--input-type", kind, "--output-type", out,
        f"--filename-override={path_in_repo}", "/dev/stdin",
    ]  # fmt: skip


def encrypt_argv(sops: Path, rule: Rule, path_in_repo: str) -> list[str]:
    """``sops --encrypt`` of stdin to stdout for the rule's age recipients (public keys)."""
    return [
        str(sops), "--config", "/dev/null", "--encrypt",
        "--input-type", "yaml", "--output-type", _store(path_in_repo),
        "--age=" + ",".join(rule.age), *rule.selector_flags(),
        f"--filename-override={path_in_repo}", "/dev/stdin",
    ]  # fmt: skip


def _store(path_in_repo: str) -> str:
    return "json" if path_in_repo.lower().endswith(".json") else "yaml"


def _run(argv: list[str], stdin: bytes, env: dict[str, str], what: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, env=env, cwd="/", timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolchainError(
            f"sops did not finish {what} in {TIMEOUT:.0f}s", fix="check the sops binary (`rebuild toolchain doctor`)"
        ) from exc
    except OSError as exc:
        raise ToolchainError(
            f"sops could not be started for {what}: {exc.strerror}", fix="run `rebuild toolchain install`"
        ) from exc


# The one sops message seen to quote a value: a value of the file that is not ENC[...] text.
_QUOTES_VALUE = re.compile(r"Input string .* does not match sops' data format", re.S)


def last_line(stderr: bytes) -> str:
    """sops's last non-empty stderr line (its error), or a placeholder; never a value."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    line = lines[-1] if lines else "no error message"
    return _QUOTES_VALUE.sub("a value is not in sops' ENC[...] format (edited by hand?)", line)


class Decrypt(Protocol):
    """:func:`decrypt`'s signature, for the callers that take it as a parameter (a fake in unit tests)."""

    def __call__(
        self,
        path_in_repo: str,
        encrypted: bytes,
        age_key_file: Path,
        *,
        toolchain: ToolPaths,
        source: str = "",
        ignore_mac: bool = False,
        store: str = "",
    ) -> bytes: ...


def decrypt(
    path_in_repo: str,
    encrypted: bytes,
    age_key_file: Path,
    *,
    toolchain: ToolPaths,
    source: str = "",
    ignore_mac: bool = False,
    store: str = "",
) -> bytes:
    """The plaintext YAML of a SOPS-encrypted file, decrypted with ``age_key_file`` only.

    ``encrypted`` is the file's text (as git holds it); the result lives in memory only (sops
    re-indents, so compare documents, not bytes). ``source`` is how messages name the file
    (``apps/secret.yaml:1``; default ``path_in_repo``). A key file that cannot be read, or whose
    key is not a recipient, raises ConfigError naming both files at once (no retries); any other
    sops failure raises ConfigError with sops's last line.

    ``ignore_mac``: skip sops's MAC, the digest of every value of the file, clear ones too.
    Flux's kustomize-controller never checks it (its decryptor's ``checkSopsMac`` is off: "arbitrary
    data gets injected into most resources"), so a label added to an encrypted file without sops
    is applied by Flux; verify decrypts the same way. A value whose own ciphertext was edited still
    fails (AES-GCM authenticates each value).

    ``store``: the file's sops format when it is not YAML/JSON by its name (see :func:`decrypt_argv`);
    the plaintext then comes back in that format (a dotenv file as ``KEY=value`` lines).
    """
    name = source or path_in_repo
    key = Path(age_key_file).absolute()  # sops runs in / (no working folder of ours)
    problem = _unreadable(key)
    if problem:
        raise ConfigError(
            f"cannot decrypt {name}: the age key file {key} cannot be read ({problem})",
            fix="check reconciler.sops_age_key_file in rebuild.yaml (a file made by age-keygen)",
        )
    sops = toolchain.binary("sops")
    proc = _run(
        decrypt_argv(sops, path_in_repo, ignore_mac=ignore_mac, store=store), encrypted, sops_env(key), f"decrypting {name}"
    )
    if proc.returncode == 0:
        return proc.stdout
    if proc.returncode == EXIT_NO_KEY:
        raise wrong_key_error(name, key, file_recipients(encrypted), _public_keys(key, toolchain))
    fix = f"run `SOPS_AGE_KEY_FILE={key} sops --decrypt {path_in_repo}` to see sops's whole message"
    if proc.returncode in (EXIT_MAC_MISMATCH, EXIT_DECRYPTING_TREE):
        fix = f"{path_in_repo} was changed without sops: re-create the value with `sops edit {path_in_repo}`"
    raise ConfigError(f"cannot decrypt {name}: sops: {last_line(proc.stderr)}", fix=fix)


def wrong_key_error(name: str, key: Path, recipients: list[str], public: list[str] | None) -> ConfigError:
    """The error for "this key cannot decrypt this file", with both sides' public keys when known.

    ``public`` is the key file's public keys (``age-keygen -y``); ``[]`` when the file holds no
    age key, None when they could not be derived."""
    if public == []:
        detail = f"{key} holds no age private key"
    else:
        detail = f"the age key in {key}" + (f" ({', '.join(public)})" if public else "") + f" is not a recipient of {name}"
    if recipients:
        detail += f"; it is encrypted for {', '.join(recipients)}"
    return ConfigError(
        f"cannot decrypt {name}: {detail}",
        fix=(
            f"the age key in {key} is not a recipient of {name}: "
            f"check reconciler.sops_age_key_file / the {SOPS_CONFIG} recipients"
        ),
    )


def file_recipients(encrypted: bytes) -> list[str]:
    """The recipients a SOPS file is encrypted for, from its (clear) metadata: age public keys,
    and the names of other key types (``pgp``, ``kms``...). Empty when it cannot be read."""
    try:
        docs = list(yaml.safe_load_all(encrypted))
    except yaml.YAMLError:
        return []
    out: list[str] = []
    for doc in docs:
        if not is_sops_document(doc):
            continue
        meta = doc["sops"]
        groups = meta.get("key_groups") if isinstance(meta.get("key_groups"), list) else [meta]
        for group in groups:
            if not isinstance(group, Mapping):
                continue
            for entry in group.get("age") or []:
                if isinstance(entry, Mapping) and entry.get("recipient"):
                    out.append(str(entry["recipient"]))
            out += [k for k in ("pgp", "kms", "gcp_kms", "azure_kv", "hc_vault", "hckms") if group.get(k)]
    return list(dict.fromkeys(out))


def _unreadable(key: Path) -> str:
    """Why ``key`` cannot serve as SOPS_AGE_KEY_FILE, or "" (only stat and open, nothing read)."""
    try:
        with key.open("rb"):
            pass
    except IsADirectoryError:
        return "it is a folder"
    except OSError as exc:
        return exc.strerror or str(exc)
    return "" if key.is_file() else "not a regular file"


def _public_keys(key: Path, toolchain: ToolPaths) -> list[str] | None:
    """The public keys of an age key file (``age-keygen -y FILE``: the path in argv, not the key);
    [] when it holds none, None when age-keygen is missing or failed otherwise."""
    try:
        keygen = toolchain.binary("age", "age-keygen")
    except RebuildError:
        return None
    try:
        proc = subprocess.run(
            [str(keygen), "-y", str(key)], capture_output=True, env=sops_env(), cwd="/", timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace")
        return [] if ("unknown identity type" in err or "no identities" in err) else None
    return [ln.strip() for ln in proc.stdout.decode().splitlines() if ln.strip()]


def encrypt(plaintext: bytes, rule: Rule, path_in_repo: str, *, toolchain: ToolPaths) -> bytes:
    """``plaintext`` (a YAML document) encrypted for ``rule``'s age recipients with its selector
    (e.g. ``encrypted_regex: ^(data|stringData)$``), as the text to commit at ``path_in_repo``.

    The plaintext goes to sops on stdin and the ciphertext comes back on stdout: no temporary
    file. Only age recipients can be written: a rule naming PGP/KMS/Vault keys (alone or beside
    age) or several key groups raises ConfigError saying so.
    """
    fix = f"encrypt {path_in_repo} by hand with sops, or give the {SOPS_CONFIG} rule ({rule.source}) age recipients only"
    if rule.key_groups > 1:
        raise ConfigError(
            f"the {SOPS_CONFIG} rule for {path_in_repo} ({rule.source}) splits the data key over "
            f"{rule.key_groups} key groups; rebuild writes SOPS files for one group of age recipients only",
            fix=fix,
        )
    if rule.other_keys and not rule.age:
        raise ConfigError(
            f"the {SOPS_CONFIG} rule for {path_in_repo} ({rule.source}) has no age recipients, only "
            f"{', '.join(rule.other_keys)}; rebuild can encrypt only for age recipients",
            fix=fix,
        )
    if rule.other_keys:
        raise ConfigError(
            f"the {SOPS_CONFIG} rule for {path_in_repo} ({rule.source}) also names {', '.join(rule.other_keys)} keys; "
            "rebuild can encrypt only for age recipients, and a file for those alone would lock the others out",
            fix=fix,
        )
    if not rule.age:
        raise ConfigError(f"the {SOPS_CONFIG} rule for {path_in_repo} ({rule.source}) names no recipients", fix=fix)
    sops = toolchain.binary("sops")
    proc = _run(encrypt_argv(sops, rule, path_in_repo), plaintext, sops_env(), f"encrypting {path_in_repo}")
    if proc.returncode != 0:
        raise ConfigError(
            f"cannot encrypt {path_in_repo} for the {SOPS_CONFIG} rule at {rule.source}: sops: {last_line(proc.stderr)}",
            fix=f"check that rule's recipients and {'/'.join(SELECTORS[:2])}",
        )
    try:
        docs = list(yaml.safe_load_all(proc.stdout))
    except yaml.YAMLError:
        docs = []
    if not docs or not all(is_sops_document(d) for d in docs):
        raise ToolchainError(
            f"sops returned no SOPS document for {path_in_repo}", fix="check the sops binary (`rebuild toolchain doctor`)"
        )
    return proc.stdout
