"""A private certificate authority for a fleet on loopback: TLS on for Redis and S3.

``make_tls(dir)`` writes a CA (``trustme``) and one server certificate for ``127.0.0.1`` and
``localhost``, signed by it. Servers take the certificate and key (``RedisServer(tls=…)``,
``SeaweedS3Server(tls=…)``); clients verify against the CA (``CONVATLAS_TLS_CA``). For tests
and the local stack only: a real fleet uses its own CA or a public one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate clients trust (PEM)
    cert: Path  # the servers' certificate chain (PEM)
    key: Path  # its private key (PEM, 0600)


def tls_in(dir: Path | str) -> TlsFiles:
    """The CA and certificate kept in ``dir``, made there the first time (a stack restarted
    from its folder keeps its CA, so clients keep trusting it)."""
    d = Path(dir)
    files = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")
    if all(p.is_file() for p in (files.ca, files.cert, files.key)):
        return files
    return make_tls(d)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def make_tls(dir: Path | str, hosts: tuple[str, ...] = LOOPBACK_HOSTS) -> TlsFiles:
    """A fresh CA and one server certificate for ``hosts`` (names or IPs) in ``dir``; the
    compose deployment's has ``redis`` and ``s3`` (``convatlas stack tls-files``)."""
    import os

    try:
        import trustme
    except ImportError:
        raise SystemExit("making a test CA needs trustme (pip install trustme, or the dev extra); "
                         "or bring your own ca.pem, server.pem and server.key") from None

    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="convatlas local CA")
    server = ca.issue_cert(*hosts)
    files = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(files.cert), append=True)
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    server.private_key_pem.write_to_path(str(files.key))
    return files
