"""A proxy session on fake transports: the client and the directory are byte buffers."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import StringTransport

sys.path.insert(0, str(Path(__file__).parent))

from proxy.audit import AuditLog  # noqa: E402
from proxy.config import parse_config  # noqa: E402
from proxy.ldap.session import LdapFrontFactory, LdapSession  # noqa: E402
from proxy.ldap.upstream import UpstreamConnection, UpstreamUnavailable  # noqa: E402
from proxy.service import AuthService  # noqa: E402
from proxy.store.sqlite import SqliteStore  # noqa: E402
from proxy.store.worker import ImmediateRunner  # noqa: E402

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


@pytest.fixture
def make_harness(tmp_path: Path) -> Any:
    """Build a Harness; keyword ``extra`` adds [proxy] lines."""
    stores: list[SqliteStore] = []

    def make(extra: str = "") -> Harness:
        audit_path = tmp_path / "audit.jsonl"
        config = parse_config(CONFIG.format(state=tmp_path / "state.sqlite", audit=audit_path,
                                            extra=extra))
        clock = task.Clock()
        clock.advance(T0)
        store = SqliteStore(config.proxy.state)
        stores.append(store)
        directory = FakeDirectory()
        service = AuthService(config, ImmediateRunner(store), AuditLog(str(audit_path),
                                                                       clock.seconds), clock)
        factory = LdapFrontFactory(service, config.proxy, clock, directory.connect)
        return Harness(clock, directory, factory, store, audit_path)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def harness(make_harness: Any) -> Harness:
    """The default Harness: lockout after 3 failures for 600 s, 5 s upstream timeout."""
    return make_harness()
