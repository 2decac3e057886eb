"""The local provider's load-test settings, without starting anything: extra kube-apiserver
flags are checked (the listener cannot be moved off 127.0.0.1 or its port), both settings
come back from the cluster record on a restart, and an rbac_admin cluster hands out a
kubeconfig whose user is signed by the cluster CA but is not in system:masters."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from rebuild.adapters import process
from rebuild.clusters import pki
from rebuild.clusters.local import OPERATOR_USER, LocalCluster, check_apiserver_args
from rebuild.core.errors import ConfigError

THROTTLE = ("--max-requests-inflight=2", "--max-mutating-requests-inflight=1")


def test_flags_are_accepted_as_given() -> None:
    assert check_apiserver_args(list(THROTTLE), "c") == THROTTLE
    assert check_apiserver_args(["--v=2", "--enable-garbage-collector"], "c") == ("--v=2", "--enable-garbage-collector")
    assert LocalCluster("c", root=Path("/nonexistent"), apiserver_args=THROTTLE).apiserver_args == THROTTLE


@pytest.mark.parametrize(
    ("arg", "why"),
    [
        ("--bind-address=0.0.0.0", "cannot be set"),
        ("--secure-port=443", "cannot be set"),
        ("--advertise-address=10.1.2.3", "cannot be set"),
        ("--bind-address", "cannot be set"),
        ("max-requests-inflight=2", "is not a flag"),
        ("-v=2", "is not a flag"),
        ("--", "is not a flag"),
        ("---x", "is not a flag"),
        ("--=1", "is not a flag"),
        (2, "is not a flag"),
    ],
)
def test_bad_or_fixed_flags_are_refused(arg: object, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_apiserver_args([arg], "c")
    assert why in err.value.message and err.value.fix
    if isinstance(arg, str):
        with pytest.raises(ConfigError):
            LocalCluster("c", root=Path("/nonexistent"), apiserver_args=(arg,))


def test_settings_come_from_the_record_unless_given(tmp_path: Path) -> None:
    fresh = LocalCluster("c", root=tmp_path)
    assert fresh._settings() == ((), False)
    process.save_record(fresh.record_path, {"name": "c", "apiserver_args": list(THROTTLE), "rbac_admin": True})
    assert LocalCluster("c", root=tmp_path)._settings() == (THROTTLE, True)  # a restart keeps them
    assert LocalCluster("c", root=tmp_path, apiserver_args=(), rbac_admin=False)._settings() == ((), False)
    process.save_record(fresh.record_path, {"name": "c", "apiserver_args": ["--secure-port=1"]})
    with pytest.raises(ConfigError):  # a tampered record is refused, not obeyed
        LocalCluster("c", root=tmp_path)._settings()


def _user(kubeconfig: Path) -> x509.Certificate:
    doc = yaml.safe_load(kubeconfig.read_text())
    return x509.load_pem_x509_certificate(base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]))


def test_rbac_admin_kubeconfig_is_not_system_masters(tmp_path: Path) -> None:
    c = LocalCluster("c", root=tmp_path, rbac_admin=True)
    pki.generate(c.pki, c.name)
    c._write_kubeconfig(6443, rbac_admin=True)
    ca = x509.load_pem_x509_certificate(c.pki.ca_crt.read_bytes())
    operator, system = _user(c.kubeconfig()), _user(c.system_kubeconfig())
    assert operator.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == OPERATOR_USER
    assert operator.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []
    assert operator.issuer == ca.subject
    operator.verify_directly_issued_by(ca)
    assert [a.value for a in system.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:masters"]
    # Without rbac_admin both kubeconfigs are the system:masters admin.
    c._write_kubeconfig(6443, rbac_admin=False)
    assert _user(c.kubeconfig()) == _user(c.system_kubeconfig())
