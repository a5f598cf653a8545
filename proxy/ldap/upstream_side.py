"""The side of a client session that faces the directory: its own upstream connection, opened
at the first request that needs it, and the directory's PDUs passed back (the responses the
session watches read first). A mixin of LdapSession."""
from __future__ import annotations

import logging

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from proxy.ldap import messages as m
from proxy.ldap.ber import ProtocolViolation
from proxy.ldap.parts import CLOSE, SessionParts
from proxy.ldap.upstream import UpstreamConnection

log = logging.getLogger(__name__)


class UpstreamSide(SessionParts):
    """The directory's side of one client session."""

    def _connect(self) -> Deferred[UpstreamConnection | None]:
        d = self.connect(self.reactor, self.config.upstream, self.config.upstream_timeout,
                             self)

        def connected(upstream: UpstreamConnection) -> None:
            if self.client_gone and not self.watches:
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
        """Pass the directory's PDUs to the client, reading the responses the session watches."""
        if self.idle is not None:
            self.idle.touch()
        for pdu in pdus:
            if self.watches:
                try:
                    env = m.parse_envelope(pdu)
                    watch = self.watches.get(env.message_id)
                    if watch is not None:
                        if watch.sent_at is not None and self.upstream is not None:
                            self.metrics.upstream_answered(
                                self.upstream.uri, self.reactor.seconds() - watch.sent_at)
                            watch.sent_at = None
                        if watch.on_pdu(pdu, env):
                            if watch.timer.active():
                                watch.timer.cancel()
                            if self.watches.get(env.message_id) is watch:
                                del self.watches[env.message_id]
                        continue
                except ProtocolViolation as exc:
                    self.upstream_lost(f"malformed response from the directory: {exc}")
                    return
            self.emit(pdu)
        self._close_upstream_when_idle()

    def upstream_lost(self, why: str) -> None:
        """The directory closed our connection: the session's state is gone with it."""
        self.upstream = None
        self._fail_watches()
        if not self.client_gone:
            log.info("closing connection from %s: %s", self.client, why)
            self.emit(m.notice_of_disconnection(m.Result.UNAVAILABLE, "directory unavailable"))
            self.emit(CLOSE)

    def _fail_watches(self) -> None:
        watches, self.watches = self.watches, {}
        for watch in watches.values():
            if watch.timer.active():
                watch.timer.cancel()
            watch.on_lost()

    def _close_upstream_when_idle(self) -> None:
        if self.client_gone and not self.watches and self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            upstream.close()
