"""A throwaway PKI for tests: a CA, a server certificate for 127.0.0.1 and a client certificate, made with `openssl`.

Made at test time (the `cryptography` package is not a dependency; the `openssl` binary is on
every machine that runs the suite), valid for two days, keys on elliptic curve P-256 so that
making them takes milliseconds.
"""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.binaries import require_binary


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def client_context(self, with_certificate: bool = True) -> ssl.SSLContext:
        """What a client trusting the test CA uses (with the client certificate for mutual TLS)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if with_certificate:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _run(openssl: str, *args: str, cwd: Path) -> None:
    done = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {done.stderr}")


def _leaf(openssl: str, folder: Path, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (folder / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
    ext.write_text(extensions)
    _run(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key.name, "-out", csr.name, "-subj", subject, cwd=folder)
    _run(openssl, "x509", "-req", "-in", csr.name, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "2", "-sha256", "-extfile", ext.name, "-out", cert.name, cwd=folder)
    return cert, key


def make_test_pki(folder: Path) -> Pki:
    """A CA and two certificates it signed, in `folder` (skips without openssl; fails in CI)."""
    openssl = require_binary("openssl", package="openssl")
    folder.mkdir(parents=True, exist_ok=True)
    _run(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-sha256", "-subj", "/CN=modelramp test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash", cwd=folder)
    server_cert, server_key = _leaf(openssl, folder, "server", "/CN=127.0.0.1",
                                    "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                                    "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    client_cert, client_key = _leaf(openssl, folder, "client", "/CN=modelramp router",
                                    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                    "extendedKeyUsage=clientAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
    return Pki(folder / "ca.pem", server_cert, server_key, client_cert, client_key)
