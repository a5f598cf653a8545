"""The connection from one client session to the directory, with failover in ``upstream`` order."""
from __future__ import annotations

import logging
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure

from proxy.config import Upstream
from proxy.ldap.ber import Framer, ProtocolViolation

log = logging.getLogger(__name__)

# Responses from the directory are trusted but still framed with a bound.
MAX_RESPONSE_PDU = 256 * 1024 * 1024


def set_no_delay(transport: Any) -> None:
    """Send small PDUs at once: Nagle's algorithm with delayed ACKs stalls them ~40 ms."""
    if hasattr(transport, "setTcpNoDelay"):
        transport.setTcpNoDelay(True)


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
        self.ready: Deferred[UpstreamConnection] | None = None

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        if self.ready is not None:
            ready, self.ready = self.ready, None
            ready.callback(self)

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


class _ConnectOnce(ClientFactory):
    """Connects one UpstreamConnection and reports the result through a Deferred."""

    noisy = False  # no "Starting factory" log lines: one connection per client session

    def __init__(self, connection: UpstreamConnection, result: Deferred[UpstreamConnection]):
        self.connection = connection
        self.result = result

    def buildProtocol(self, addr: Any) -> UpstreamConnection:
        self.connection.ready = self.result
        return self.connection

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.result.called:
            self.result.errback(reason)


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
        connected: Deferred[UpstreamConnection] = Deferred()
        factory = _ConnectOnce(UpstreamConnection(listener, upstream.uri), connected)
        reactor.connectTCP(upstream.host, upstream.port, factory, timeout=timeout)

        def failed(failure: Failure) -> None:
            message = failure.getErrorMessage()
            errors.append(f"{upstream.uri}: {message}")
            log.warning("directory %s unreachable: %s", upstream.uri, message)
            attempt(index + 1)

        connected.addCallbacks(result.callback, failed)

    attempt(0)
    return result
