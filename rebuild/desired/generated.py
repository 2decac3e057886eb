"""What kustomize and kustomize-controller do to a generated Secret, re-done in memory.

Why this exists: a ``secretGenerator`` may read files that are SOPS-encrypted (``envs:`` dotenv
files, ``files:`` of any format). Flux's kustomize-controller decrypts those files *before* it
runs kustomize (``internal/decryptor``: ``DecryptSources`` walks every kustomization's
``secretGenerator`` ``envs``/``files`` and writes each decrypted file back in its own format), so
the Secret it applies holds the decrypted values and, unless ``disableNameSuffixHash``, a name
whose hash suffix kustomize computed over them. rebuild renders git without decrypting anything,
so its generated Secret holds the ciphertext and a different suffix; verify compares with the
Secret these functions rebuild from the decrypted files (rebuild.recover.encrypted does the
decrypting; everything here is pure).

The facts, from the sources they come from:

- which files count as SOPS files, and their format: kustomize-controller's ``formatForPath`` is
  sops's ``FormatForPath`` (``.yaml``/``.yml``, ``.json``, ``.env``, ``.ini``, else binary; a
  ``.dockerconfigjson`` key is JSON); a ``files:`` entry takes the format of its *key*, an
  ``envs:`` file of its own path with binary read as dotenv; a file is decrypted only when it
  holds the format's marker (``sops_mac=ENC[`` for dotenv, ``mac: ENC[`` for YAML...);
- how kustomize reads a dotenv file (api/kv ``keyValuesFromLine``): leading whitespace trimmed,
  blank lines and ``#`` comments skipped, split at the first ``=``, the value kept as written;
- how a generator writes a value: base64 cut into lines of 70 characters when longer (api/kv
  ``encodeBase64``), which is what the hash sees (the API server drops the newlines);
- the hash suffix (api/hasher ``encodeSecret``): the first 10 hex digits of the sha256 of the JSON
  (Go's encoding: keys sorted, no spaces, ``<>&`` escaped) of ``kind``, ``type``, ``name``,
  ``data`` and (when a mapping) ``stringData``, with ``0 1 3 a e`` turned into ``g h k m t``.
  kustomize looks the name up as the single key ``metadata/name``, which never exists, so the
  name hashed is "" (kustomize v5.5: ``app`` with ``A=1`` is ``app-526mcbf5c2``, the hash of
  name ""). :func:`hashed_with` checks both readings against the rendered object's own suffix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

HASH_SUFFIX = re.compile(r"-([bcdfghkmnt-z2456789]{10})$")
# sops's marker of an encrypted file in each format (kustomize-controller's sopsFormatToMarkerBytes)
MARKERS = {
    "binary": b'"mac": "ENC[',
    "dotenv": b"sops_mac=ENC[",
    "ini": b"[sops]",
    "json": b'"mac": "ENC[',
    "yaml": b"mac: ENC[",
}


def store_for_path(path: str) -> str:
    """sops's format for a file name (kustomize-controller's ``formatForPath``)."""
    lower = path.lower()
    if path.endswith(".dockerconfigjson") or lower.endswith(".json"):
        return "json"
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    if lower.endswith(".env"):
        return "dotenv"
    if lower.endswith(".ini"):
        return "ini"
    return "binary"


def is_sops_file(text: bytes, store: str) -> bool:
    """Whether kustomize-controller would decrypt this file in this format."""
    return MARKERS[store] in text


def dotenv_pairs(text: bytes) -> list[tuple[str, str]]:
    """The key/value pairs kustomize reads from an env file, in order (a later key wins).

    A line without ``=`` takes its value from kustomize's environment; rebuild cannot know it and
    reads "" (never the case in a file sops wrote)."""
    out: list[tuple[str, str]] = []
    for n, raw in enumerate(text.decode("utf-8", "replace").split("\n")):
        line = raw.removesuffix("\r")
        if n == 0:
            line = line.removeprefix("\ufeff")
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        out.append((key, value))
    return out


def _go_json(value: Any) -> str:
    """``json.Marshal`` of Go for maps of strings: sorted keys, compact, HTML characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def secret_hash(body: Mapping[str, Any], name: str = "") -> str:
    """kustomize's hash suffix of a Secret (api/hasher ``encodeSecret`` then ``encode``)."""
    m: dict[str, Any] = {"kind": "Secret", "type": body.get("type") or "", "name": name, "data": body.get("data") or ""}
    if isinstance(body.get("stringData"), Mapping):
        m["stringData"] = body["stringData"]
    digest = hashlib.sha256(_go_json(m).encode()).hexdigest()
    return digest[:10].translate(str.maketrans("013ae", "ghkmt"))


def hashed_with(body: Mapping[str, Any]) -> str | None:
    """The name kustomize hashed this rendered Secret's suffix with ("" or the name without the
    suffix), or None when its name carries no suffix kustomize computed from this body."""
    meta = body.get("metadata") or {}
    m = HASH_SUFFIX.search(str(meta.get("name") or ""))
    if m is None:
        return None
    base = str(meta["name"])[: m.start()]
    for name in ("", base):
        if secret_hash(body, name) == m.group(1):
            return name
    return None


def kustomize_b64(value: bytes) -> str:
    """base64 as kustomize's generators write it (api/kv ``encodeBase64``): a text of 70
    characters or more is cut into lines of 70, each ending in a newline. The hash suffix is
    computed over this text; the API server stores it without the newlines."""
    text = base64.b64encode(value).decode()
    if len(text) < 70:
        return text
    return "".join(text[i : i + 70] + "\n" for i in range(0, len(text), 70))


def rebuilt_data(
    data: Mapping[str, str],
    envs: Sequence[tuple[bytes, bytes]],
    files: Sequence[tuple[str, bytes]],
) -> dict[str, str]:
    """A generated Secret's ``data`` as kustomize builds it from the decrypted files (values
    encoded by :func:`kustomize_b64`, so :func:`secret_hash` of it is kustomize's).

    ``envs``: (encrypted text, decrypted text) of each SOPS dotenv file: the keys kustomize read
    from the encrypted file (its values and sops's ``sops_*`` metadata keys) are replaced by the
    decrypted pairs. ``files``: (key, decrypted bytes) of each SOPS file source. Other keys
    (literals, plain files, an overlay's merge) are kept."""
    out = dict(data)
    for encrypted, plain in envs:
        for key, _ in dotenv_pairs(encrypted):
            out.pop(key, None)
        for key, value in dotenv_pairs(plain):
            out[key] = kustomize_b64(value.encode())
    for key, content in files:
        out[key] = kustomize_b64(content)
    return out


def renamed(body: Any, old: str, new: str) -> Any:
    """``body`` with every string value equal to ``old`` replaced by ``new``, outside ``metadata``
    (kustomize rewrites references to a generated name: envFrom, volumes, secretRef...; an object's
    own name is never one)."""

    def walk(node: Any, top: bool) -> Any:
        if isinstance(node, Mapping):
            return {k: (v if top and k == "metadata" else walk(v, False)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, False) for v in node]
        return new if node == old else node

    return walk(body, True)
