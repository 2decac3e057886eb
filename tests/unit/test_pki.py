from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509

from rebuild.clusters import pki


def test_generate_writes_private_files_with_expected_identities(tmp_path: Path) -> None:
    paths = pki.PKIPaths(tmp_path / "pki")
    pki.generate(paths, "demo")
    assert paths.complete()
    for f in (paths.dir).iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    server = x509.load_pem_x509_certificate(paths.server_crt.read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.0.0.1"]
    admin = x509.load_pem_x509_certificate(paths.admin_crt.read_bytes())
    orgs = admin.subject.get_attributes_for_oid(x509.oid.NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]


def test_generate_is_idempotent(tmp_path: Path) -> None:
    paths = pki.PKIPaths(tmp_path / "pki")
    pki.generate(paths, "demo")
    before = paths.ca_crt.read_bytes()
    pki.generate(paths, "demo")
    assert paths.ca_crt.read_bytes() == before
