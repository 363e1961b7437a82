"""TLS identity of a storage server: a self-signed certificate pinned by its SPKI hash.

A storage server's identity is the hash of its public key, computed exactly as
Tahoe-LAFS does (``allmydata/storage/http_common.py:get_spki_hash``): SHA-256
over the DER-encoded SubjectPublicKeyInfo, URL-safe base64 without padding.
Clients ignore names, CAs and validity dates and compare only that hash.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
from pathlib import Path

from attrs import field, frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

CERT_FILENAME = "tls-cert.pem"
KEY_FILENAME = "tls-key.pem"


def spki_hash(certificate: x509.Certificate) -> str:
    """Tahoe's SPKI hash of a certificate: unpadded URL-safe base64 of SHA-256(DER SPKI)."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(spki).digest()).rstrip(b"=").decode("ascii")


@frozen
class TlsCredentials:
    """A server's certificate and private key (the key never appears in ``repr``)."""

    certificate: x509.Certificate
    private_key: CertificateIssuerPrivateKeyTypes = field(repr=False)

    @property
    def spki_hash(self) -> str:
        """The pin clients put in the NURL."""
        return spki_hash(self.certificate)

    @property
    def cert_pem(self) -> bytes:
        """The certificate as PEM."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (write it with mode 0600)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def server_options(self) -> ServerTLS:
        """Server-side TLS for Twisted (``TLSMemoryBIOFactory``) presenting this certificate."""
        return ServerTLS(self)


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """Server TLS connections (TLS 1.2 or later) presenting one certificate and key."""

    def __init__(self, credentials: TlsCredentials) -> None:
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
        context.use_certificate(credentials.certificate)
        context.use_privatekey(credentials.private_key)  # type: ignore[arg-type]
        context.check_privatekey()
        self._context = context

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """A new server-side connection object for one accepted socket."""
        return SSL.Connection(self._context, None)


def generate_tls_credentials(
    common_name: str = "storage server", now: datetime.datetime | None = None
) -> TlsCredentials:
    """A new ECDSA P-256 key and a self-signed certificate valid for 100 years."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = now or datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=36500))
        .sign(key, hashes.SHA256())
    )
    return TlsCredentials(certificate, key)


def load_tls_credentials(cert_pem: bytes, key_pem: bytes) -> TlsCredentials:
    """Load credentials from PEM bytes (a Tahoe ``node.pem`` may be passed as both)."""
    certificate = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ValueError("unsupported private key type for a storage server")
    return TlsCredentials(certificate, key)


def create_tls_credentials(directory: Path) -> TlsCredentials:
    """Generate credentials and write ``tls-key.pem`` (mode 0600) and ``tls-cert.pem``
    (0644: it is public) there.

    Refuses to overwrite an existing key.
    """
    credentials = generate_tls_credentials()
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / KEY_FILENAME, credentials.key_pem, 0o600, os.O_EXCL)
    _write(directory / CERT_FILENAME, credentials.cert_pem, 0o644, os.O_TRUNC)
    return credentials


def _write(path: Path, data: bytes, mode: int, flag: int) -> None:
    """Write ``path`` (``O_EXCL``: a new file; ``O_TRUNC``: replacing one) with exactly
    ``mode``, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flag, mode & 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), mode)
        f.write(data)


def read_tls_credentials(directory: Path) -> TlsCredentials:
    """Load the credentials :func:`create_tls_credentials` wrote to ``directory``."""
    return load_tls_credentials(
        (directory / CERT_FILENAME).read_bytes(), (directory / KEY_FILENAME).read_bytes()
    )


def load_or_create_tls_credentials(directory: Path) -> TlsCredentials:
    """Load the credentials in ``directory``, creating them on first use."""
    if (directory / KEY_FILENAME).exists():
        return read_tls_credentials(directory)
    return create_tls_credentials(directory)
