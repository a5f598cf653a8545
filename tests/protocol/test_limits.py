"""Connection limits and timeouts of the LDAP front, on a fake transport and clock."""
from __future__ import annotations

from typing import Any

import ldapwire as w
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from proxy.ldap import messages as m

ALICE = "uid=alice,ou=people,dc=example,dc=org"
IDLE = m.notice_of_disconnection(m.Result.UNAVAILABLE, "idle timeout")
MALFORMED = m.notice_of_disconnection(m.Result.PROTOCOL_ERROR, "malformed PDU")


def open_from(harness: Any, host: str) -> tuple[Any, StringTransport]:
    address = IPv4Address("TCP", host, 40000)
    session = harness.factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    if session is not None:
        session.makeConnection(transport)
    return session, transport


def test_total_limit_refuses_and_frees(make_harness: Any) -> None:
    """Over max_connections a new connection gets no session (Twisted closes it at once);
    when one closes, a new one is accepted again."""
    harness = make_harness(extra="max_connections = 2\n")
    first, _ = open_from(harness, "192.0.2.1")
    second, _ = open_from(harness, "192.0.2.2")
    assert open_from(harness, "192.0.2.3")[0] is None
    first.connectionLost(None)
    assert open_from(harness, "192.0.2.3")[0] is not None
    assert harness.factory.limits.open == 2


def test_per_source_limit(make_harness: Any) -> None:
    """One address may hold max_connections_per_source connections; others still connect."""
    harness = make_harness(extra="max_connections_per_source = 2\n")
    assert all(open_from(harness, "192.0.2.9")[0] is not None for _ in range(2))
    assert open_from(harness, "192.0.2.9")[0] is None
    assert open_from(harness, "192.0.2.10")[0] is not None


def test_idle_connection_is_closed(make_harness: Any) -> None:
    """A connection without a request for idle_timeout seconds gets a Notice of
    Disconnection and is closed; each request starts the count again."""
    harness = make_harness(extra="idle_timeout = 60\n")
    session, transport = open_from(harness, "192.0.2.1")
    harness.clock.advance(50)
    session.dataReceived(w.search_request(1, "dc=example,dc=org"))
    harness.directory.answer(w.search_done(1))
    transport.clear()
    harness.clock.advance(50)
    assert transport.value() == b"" and not transport.disconnecting
    harness.clock.advance(11)
    assert transport.value() == IDLE and transport.disconnecting


def test_a_request_being_answered_is_not_idle(make_harness: Any) -> None:
    """A bind still waiting for the directory keeps the connection open past idle_timeout."""
    harness = make_harness(extra="idle_timeout = 1\n")  # upstream_timeout is 5
    session, transport = open_from(harness, "192.0.2.1")
    session.dataReceived(w.bind_request(1, ALICE, "pw"))
    harness.clock.advance(2)
    assert not transport.disconnecting
    harness.directory.answer(w.bind_response(1, 0))
    assert transport.value() == w.bind_response(1, 0)


def test_slowloris_is_cut_off(make_harness: Any) -> None:
    """A request begun but not finished within pdu_timeout closes that connection (a Notice
    of Disconnection); another connection is not affected."""
    harness = make_harness(extra="pdu_timeout = 10\n")
    slow, slow_transport = open_from(harness, "192.0.2.66")
    other, other_transport = open_from(harness, "192.0.2.1")
    request = w.bind_request(1, ALICE, "pw")
    slow.dataReceived(request[:5])
    harness.clock.advance(9)
    slow.dataReceived(request[5:8])  # a byte now and then does not help
    harness.clock.advance(1)
    assert slow_transport.value() == MALFORMED and slow_transport.disconnecting
    other.dataReceived(w.bind_request(1, ALICE, "pw"))
    harness.directory.answer(w.bind_response(1, 0))
    assert other_transport.value() == w.bind_response(1, 0)


def test_whole_requests_in_pieces_are_fine(make_harness: Any) -> None:
    """A request that arrives whole in time, however split, is served; the timer stops."""
    harness = make_harness(extra="pdu_timeout = 10\n")
    session, transport = open_from(harness, "192.0.2.1")
    request = w.bind_request(1, ALICE, "pw")
    session.dataReceived(request[:5])
    harness.clock.advance(9)
    session.dataReceived(request[5:])
    harness.clock.advance(2)
    harness.directory.answer(w.bind_response(1, 0))
    assert transport.value() == w.bind_response(1, 0) and not transport.disconnecting
