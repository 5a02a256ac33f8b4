"""Keys and certificates for a throwaway control plane: one CA signs every cert."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LIFETIME = datetime.timedelta(days=2)
# Who the apiserver's serving cert must answer to: we dial 127.0.0.1; in-cluster names for realism
# (pods of the real-node tier dial the `kubernetes` Service's address: see ControlPlane).
SERVING_IPS = ("127.0.0.1",)
SERVING_DNS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class KeyPair:
    public: Path
    private: Path


@dataclass(frozen=True)
class Identity:
    """A client of the apiserver: the cert's CN is the user name, each O a group."""

    name: str
    user: str
    groups: tuple[str, ...] = ()


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys: instant to make, accepted for TLS and for service-account token signing.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class CertificateAuthority:
    def __init__(self, directory: Path, name: str = "pagoda-e2e-ca") -> None:
        self.directory = directory
        self._key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.pair = self._write("ca", self._cert, self._key)

    def serving(self, name: str, extra_ips: tuple[str, ...] = ()) -> CertPair:
        """A server cert for 127.0.0.1, `extra_ips` and the in-cluster names of the apiserver."""
        sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in (*SERVING_IPS, *extra_ips)]
        sans += [x509.DNSName(dns) for dns in SERVING_DNS]
        return self._issue(name, _name(name), ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def client(self, identity: Identity) -> CertPair:
        subject = _name(identity.user, identity.groups)
        return self._issue(identity.name, subject, ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def _issue(
        self, file_name: str, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list
    ) -> CertPair:
        key = _new_key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return self._write(file_name, builder.sign(self._key, hashes.SHA256()), key)

    def _write(
        self, file_name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> CertPair:
        pair = CertPair(self.directory / f"{file_name}.crt", self.directory / f"{file_name}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair


def service_account_keys(directory: Path) -> KeyPair:
    """The key pair the apiserver signs service-account tokens with."""
    key = _new_key()
    pair = KeyPair(directory / "sa.pub", directory / "sa.key")
    _write_key(key, pair.private)
    pair.public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pair
