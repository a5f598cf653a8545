"""TLS on both sides: the certificate clients see (StartTLS, ssl: listeners), reloadable; and
the verification of the directory's certificate (ldaps:// upstreams, StartTLS to them).

Modern defaults: TLS 1.2 or later, Twisted's cipher choice. The directory's certificate is
always verified, against ``upstream_ca_file`` or the system's trust store, with its host name
checked: there is no switch to turn that off.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

log = logging.getLogger(__name__)


class TlsError(Exception):
    """A certificate or key that cannot be loaded."""


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """The server side of TLS, swapped whole on reload; connections keep what they began with."""

    def __init__(self, certificate: str, private_key: str) -> None:
        self.certificate = certificate
        self.private_key = private_key
        self.options = self._load()

    def _load(self) -> ssl.CertificateOptions:
        try:
            chain = ssl.Certificate.loadPEM(Path(self.certificate).read_bytes())
            pem = Path(self.certificate).read_bytes()
            key = ssl.KeyPair.load(Path(self.private_key).read_bytes(), crypto.FILETYPE_PEM)
            extra = [ssl.Certificate.loadPEM(block).original
                     for block in _pem_blocks(pem)[1:]]
            options = ssl.CertificateOptions(
                privateKey=key.original, certificate=chain.original, extraCertChain=extra,
                raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
            options.getContext()  # now, not at the first handshake: a key that does not match
            return options
        except (OSError, SSL.Error, crypto.Error, ValueError) as exc:
            raise TlsError(f"cannot load {self.certificate} / {self.private_key}: "
                           f"{exc}") from None

    def reload(self) -> None:
        """Read the certificate and key again (SIGHUP); keep the old ones if they fail."""
        try:
            self.options = self._load()
        except TlsError as exc:
            log.error("TLS certificate not reloaded, the old one stays: %s", exc)
            return
        log.info("TLS certificate reloaded from %s", self.certificate)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N802
        return SSL.Connection(self.options.getContext(), None)  # Twisted's interface name


def _pem_blocks(pem: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [block + end for block in pem.split(end) if b"-----BEGIN CERTIFICATE-----" in block]


def client_options(hostname: str, ca_file: str) -> Any:
    """What an upstream connection checks: the directory's certificate, for ``hostname``,
    against every CA in ``ca_file`` (or the system's store)."""
    if ca_file:
        pem = Path(ca_file).read_bytes()
        trust: Any = ssl.trustRootFromCertificates(
            [ssl.Certificate.loadPEM(block) for block in _pem_blocks(pem)])
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(hostname, trustRoot=trust,
                                   extraCertificateOptions={
                                       "raiseMinimumTo": ssl.TLSVersion.TLSv1_2})
