"""A proxy session on fake transports: the client and the directory are byte buffers."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import StringTransport

from proxy.ldap.session import LdapFrontFactory, LdapSession
from proxy.ldap.upstream import UpstreamConnection, UpstreamUnavailable
from proxy.sealed import SecretBox
from proxy.store.sqlite import SqliteStore

T0 = 1_800_000_000.0


@dataclass
class FakeDirectory:
    """Stands in for the network: records connections; can refuse or never answer."""

    reachable: bool = True
    pending: bool = False  # connect() returns a Deferred the test fires
    connections: list[UpstreamConnection] = field(default_factory=list)
    waiting: list[Deferred[UpstreamConnection]] = field(default_factory=list)

    def connect(self, reactor: Any, upstreams: Any, timeout: float,
                listener: Any) -> Deferred[UpstreamConnection]:
        if not self.reachable:
            return fail(UpstreamUnavailable("ldap://fake: connection refused"))
        connection = UpstreamConnection(listener, "ldap://fake")
        connection.makeConnection(StringTransport())
        self.connections.append(connection)
        if self.pending:
            d: Deferred[UpstreamConnection] = Deferred()
            self.waiting.append(d)
            d.addCallback(lambda _: connection)
            return d
        return succeed(connection)

    @property
    def last(self) -> UpstreamConnection:
        return self.connections[-1]

    def received(self, index: int = -1) -> bytes:
        """What the directory connection got from the proxy."""
        return self.connections[index].transport.value()  # type: ignore[union-attr]

    def answer(self, pdu: bytes, index: int = -1) -> None:
        """The directory sends ``pdu``."""
        self.connections[index].dataReceived(pdu)


@dataclass
class Harness:
    """One proxy session with its fake client transport, directory, clock and state."""

    clock: task.Clock
    directory: FakeDirectory
    factory: LdapFrontFactory
    store: SqliteStore
    audit_path: Path
    box: SecretBox | None = None  # opens the TOTP secrets of the service, when it has a key
    config: Any = None  # the parsed configuration

    def session(self) -> tuple[LdapSession, StringTransport]:
        session = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
        session.makeConnection(transport)
        return session, transport

    def audit(self) -> list[dict[str, str]]:
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


CONFIG = """
[proxy]
upstream = ldap://127.0.0.1:1
upstream_timeout = 5
max_pdu_size = 4096
state = {state}
audit_log = {audit}
{extra}
[security_compliance]
lockout_failure_attempts = 3
lockout_duration = 600
"""
