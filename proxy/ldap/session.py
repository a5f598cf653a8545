"""One client connection of the LDAP front: binds go through the service, the rest is bytes.

Client PDUs are handled strictly in order. A simple bind with a password, and every way of
setting a password (Password Modify, a ModifyRequest or AddRequest touching a password
attribute), hold the queue while the service decides and the directory answers; everything else
is written to the session's own upstream connection unchanged (message IDs and controls
untouched). Upstream PDUs go back unchanged too; only the responses to requests the session
watches are read, and their outcome is recorded before the client sees it, so a crash after a
refused bind cannot lose the failure.

After a bind the directory accepted, the session may read the user's entry (pwdChangedTime,
pwdReset, ...) on the same connection, reusing the bind's message ID, before it decides on
expiry and must-change. A must-change session may only change its password.
"""
from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from proxy.config import ProxyConfig, Upstream
from proxy.ldap import messages as m
from proxy.ldap import passwd
from proxy.ldap.ber import Framer, ProtocolViolation, tlv
from proxy.ldap.binds import Binds
from proxy.ldap.changes import MUST_CHANGE_MESSAGE, PasswordChanges
from proxy.ldap.limits import ConnectionLimits, Deadline
from proxy.ldap.parts import CLOSE
from proxy.ldap.upstream import (
    STARTTLS_OID,
    UpstreamConnection,
    UpstreamHealth,
    UpstreamTLS,
    connect_upstream,
    set_no_delay,
)
from proxy.ldap.upstream_side import UpstreamSide
from proxy.metrics import NULL_METRICS, MetricsRecorder
from proxy.service import AuthService
from proxy.tls import ServerTLS, TlsError

log = logging.getLogger(__name__)


# How a session reaches the directory (replaced by a fake in protocol tests).
Connector = Callable[[Any, "tuple[Upstream, ...]", float, Any], "Deferred[UpstreamConnection]"]


WHOAMI_OID = "1.3.6.1.4.1.4203.1.11.3"
# What a must-change session may still do (besides binding again, unbind and abandon).
_RESTRICTED_EXTENDED = {passwd.PASSWORD_MODIFY_OID, WHOAMI_OID, STARTTLS_OID}
_ALWAYS_ALLOWED = {m.BIND_REQUEST, m.UNBIND_REQUEST, m.ABANDON_REQUEST}


@dataclass
class _Watch:
    """A request whose response(s) the session reads before the client sees them."""

    on_pdu: Callable[[bytes, m.Envelope], bool]  # True when the last response is in
    on_lost: Callable[[], None]  # no answer will come (timeout, connection lost)
    timer: Any
    sent_at: float | None  # when the request went to the directory; None once answered


class LdapSession(Binds, PasswordChanges, UpstreamSide, Protocol):
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
        self.watches: dict[int, _Watch] = {}
        # Who the connection is bound as (canonical DN), after a simple bind bindguard checked.
        self.bound_dn: str | None = None
        self.bound_password: str | None = None  # only to keep it out of the history on change
        self.sasl_bound = False
        self.restricted = False  # must change the password before anything else
        # Output to the client, in order. A list is a slot for a BindResponse whose outcome is
        # still being recorded: what comes after it waits until the slot is filled.
        self.out: deque[bytes | list[bytes] | object] = deque()
        self.client_gone = False
        self.closing = False  # a protocol violation: ignore whatever else the client sends
        self.front = front
        self.metrics = front.metrics
        self.source = ""  # the client address the connection limits counted
        self.tls = False  # the connection is encrypted (an ssl: listener, or after StartTLS)
        self.idle: Deadline | None = None
        self.unfinished: Any = None  # fires when a started PDU takes too long to arrive

    # -- client side ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        set_no_delay(self.transport)
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.client = getattr(peer, "host", str(peer))
        self.metrics.connection_opened("ldap")
        self.idle = Deadline(self.reactor, self.config.idle_timeout, self._idle_expired)
        self.tls = ISSLTransport.providedBy(self.transport)  # an ssl: listener

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        if self.idle is not None:
            self.idle.touch()
        try:
            pdus = self.framer.feed(data)
        except ProtocolViolation as exc:
            self.metrics.malformed("ldap")
            self.protocol_violation(str(exc))
            return
        self._watch_unfinished()
        self.queue.extend(pdus)
        self.pump()

    def _watch_unfinished(self) -> None:
        """A PDU begun must arrive whole within pdu_timeout (slowloris)."""
        if self.framer.buffered and self.unfinished is None and self.config.pdu_timeout:
            self.unfinished = self.reactor.callLater(
                self.config.pdu_timeout, self.protocol_violation,
                f"request not complete within {self.config.pdu_timeout:g} s")
        elif not self.framer.buffered and self.unfinished is not None:
            if self.unfinished.active():
                self.unfinished.cancel()
            self.unfinished = None

    def _idle_expired(self) -> None:
        if self.held or self.watches:
            self.idle = Deadline(self.reactor, self.config.idle_timeout, self._idle_expired)
            return  # a request is being answered: not idle
        log.info("closing connection from %s: idle for %g s", self.client,
                 self.config.idle_timeout)
        self.emit(m.notice_of_disconnection(m.Result.UNAVAILABLE, "idle timeout"))
        self.emit(CLOSE)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        if self.unfinished is not None and self.unfinished.active():
            self.unfinished.cancel()
        self.front.limits.release(self.source)
        self.metrics.connection_closed("ldap")
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
        self.emit(CLOSE)

    def pump(self) -> None:
        """Handle queued client PDUs in order until one has to wait."""
        while self.queue and not self.held:
            pdu = self.queue[0]
            try:
                env = m.parse_envelope(pdu)
                if self._intercept(pdu, env):
                    continue
            except ProtocolViolation as exc:
                self.metrics.malformed("ldap")
                self.protocol_violation(str(exc))
                return
            if self.upstream is None:
                self._connect_then_pump()
                return
            self.queue.popleft()
            self.upstream.send(pdu)
            if env.op_tag == m.UNBIND_REQUEST:
                self.held = True
                self.emit(CLOSE)
                return

    def _intercept(self, pdu: bytes, env: m.Envelope) -> bool:
        """Handle the PDU at the head of the queue if policy needs it; False: pass it on."""
        op = env.op_tag
        if op == m.BIND_REQUEST:
            request = m.parse_bind_request(pdu, env)
            self._forget_identity()
            refusal = self._bind_refusal(request)
            if refusal is None and (request.sasl or request.anonymous):
                self.sasl_bound = request.sasl
                return False
            self.queue.popleft()
            if refusal is not None:
                self.answer(request.message_id, op, *refusal)
            else:
                self._check_bind(pdu, request)
            return True
        if op in _ALWAYS_ALLOWED:
            return False
        extended = passwd.parse_extended_request(pdu, env) if op == m.EXTENDED_REQUEST else None
        if self.restricted and (extended is None or extended.name not in _RESTRICTED_EXTENDED):
            self.queue.popleft()
            self.answer(env.message_id, op, m.Result.INSUFFICIENT_ACCESS, MUST_CHANGE_MESSAGE)
            return True
        if extended is not None and extended.name == STARTTLS_OID:
            self.queue.popleft()
            self._start_tls(env)
            return True
        if extended is not None and extended.name == passwd.PASSWORD_MODIFY_OID:
            self.queue.popleft()
            self._password_modify(pdu, env, passwd.parse_password_modify(extended.value))
            return True
        if op in (m.MODIFY_REQUEST, m.ADD_REQUEST):
            change = (passwd.parse_modify_password(pdu, env) if op == m.MODIFY_REQUEST
                      else passwd.parse_add_password(pdu, env))
            if change is None or (change.removes_all and not change.new):
                return False  # no password set (a removal leaves no password to check)
            self.queue.popleft()
            self._password_write(pdu, env, change)
            return True
        return False

    def _start_tls(self, env: m.Envelope) -> None:
        """StartTLS (RFC 4511 4.14): answered here, then TLS on this connection; the
        directory's side is its own business."""
        if self.front.server_tls is None:
            self.answer(env.message_id, m.EXTENDED_REQUEST, m.Result.PROTOCOL_ERROR,
                        "StartTLS is not available: no tls_certificate")
        elif self.tls:
            self.answer(env.message_id, m.EXTENDED_REQUEST, m.Result.OPERATIONS_ERROR,
                        "TLS is already established")
        elif self.out:
            self.answer(env.message_id, m.EXTENDED_REQUEST, m.Result.OPERATIONS_ERROR,
                        "answers are still pending")
        else:
            self.emit(m.ldap_result(env.message_id, m.EXTENDED_RESPONSE, m.Result.SUCCESS,
                                    extra=tlv(0x8A, STARTTLS_OID.encode())))
            # What is already written (the answer above) goes out in clear; then TLS.
            self.transport.startTLS(self.front.server_tls)  # type: ignore[union-attr]
            self.tls = True

    def _forget_identity(self) -> None:
        """A bind starts: the connection is anonymous until it succeeds (RFC 4511 4.2.1)."""
        self.bound_dn = self.bound_password = None
        self.sasl_bound = self.restricted = False

    def answer(self, message_id: int, op_tag: int, code: int, message: str = "",
               controls: bytes = b"") -> None:
        """Answer a request locally with an LDAPResult (nothing for abandon and unbind)."""
        response = m.RESPONSE_TO.get(op_tag)
        if response is not None:
            self.emit(m.ldap_result(message_id, response, code, message, controls))

    # -- output -------------------------------------------------------------------------------

    def emit(self, item: bytes | object) -> None:
        """Send a PDU (or CLOSE) to the client after whatever is ahead of it."""
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
            if head is CLOSE:
                self.out.clear()
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            self.transport.write(head)  # type: ignore[union-attr,arg-type]

    # -- upstream requests ------------------------------------------------------------------

    def _with_upstream(self, then: Callable[[], None], otherwise: Callable[[], None]) -> None:
        """Run ``then`` once the upstream connection is open, ``otherwise`` if none is."""
        def go(_: object = None) -> None:
            if self.upstream is None:
                otherwise()
            else:
                then()

        if self.upstream is None:
            self._connect().addBoth(go)
        else:
            go()

    def _watch(self, message_id: int, on_pdu: Callable[[bytes, m.Envelope], bool],
               on_lost: Callable[[], None]) -> None:
        """Read the responses to ``message_id`` (with the upstream timeout) before the client."""
        timer = self.reactor.callLater(self.config.upstream_timeout, self._timed_out,
                                       message_id)
        self.watches[message_id] = _Watch(on_pdu, on_lost, timer, self.reactor.seconds())

    def _timed_out(self, message_id: int) -> None:
        if message_id not in self.watches:
            return
        log.warning("directory did not answer within %ss", self.config.upstream_timeout)
        # The connection is in an unknown state: drop it; the next request opens a new one,
        # anonymous as a connection after a failed bind is (RFC 4511 4.2.1).
        self._drop_upstream()
        self._fail_watches()

    def _drop_upstream(self) -> None:
        """Close the upstream connection without hearing of it: the next request opens one."""
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            upstream.detach()
            upstream.transport.abortConnection()  # type: ignore[union-attr]

    def _internal_error(self, failure: Failure, message_id: int, op_tag: int) -> None:
        log.error("request could not be checked: %s", failure.getErrorMessage())
        self.answer(message_id, op_tag, m.Result.UNAVAILABLE, "temporarily unavailable")
        self._resume()

    def _resume(self) -> None:
        self.held = False
        if not self.client_gone:
            self.pump()


def _server_tls(config: ProxyConfig, old: ServerTLS | None) -> ServerTLS | None:
    """The certificate a reload names; the old one when the new cannot be loaded (logged)."""
    if not config.tls_certificate:
        return None
    try:
        return ServerTLS(config.tls_certificate, config.tls_private_key)
    except TlsError as exc:
        log.error("TLS certificate not reloaded, the old one stays: %s", exc)
        return old


class LdapFrontFactory(Factory):
    """Makes one LdapSession per client connection."""

    noisy = False

    def __init__(self, service: AuthService, config: ProxyConfig, reactor: Any,
                 connect: Connector = connect_upstream,
                 metrics: MetricsRecorder = NULL_METRICS) -> None:
        self.service = service
        self.metrics = metrics
        self.config = config
        self.reactor = reactor
        self.health = UpstreamHealth(config.upstream, reactor)
        self.upstream_tls = UpstreamTLS(config.upstream_ca_file, config.upstream_starttls)
        self.connect_tls = connect is connect_upstream  # not a test's fake: TLS settings apply
        self.connect: Connector = (
            functools.partial(connect_upstream, health=self.health, tls=self.upstream_tls)
            if self.connect_tls else connect)
        # The certificate for StartTLS and ssl: listeners (reloaded on SIGHUP).
        self.server_tls = (ServerTLS(config.tls_certificate, config.tls_private_key)
                           if config.tls_certificate else None)  # TlsError: cannot start
        self.limits = ConnectionLimits(config.max_connections,
                                       config.max_connections_per_source, reactor)

    def reconfigure(self, config: ProxyConfig) -> None:
        """New connections take ``config``; open ones keep theirs (SIGHUP)."""
        if config.upstream != self.config.upstream:
            self.health.upstreams = config.upstream
        if (config.tls_certificate, config.tls_private_key) != (self.config.tls_certificate,
                                                                 self.config.tls_private_key):
            self.server_tls = _server_tls(config, self.server_tls)
        elif self.server_tls is not None:
            self.server_tls.reload()
        self.upstream_tls = UpstreamTLS(config.upstream_ca_file, config.upstream_starttls)
        if self.connect_tls:
            self.connect = functools.partial(connect_upstream, health=self.health,
                                             tls=self.upstream_tls)
        self.limits.total = config.max_connections
        self.limits.per_source = config.max_connections_per_source
        self.config = config

    def buildProtocol(self, addr: Any) -> LdapSession | None:
        """A session, or None (the connection is closed at once) over a connection limit."""
        source = getattr(addr, "host", "")
        refused = self.limits.admit(source)
        if refused is not None:
            self.metrics.connection_refused(refused)
            return None
        session = LdapSession(self)
        session.source = source
        return session
