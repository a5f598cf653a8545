"""The connection from one client session to the directory, with failover in ``upstream`` order."""
from __future__ import annotations

import ipaddress
import logging
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from proxy.config import Upstream
from proxy.ldap.ber import Framer, ProtocolViolation

log = logging.getLogger(__name__)

# Responses from the directory are trusted but still framed with a bound.
MAX_RESPONSE_PDU = 256 * 1024 * 1024


class UpstreamUnavailable(Exception):
    """No directory in ``upstream`` accepted a connection in time."""


class UpstreamListener(TypingProtocol):
    """What a client session hears from its upstream connection."""

    def upstream_pdus(self, pdus: list[bytes]) -> None:
        """Whole PDUs arrived from the directory."""

    def upstream_lost(self, why: str) -> None:
        """The connection to the directory ended."""


class UpstreamConnection(Protocol):
    """Frames the directory's PDUs and hands them to the session."""

    def __init__(self, listener: UpstreamListener, uri: str) -> None:
        self.listener = listener
        self.uri = uri
        self._framer = Framer(MAX_RESPONSE_PDU)
        self._detached = False

    def dataReceived(self, data: bytes) -> None:
        try:
            pdus = self._framer.feed(data)
        except ProtocolViolation as exc:
            log.error("malformed response from %s: %s", self.uri, exc)
            self.detach()
            self.transport.abortConnection()  # type: ignore[attr-defined]
            self.listener.upstream_lost(f"malformed response from {self.uri}")
            return
        if pdus:
            self.listener.upstream_pdus(pdus)

    def send(self, pdu: bytes) -> None:
        """Write one PDU to the directory."""
        self.transport.write(pdu)  # type: ignore[union-attr]

    def detach(self) -> None:
        """Stop reporting the end of this connection (the session is done with it)."""
        self._detached = True

    def close(self) -> None:
        """Close without telling the session."""
        self.detach()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self._detached:
            self._detached = True
            self.listener.upstream_lost(f"{self.uri} closed the connection")


def _endpoint(reactor: Any, upstream: Upstream, timeout: float) -> Any:
    try:
        address = ipaddress.ip_address(upstream.host)
    except ValueError:
        return endpoints.HostnameEndpoint(reactor, upstream.host, upstream.port, timeout=timeout)
    endpoint_type = (endpoints.TCP6ClientEndpoint if address.version == 6
                     else endpoints.TCP4ClientEndpoint)
    return endpoint_type(reactor, upstream.host, upstream.port, timeout=timeout)


def connect_upstream(reactor: Any, upstreams: tuple[Upstream, ...], timeout: float,
                     listener: UpstreamListener) -> Deferred[UpstreamConnection]:
    """Connect to the first directory in ``upstreams`` that answers within ``timeout`` each."""
    result: Deferred[UpstreamConnection] = Deferred()
    errors: list[str] = []

    def attempt(index: int) -> None:
        if index == len(upstreams):
            result.errback(UpstreamUnavailable("; ".join(errors)))
            return
        upstream = upstreams[index]
        connection = UpstreamConnection(listener, upstream.uri)
        d = endpoints.connectProtocol(_endpoint(reactor, upstream, timeout), connection)

        def failed(failure: Failure) -> None:
            message = failure.getErrorMessage()
            errors.append(f"{upstream.uri}: {message}")
            log.warning("directory %s unreachable: %s", upstream.uri, message)
            attempt(index + 1)

        d.addCallbacks(result.callback, failed)

    attempt(0)
    return result
