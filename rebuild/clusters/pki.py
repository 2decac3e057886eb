"""Certificates and keys for a local control plane.

A local cluster needs a CA, a serving certificate for kube-apiserver, one client
certificate for the admin (used by the controllers, kwok and rebuild itself) and a
service-account signing key pair; ``issue_client`` adds a client certificate for another
user (a cluster whose kubeconfig must not be in system:masters, see clusters/local.py).
Everything is ECDSA P-256, made in-process with ``cryptography`` (no openssl/cfssl
binaries to depend on) and written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rebuild.adapters.fs import atomic_write

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class PKIPaths:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_crt(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def complete(self) -> bool:
        files = (self.ca_crt, self.ca_key, self.server_crt, self.server_key, self.admin_crt, self.admin_key)
        return all(p.exists() for p in (*files, self.sa_key, self.sa_pub))


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def generate(paths: PKIPaths, cluster: str) -> None:
    """Create every certificate and key the local control plane needs (idempotent: keeps existing ones)."""
    if paths.complete():
        return
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = _key()
    ca_name = _name(f"rebuild-local-{cluster}-ca")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY * 10)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_crt, server_key = _leaf(ca_key, ca_name, now, "kube-apiserver", None, server=True)
    admin_crt, admin_key = _leaf(ca_key, ca_name, now, "rebuild-admin", "system:masters", server=False)
    sa = _key()
    atomic_write(paths.ca_key, _pem_key(ca_key))
    atomic_write(paths.ca_crt, ca.public_bytes(serialization.Encoding.PEM))
    atomic_write(paths.server_crt, server_crt)
    atomic_write(paths.server_key, server_key)
    atomic_write(paths.admin_crt, admin_crt)
    atomic_write(paths.admin_key, admin_key)
    atomic_write(paths.sa_key, _pem_key(sa))
    atomic_write(
        paths.sa_pub,
        sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, now: dt.datetime, cn: str, org: str | None, server: bool
) -> tuple[bytes, bytes]:
    """A certificate (PEM) and its key (PEM) signed by the CA: client auth, plus serving with ``server``."""
    key = _key()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, org))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        sans: list[x509.GeneralName] = [
            x509.DNSName(n)
            for n in (
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            )
        ]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "10.0.0.1")]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def issue_client(paths: PKIPaths, crt: Path, key: Path, cn: str, org: str | None = None) -> None:
    """A client certificate for user ``cn`` (group ``org``) signed by the cluster's CA, written to
    ``crt``/``key`` (idempotent: keeps existing ones)."""
    if crt.exists() and key.exists():
        return
    ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{paths.ca_key} is not an ECDSA key")
    ca = x509.load_pem_x509_certificate(paths.ca_crt.read_bytes())
    cert_pem, key_pem = _leaf(ca_key, ca.subject, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5), cn, org, server=False)
    atomic_write(key, key_pem)
    atomic_write(crt, cert_pem)
