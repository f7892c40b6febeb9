"""The cluster's PKI and admin credential, made on first start and kept in the data dir.

One CA signs the API server's serving certificate; clients authenticate with a
bearer token (the admin token here, service-account tokens later). A later start
reuses everything, so kubeconfigs written earlier stay valid.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class Credentials:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    admin_token: str
    service_account_key: Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _make_ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = pki / "ca.crt", pki / "ca.key"
    if cert_path.exists() and key_path.exists():
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), _load_key(key_path)
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         f"kubi-server-ca@{int(datetime.datetime.now().timestamp())}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _server_names(extra: list[str]) -> tuple[list[str], list[str]]:
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local", socket.gethostname()]
    ips = ["127.0.0.1", "::1", "10.43.0.1"]
    for name in extra:
        try:
            ipaddress.ip_address(name)
            ips.append(name)
        except ValueError:
            dns.append(name)
    return sorted(set(dns)), sorted(set(ips))


def _make_server_cert(pki: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                      extra_names: list[str]) -> None:
    cert_path, key_path = pki / "serving.crt", pki / "serving.key"
    dns, ips = _server_names(extra_names)
    if cert_path.exists() and key_path.exists():
        existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
        if set(dns) <= set(san.get_values_for_type(x509.DNSName)) and set(ips) <= have_ips:
            return  # still covers every name we serve under
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                          + ca.public_bytes(serialization.Encoding.PEM))


def ensure_credentials(data_dir: Path, extra_names: list[str] | None = None) -> Credentials:
    """Create (or reuse) the CA, serving cert, service-account key and admin token."""
    pki = data_dir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _make_ca(pki)
    _make_server_cert(pki, ca, ca_key, extra_names or [])
    sa_key = pki / "service-account.key"
    if not sa_key.exists():
        _write_private(sa_key, _key_pem(_new_key()))
    token_path = pki / "admin.token"
    if not token_path.exists():
        _write_private(token_path, secrets.token_hex(32).encode())
    node_token = data_dir / "node-token"
    if not node_token.exists():
        # Agents join with this token (the admin credential until node authorization exists).
        _write_private(node_token, token_path.read_bytes())
    return Credentials(pki / "ca.crt", pki / "serving.crt", pki / "serving.key",
                       token_path.read_text().strip(), sa_key)


def kubeconfig(creds: Credentials, server_url: str, cluster: str = "kubi") -> str:
    import base64

    ca_data = base64.b64encode(creds.ca_cert.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server_url,
                                                    "certificate-authority-data": ca_data}}],
        "users": [{"name": f"{cluster}-admin", "user": {"token": creds.admin_token}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster,
                                                    "user": f"{cluster}-admin"}}],
        "current-context": cluster,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_kubeconfig(path: Path, creds: Credentials, server_url: str) -> None:
    _write_private(path, kubeconfig(creds, server_url).encode())
