"""Certificates for local services that speak TLS only, made with ``openssl`` at start.

One throw-away CA signs a server certificate (for ``127.0.0.1`` and ``localhost``, used by the
local Kafka broker and Redis) and a client certificate whose key is encrypted with a passphrase
(for mutual TLS). Keys are PKCS#8 PEM, which both OpenSSL and Java's Kafka read. The passphrase
reaches ``openssl`` through a 0600 file removed afterwards, never its command line.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from infra.local.process import ServiceError

_DAYS = "30"
_SERVER_EXTENSIONS = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
_CLIENT_EXTENSIONS = "extendedKeyUsage=clientAuth\n"


@dataclass(frozen=True)
class LocalCertificates:
    """PEM files under ``directory``: ``ca.pem``, ``server.{crt,key,pem}``, ``client.{crt,key}``."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients trust."""
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        """The servers' certificate (SAN 127.0.0.1, localhost)."""
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        """The servers' unencrypted private key (PKCS#8)."""
        return self.directory / "server.key"

    @property
    def server_keystore(self) -> Path:
        """Key and certificate in one file (a Kafka PEM keystore)."""
        return self.directory / "server.pem"

    @property
    def client_cert(self) -> Path:
        """A client certificate signed by the CA."""
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        """The client certificate's key, encrypted with the passphrase given to :func:`make_certificates`."""
        return self.directory / "client.key"


def make_certificates(directory: Path, client_key_password: str) -> LocalCertificates:
    """A CA, a server and a client certificate under ``directory`` (made again each call)."""
    if shutil.which("openssl") is None:
        raise ServiceError("openssl is needed for TLS certificates; run `sudo apt-get install -y openssl`")
    certs = LocalCertificates(directory)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key = directory / "ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", certs.ca_file,
             "-days", _DAYS, "-subj", "/CN=pulse-local-ca",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", certs.server_key)
    _sign(certs, certs.server_key, certs.server_cert, "/CN=localhost", _SERVER_EXTENSIONS, passin=None)
    certs.server_keystore.write_text(certs.server_key.read_text() + certs.server_cert.read_text())
    password_file, plain_key = directory / "client.pass", directory / "client.plain.key"
    password_file.touch(mode=0o600)
    password_file.write_text(client_key_password)
    try:
        # PKCS#8 v1 encryption (PBE-SHA1-3DES): Java's Kafka client cannot read the PBES2 keys
        # openssl writes by default ("PBES2 SecretKeyFactory not available" on JDK 17).
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", plain_key)
        _openssl("pkcs8", "-topk8", "-v1", "PBE-SHA1-3DES", "-in", plain_key, "-passout", f"file:{password_file}",
                 "-out", certs.client_key)
        _sign(certs, certs.client_key, certs.client_cert, "/CN=pulse-client", _CLIENT_EXTENSIONS,
              passin=password_file)
    finally:
        password_file.unlink()
        plain_key.unlink(missing_ok=True)
    for key in (ca_key, certs.server_key, certs.server_keystore, certs.client_key):
        key.chmod(0o600)
    return certs


def _sign(certs: LocalCertificates, key: Path, cert: Path, subject: str, extensions: str,
          passin: Path | None) -> None:
    """A certificate for ``key`` signed by the CA."""
    request = cert.with_suffix(".csr")
    extension_file = cert.with_suffix(".ext")
    extension_file.write_text(extensions)
    _openssl("req", "-new", "-key", key, "-subj", subject, "-out", request,
             *(("-passin", f"file:{passin}") if passin else ()))
    _openssl("x509", "-req", "-in", request, "-CA", certs.ca_file, "-CAkey", certs.directory / "ca.key",
             "-CAcreateserial", "-days", _DAYS, "-extfile", extension_file, "-out", cert)
    request.unlink()
    extension_file.unlink()


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(f"openssl {args[0]} failed: {result.stderr.strip()[-500:]}")
