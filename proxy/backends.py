"""Backends that check a password for the PAM front: the directory (bind as the user, over a
connection of bindguard's own) and, for local accounts, an existing PAM service (python-pam).

The LDAP front needs no backend of its own: it forwards the client's own PDUs.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from proxy.config import Config
from proxy.ldap import messages as m
from proxy.ldap import passwd
from proxy.ldap.ber import ProtocolViolation, tlv
from proxy.ldap.upstream import (
    UpstreamConnection,
    UpstreamHealth,
    UpstreamTLS,
    connect_upstream,
)
from proxy.metrics import NULL_METRICS, MetricsRecorder
from proxy.service import DirectoryRecord

log = logging.getLogger(__name__)

INVALID_CREDENTIALS = 49


class DirectoryUnavailable(Exception):
    """No directory answered in time."""


class _Exchange:
    """One short LDAP conversation: requests sent in turn, responses read by message ID."""

    def __init__(self, reactor: Any, timeout: float, metrics: MetricsRecorder) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.metrics = metrics
        self.connection: UpstreamConnection | None = None
        self.waiting: dict[int, tuple[Deferred[Any], Callable[[bytes, m.Envelope], bool],
                                      Any, float]] = {}

    def ask(self, pdu: bytes, on_pdu: Callable[[bytes, m.Envelope], bool]) -> Deferred[None]:
        """Send ``pdu``; fires once ``on_pdu`` says the last response is in."""
        assert self.connection is not None
        env = m.parse_envelope(pdu)
        d: Deferred[None] = Deferred()
        timer = self.reactor.callLater(self.timeout, self._lost, "no answer in time")
        self.waiting[env.message_id] = (d, on_pdu, timer, self.reactor.seconds())
        self.connection.send(pdu)
        return d

    def upstream_pdus(self, pdus: list[bytes]) -> None:
        for pdu in pdus:
            try:
                env = m.parse_envelope(pdu)
            except ProtocolViolation as exc:
                self._lost(f"malformed response: {exc}")
                return
            entry = self.waiting.get(env.message_id)
            if entry is not None and entry[1](pdu, env):
                del self.waiting[env.message_id]
                if self.connection is not None:
                    self.metrics.upstream_answered(self.connection.uri,
                                                   self.reactor.seconds() - entry[3])
                if entry[2].active():
                    entry[2].cancel()
                entry[0].callback(None)

    def upstream_lost(self, why: str) -> None:
        self._lost(why)

    def _lost(self, why: str) -> None:
        waiting, self.waiting = self.waiting, {}
        for d, _, timer, _ in waiting.values():
            if timer.active():
                timer.cancel()
            d.errback(DirectoryUnavailable(why))
        self.close()

    def close(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            connection.send(tlv(0x30, tlv(0x02, b"\x7f") + tlv(m.UNBIND_REQUEST, b"")))
            connection.close()


class DirectoryBackend:
    """Checks a password by binding as the user, on a connection of its own."""

    def __init__(self, config: Config, reactor: Any, health: UpstreamHealth | None = None,
                 metrics: MetricsRecorder = NULL_METRICS) -> None:
        self.upstreams = config.proxy.upstream
        self.metrics = metrics
        self.timeout = config.proxy.upstream_timeout
        self.reactor = reactor
        self.health = health  # shared with the LDAP front: one view of which directory is down
        self.tls = UpstreamTLS(config.proxy.upstream_ca_file, config.proxy.upstream_starttls)

    def _open(self) -> Deferred[_Exchange]:
        exchange = _Exchange(self.reactor, self.timeout, self.metrics)

        def connected(connection: UpstreamConnection) -> _Exchange:
            exchange.connection = connection
            return exchange

        d = connect_upstream(self.reactor, self.upstreams, self.timeout, exchange, self.health,
                             self.tls)
        return d.addCallbacks(connected, lambda f: fail(DirectoryUnavailable(
            f.getErrorMessage())))

    def authenticate(self, dn: str, password: str, attributes: list[str] | None
                     ) -> Deferred[tuple[int, DirectoryRecord]]:
        """Bind as ``dn``: (result code, what the entry says of the password when asked).

        Errbacks with DirectoryUnavailable when no directory answers in time.
        """
        def run(exchange: _Exchange) -> Deferred[tuple[int, DirectoryRecord]]:
            outcome: dict[str, Any] = {"code": None, "found": {}}

            def bound(p: bytes, e: m.Envelope) -> bool:
                outcome["code"] = m.result_code(p, e)
                return True

            def entry(p: bytes, e: m.Envelope) -> bool:
                if e.op_tag == m.SEARCH_RESULT_ENTRY:
                    outcome["found"].update(passwd.parse_search_entry(p, e))
                return e.op_tag == m.SEARCH_RESULT_DONE

            def read(_: object) -> Deferred[None] | None:
                if outcome["code"] != 0 or not attributes:
                    return None
                return exchange.ask(passwd.search_base_request(2, dn, attributes), entry)

            def done(_: object) -> tuple[int, DirectoryRecord]:
                exchange.close()
                return outcome["code"], passwd.directory_record(outcome["found"])

            d = exchange.ask(m.simple_bind_request(1, dn, password), bound)
            return d.addCallback(read).addCallback(done).addErrback(_closing(exchange))

        return self._open().addCallback(run)

    def change_password(self, dn: str, old: str, new: str) -> Deferred[tuple[int, int | None]]:
        """Bind as ``dn`` with ``old``, then Password Modify to ``new`` as the user:
        (bind result, change result or None when the bind failed)."""
        def run(exchange: _Exchange) -> Deferred[tuple[int, int | None]]:
            codes: list[int] = []

            def answered(p: bytes, e: m.Envelope) -> bool:
                codes.append(m.result_code(p, e))
                return True

            def modify(_: object) -> Deferred[None] | None:
                if codes[0] != 0:
                    return None
                return exchange.ask(passwd.password_modify_request(2, dn, old, new), answered)

            def done(_: object) -> tuple[int, int | None]:
                exchange.close()
                return codes[0], codes[1] if len(codes) > 1 else None

            d = exchange.ask(m.simple_bind_request(1, dn, old), answered)
            return d.addCallback(modify).addCallback(done).addErrback(_closing(exchange))

        return self._open().addCallback(run)


def _closing(exchange: _Exchange) -> Callable[[Failure], Failure]:
    def close(failure: Failure) -> Failure:
        exchange.close()
        return failure
    return close


class PamBackend:
    """Checks a local account's password with an existing PAM service, on the thread pool."""

    def __init__(self, service: str, offload: Callable[..., Deferred[Any]]) -> None:
        self.service = service
        self.offload = offload

    def authenticate(self, user: str, password: str) -> Deferred[int]:
        """0 when the PAM service accepts the password, else 49."""
        return self.offload(self._authenticate, user, password)

    def _authenticate(self, user: str, password: str) -> int:
        import pam  # python-pam: imported here, the LDAP-only daemon never loads libpam

        checker = pam.pam()
        # resetcreds=False: only the password is checked; credentials are the caller's business.
        if checker.authenticate(user, password, service=self.service, resetcreds=False):
            return 0
        log.info("PAM service %s refused %s: %s", self.service, user, checker.reason)
        return INVALID_CREDENTIALS

    def __repr__(self) -> str:
        return f"PamBackend({self.service!r})"
