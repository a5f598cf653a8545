"""One client connection of the LDAP front: binds go through the service, the rest is bytes.

Client PDUs are handled strictly in order. A simple bind with a password holds the queue while
the service admits it; everything else is written to the session's own upstream connection
unchanged (message IDs and controls untouched). Upstream PDUs go back unchanged too; only the
BindResponses of binds the service admitted are read, and the outcome is recorded before the
client sees it, so a crash after a refused bind cannot lose the failure.
"""
from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from proxy.config import ProxyConfig, Upstream
from proxy.ldap import messages as m
from proxy.ldap.ber import Framer, ProtocolViolation
from proxy.ldap.upstream import UpstreamConnection, connect_upstream, set_no_delay
from proxy.service import Attempt, AuthService

log = logging.getLogger(__name__)


# How a session reaches the directory (replaced by a fake in protocol tests).
Connector = Callable[[Any, "tuple[Upstream, ...]", float, Any], "Deferred[UpstreamConnection]"]

# In the output queue: close the connection once everything ahead of it is written.
_CLOSE = object()


@dataclass
class _PendingBind:
    """A bind forwarded to the directory whose answer decides an Attempt."""

    attempt: Attempt
    timer: Any


class LdapSession(Protocol):
    """The proxy side of one client connection."""

    def __init__(self, front: LdapFrontFactory) -> None:
        self.service = front.service
        self.config = front.config
        self.reactor = front.reactor
        self.connect = front.connect
        self.framer = Framer(self.config.max_pdu_size)
        self.client = "-"
        self.queue: deque[bytes] = deque()
        self.held = False  # a request is being decided: the rest of the queue waits
        self.upstream: UpstreamConnection | None = None
        self.binds: dict[int, _PendingBind] = {}
        # Output to the client, in order. A list is a slot for a BindResponse whose outcome is
        # still being recorded: what comes after it waits until the slot is filled.
        self.out: deque[bytes | list[bytes] | object] = deque()
        self.client_gone = False
        self.closing = False  # a protocol violation: ignore whatever else the client sends

    # -- client side ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.client = getattr(peer, "host", str(peer))

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            pdus = self.framer.feed(data)
        except ProtocolViolation as exc:
            self.protocol_violation(str(exc))
            return
        self.queue.extend(pdus)
        self.pump()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.client_gone = True
        self.queue.clear()
        self.out.clear()
        # Binds already at the directory are still counted: an attacker must not escape the
        # failure count by hanging up before the answer. The upstream closes once they are in.
        self._close_upstream_when_idle()

    def protocol_violation(self, why: str) -> None:
        """Close this connection (and only it) with a Notice of Disconnection."""
        log.warning("closing connection from %s: %s", self.client, why)
        self.queue.clear()
        self.held = self.closing = True
        self.emit(m.notice_of_disconnection(m.Result.PROTOCOL_ERROR, "malformed PDU"))
        self.emit(_CLOSE)

    def pump(self) -> None:
        """Handle queued client PDUs in order until one has to wait."""
        while self.queue and not self.held:
            pdu = self.queue[0]
            try:
                env = m.parse_envelope(pdu)
                if env.op_tag == m.BIND_REQUEST:
                    request = m.parse_bind_request(pdu, env)
                    refusal = self._bind_refusal(request)
                    if refusal is not None or not (request.sasl or request.anonymous):
                        self.queue.popleft()
                        if refusal is not None:
                            self.answer(request.message_id, env.op_tag, *refusal)
                        else:
                            self._check_bind(pdu, request)
                        continue
            except ProtocolViolation as exc:
                self.protocol_violation(str(exc))
                return
            if self.upstream is None:
                self._connect_then_pump()
                return
            self.queue.popleft()
            self.upstream.send(pdu)
            if env.op_tag == m.UNBIND_REQUEST:
                self.held = True
                self.emit(_CLOSE)
                return

    def answer(self, message_id: int, op_tag: int, code: int, message: str = "",
               controls: bytes = b"") -> None:
        """Answer a request locally with an LDAPResult (nothing for abandon and unbind)."""
        response = m.RESPONSE_TO.get(op_tag)
        if response is not None:
            self.emit(m.ldap_result(message_id, response, code, message, controls))

    # -- output -------------------------------------------------------------------------------

    def emit(self, item: bytes | object) -> None:
        """Send a PDU (or _CLOSE) to the client after whatever is ahead of it."""
        if self.client_gone:
            return
        self.out.append(item)
        self._flush()

    def _slot(self) -> list[bytes]:
        slot: list[bytes] = []
        self.out.append(slot)
        return slot

    def _fill(self, slot: list[bytes], pdu: bytes) -> None:
        slot.append(pdu)
        self._flush()

    def _flush(self) -> None:
        while self.out and not self.client_gone:
            head = self.out[0]
            if isinstance(head, list):
                if not head:
                    return
                head = head[0]
            self.out.popleft()
            if head is _CLOSE:
                self.out.clear()
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            self.transport.write(head)  # type: ignore[union-attr,arg-type]

    # -- binds --------------------------------------------------------------------------------

    def _bind_refusal(self, request: m.BindRequest) -> tuple[int, str] | None:
        """The local answer to a bind the configuration does not allow, or None."""
        if request.sasl and not self.config.allow_sasl:
            return m.Result.AUTH_METHOD_NOT_SUPPORTED, "SASL binds are not allowed"
        if request.anonymous and not self.config.allow_anonymous:
            return m.Result.UNWILLING_TO_PERFORM, "anonymous binds are not allowed"
        return None

    def _check_bind(self, pdu: bytes, request: m.BindRequest) -> None:
        """A simple bind with a password: admitted by the service before it is forwarded."""
        self.held = True
        d = self.service.admit(request.dn, "ldap", self.client)
        d.addCallbacks(self._admitted, self._internal_error, callbackArgs=(pdu, request),
                       errbackArgs=(request,))

    def _admitted(self, attempt: Attempt | None, pdu: bytes, request: m.BindRequest) -> None:
        if attempt is None:
            controls = b""
            if request.has_control(m.PPOLICY_OID):
                controls = m.ppolicy_control(m.PPolicyError.ACCOUNT_LOCKED)
            self.answer(request.message_id, m.BIND_REQUEST, m.Result.INVALID_CREDENTIALS,
                        controls=controls)
            self._resume()
        elif self.client_gone:
            self.service.record(attempt, None)
        elif self.upstream is None:
            self._connect().addBoth(lambda _: self._send_bind(attempt, pdu, request))
        else:
            self._send_bind(attempt, pdu, request)

    def _send_bind(self, attempt: Attempt, pdu: bytes, request: m.BindRequest) -> None:
        if self.upstream is None:  # no directory reachable, or the client left meanwhile
            self._record_then_answer(attempt, None, m.ldap_result(
                request.message_id, m.BIND_RESPONSE, m.Result.UNAVAILABLE,
                "directory unavailable"))
            self._resume()
            return
        timer = self.reactor.callLater(self.config.upstream_timeout, self._bind_timed_out,
                                       request.message_id)
        self.binds[request.message_id] = _PendingBind(attempt, timer)
        self.upstream.send(pdu)
        self._resume()

    def _record_then_answer(self, attempt: Attempt, code: int | None, response: bytes) -> None:
        """Record an outcome durably, then let the client see the response."""
        slot = self._slot()
        d = self.service.record(attempt, code)
        d.addErrback(lambda f: log.error("bind outcome not recorded: %s", f.getErrorMessage()))
        d.addCallback(lambda _: self._fill(slot, response))

    def _bind_timed_out(self, message_id: int) -> None:
        if message_id not in self.binds:
            return
        log.warning("directory did not answer a bind within %ss", self.config.upstream_timeout)
        # The connection is in an unknown state: drop it; the next request opens a new one,
        # anonymous as a connection after a failed bind is (RFC 4511 4.2.1).
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            upstream.detach()
            upstream.transport.abortConnection()  # type: ignore[union-attr]
        self._fail_pending_binds()

    def _internal_error(self, failure: Failure, request: m.BindRequest) -> None:
        log.error("bind could not be checked: %s", failure.getErrorMessage())
        self.answer(request.message_id, m.BIND_REQUEST, m.Result.UNAVAILABLE,
                    "temporarily unavailable")
        self._resume()

    def _resume(self) -> None:
        self.held = False
        if not self.client_gone:
            self.pump()

    # -- upstream side ------------------------------------------------------------------------

    def _connect(self) -> Deferred[UpstreamConnection | None]:
        d = self.connect(self.reactor, self.config.upstream, self.config.upstream_timeout,
                             self)

        def connected(upstream: UpstreamConnection) -> None:
            if self.client_gone and not self.binds:
                upstream.close()
            else:
                self.upstream = upstream

        def failed(failure: Failure) -> None:
            log.warning("no directory reachable for %s: %s", self.client,
                        failure.getErrorMessage())

        return d.addCallbacks(connected, failed)

    def _connect_then_pump(self) -> None:
        """Open the upstream connection, then carry on; answer 52 if none is reachable."""
        self.held = True

        def done(_: object) -> None:
            if self.upstream is None and self.queue:
                # Answer the request that needed the directory; the next one tries again.
                env = m.parse_envelope(self.queue.popleft())
                self.answer(env.message_id, env.op_tag, m.Result.UNAVAILABLE,
                            "directory unavailable")
            self._resume()

        self._connect().addCallback(done)

    def upstream_pdus(self, pdus: list[bytes]) -> None:
        """Pass the directory's PDUs to the client, reading the BindResponses we wait for."""
        for pdu in pdus:
            if self.binds:
                try:
                    env = m.parse_envelope(pdu)
                    if env.op_tag == m.BIND_RESPONSE and env.message_id in self.binds:
                        self._bind_answered(pdu, env)
                        continue
                except ProtocolViolation as exc:
                    self.upstream_lost(f"malformed response from the directory: {exc}")
                    return
            self.emit(pdu)
        self._close_upstream_when_idle()

    def _bind_answered(self, pdu: bytes, env: m.Envelope) -> None:
        pending = self.binds.pop(env.message_id)
        pending.timer.cancel()
        self._record_then_answer(pending.attempt, m.result_code(pdu, env), pdu)

    def upstream_lost(self, why: str) -> None:
        """The directory closed our connection: the session's state is gone with it."""
        self.upstream = None
        self._fail_pending_binds()
        if not self.client_gone:
            log.info("closing connection from %s: %s", self.client, why)
            self.emit(m.notice_of_disconnection(m.Result.UNAVAILABLE, "directory unavailable"))
            self.emit(_CLOSE)

    def _fail_pending_binds(self) -> None:
        binds, self.binds = self.binds, {}
        for message_id, pending in binds.items():
            if pending.timer.active():
                pending.timer.cancel()
            self._record_then_answer(pending.attempt, None, m.ldap_result(
                message_id, m.BIND_RESPONSE, m.Result.UNAVAILABLE, "directory unavailable"))

    def _close_upstream_when_idle(self) -> None:
        if self.client_gone and not self.binds and self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            upstream.close()


class LdapFrontFactory(Factory):
    """Makes one LdapSession per client connection."""

    noisy = False

    def __init__(self, service: AuthService, config: ProxyConfig, reactor: Any,
                 connect: Connector = connect_upstream) -> None:
        self.service = service
        self.config = config
        self.reactor = reactor
        self.connect = connect

    def buildProtocol(self, addr: Any) -> LdapSession:
        return LdapSession(self)
