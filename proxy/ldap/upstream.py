"""The connection from one client session to the directory, with failover in ``upstream`` order."""
from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from proxy.config import Upstream
from proxy.ldap.ber import Framer, ProtocolViolation, tlv
from proxy.ldap.messages import parse_envelope, result_code
from proxy.tls import client_options

STARTTLS_OID = "1.3.6.1.4.1.1466.20037"

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


@dataclass(frozen=True)
class UpstreamTLS:
    """How to talk TLS to the directories: ldaps:// URIs always, StartTLS on ldap:// ones when
    ``starttls``; their certificate verified against ``ca_file`` (or the system's store)."""

    ca_file: str = ""
    starttls: bool = False
    # Client TLS options per host name, built once (the CA file read and parsed once); a reload
    # makes a new UpstreamTLS, so a changed CA file is read again then.
    _options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def options(self, hostname: str) -> Any:
        """What a TLS connection to ``hostname`` verifies."""
        if hostname not in self._options:
            self._options[hostname] = client_options(hostname, self.ca_file)
        return self._options[hostname]


_SYSTEM_TRUST = UpstreamTLS()

# bindguard's own StartTLS request on a new upstream connection, before any client PDU.
_STARTTLS_ID = 1
_STARTTLS_REQUEST = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x77, tlv(0x80, STARTTLS_OID.encode())))


@implementer(IHandshakeListener)
class UpstreamConnection(Protocol):
    """Frames the directory's PDUs and hands them to the session.

    ``ready`` fires once the connection can carry requests: at once for plain LDAP, after the
    TLS handshake (and the certificate's verification) for ldaps:// and StartTLS.
    """

    def __init__(self, listener: UpstreamListener, uri: str, tls: Any = None,
                 starttls: bool = False) -> None:
        self.listener = listener
        self.uri = uri
        self.tls = tls  # client TLS options when the connection is TLS (or will be)
        self.starttls = starttls
        self._framer = Framer(MAX_RESPONSE_PDU)
        self._detached = False
        self.ready: Deferred[UpstreamConnection] | None = None

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        if self.starttls:
            self.transport.write(_STARTTLS_REQUEST)  # type: ignore[union-attr]
        elif self.tls is None:
            self._ready()

    def handshakeCompleted(self) -> None:  # noqa: N802 (Twisted's interface)
        self._ready()

    def _ready(self) -> None:
        if self.ready is not None and not self.ready.called:
            ready, self.ready = self.ready, None
            ready.callback(self)

    def _starttls_answered(self, data: bytes) -> None:
        """The directory's answer to bindguard's StartTLS: go TLS, or give up on it."""
        pdus = self._framer.feed(data)
        if not pdus:
            return
        self.starttls = False
        env = parse_envelope(pdus[0])
        if env.message_id != _STARTTLS_ID or result_code(pdus[0], env) != 0:
            log.error("directory %s refused StartTLS", self.uri)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.transport.startTLS(self.tls)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self.starttls:
            try:
                self._starttls_answered(data)
            except ProtocolViolation as exc:
                log.error("malformed StartTLS answer from %s: %s", self.uri, exc)
                self.transport.abortConnection()  # type: ignore[union-attr]
            return
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
        if self.ready is not None:  # never ready: TCP closed, TLS refused, certificate bad
            ready, self.ready = self.ready, None
            why = reason.getErrorMessage() if reason is not None else "connection lost"
            if self.tls is not None:
                log.error("TLS to directory %s failed: %s", self.uri, why)
            ready.errback(UpstreamUnavailable(f"{self.uri}: {why}"))
            return
        if not self._detached:
            self._detached = True
            self.listener.upstream_lost(f"{self.uri} closed the connection")


class UpstreamHealth:
    """Which directories to try, and in what order (kanidm's Online / Offline / OfflineNextCheck).

    A directory that fails to connect is marked down and skipped until its next check, after a
    back-off that doubles from BACKOFF_FIRST to BACKOFF_MAX seconds with ±20 % jitter (so that
    many proxies do not retry in step); the first success marks it up again. When every
    directory is down, all are tried anyway, in order: a login is never refused unasked.
    """

    BACKOFF_FIRST = 1.0
    BACKOFF_MAX = 60.0

    def __init__(self, upstreams: tuple[Upstream, ...], clock: Any,
                 jitter: Callable[[], float] = random.random) -> None:
        self.upstreams = upstreams
        self.clock = clock
        self.jitter = jitter
        self.failures: dict[str, int] = {}
        self.next_check: dict[str, float] = {}
        self.listeners: list[Callable[[str, bool], None]] = []  # (uri, up) on each change

    def order(self) -> tuple[Upstream, ...]:
        """The directories to try now: those up or due for a check, in configured order."""
        now = self.clock.seconds()
        ready = tuple(u for u in self.upstreams if self.next_check.get(u.uri, 0.0) <= now)
        return ready or self.upstreams

    def succeeded(self, uri: str) -> None:
        if self.failures.pop(uri, None) is not None:
            self.next_check.pop(uri, None)
            log.info("directory %s is reachable again", uri)
            self._changed(uri, True)

    def failed(self, uri: str) -> None:
        count = self.failures.get(uri, 0) + 1
        self.failures[uri] = count
        delay = min(self.BACKOFF_MAX, self.BACKOFF_FIRST * 2 ** (count - 1))
        delay *= 0.8 + 0.4 * self.jitter()
        self.next_check[uri] = self.clock.seconds() + delay
        if count == 1:
            self._changed(uri, False)
        log.warning("directory %s marked down; next try in %.1f s", uri, delay)

    def _changed(self, uri: str, up: bool) -> None:
        for listener in self.listeners:
            listener(uri, up)


class _ConnectOnce(ClientFactory):
    """Connects one UpstreamConnection and reports the result through a Deferred."""

    noisy = False  # no "Starting factory" log lines: one connection per client session

    def __init__(self, connection: UpstreamConnection, result: Deferred[UpstreamConnection]):
        self.connection = connection
        self.result = result

    def buildProtocol(self, addr: Any) -> Any:
        self.connection.ready = self.result
        return self.connection

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.result.called:
            self.result.errback(reason)


def _too_slow(connected: Deferred[Any], connection: UpstreamConnection) -> None:
    """The TLS handshake did not finish in time: give up on this connection."""
    if not connected.called:
        connection.ready = None
        connection.detach()
        if connection.transport is not None:
            connection.transport.abortConnection()  # type: ignore[attr-defined]
        connected.errback(UpstreamUnavailable(f"{connection.uri}: TLS not established in "
                                              "time"))


def connect_upstream(reactor: Any, upstreams: tuple[Upstream, ...], timeout: float,
                     listener: UpstreamListener, health: UpstreamHealth | None = None,
                     tls: UpstreamTLS | None = None) -> Deferred[UpstreamConnection]:
    """Connect to the first directory in ``upstreams`` that answers within ``timeout`` each;
    with ``health``, in its order, skipping directories marked down, and reporting to it."""
    result: Deferred[UpstreamConnection] = Deferred()
    errors: list[str] = []
    if health is not None:
        upstreams = health.order()

    def attempt(index: int) -> None:
        if index == len(upstreams):
            result.errback(UpstreamUnavailable("; ".join(errors)))
            return
        upstream = upstreams[index]
        connected: Deferred[UpstreamConnection] = Deferred()
        options = None
        if upstream.tls or (tls is not None and tls.starttls):
            options = (tls or _SYSTEM_TRUST).options(upstream.host)
        starttls = options is not None and not upstream.tls
        connection = UpstreamConnection(listener, upstream.uri, options, starttls)
        factory: Any = _ConnectOnce(connection, connected)
        if upstream.tls:
            factory = TLSMemoryBIOFactory(options, True, factory)
        reactor.connectTCP(upstream.host, upstream.port, factory, timeout=timeout)
        if options is not None:  # the handshake must finish in time too
            timer = reactor.callLater(timeout * 2, _too_slow, connected, connection)
            connected.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])

        def failed(failure: Failure) -> None:
            message = failure.getErrorMessage()
            errors.append(f"{upstream.uri}: {message}")
            log.warning("directory %s unreachable: %s", upstream.uri, message)
            if health is not None:
                health.failed(upstream.uri)
            attempt(index + 1)

        def succeeded(connection: UpstreamConnection) -> None:
            if health is not None:
                health.succeeded(upstream.uri)
            result.callback(connection)

        connected.addCallbacks(succeeded, failed)

    attempt(0)
    return result
