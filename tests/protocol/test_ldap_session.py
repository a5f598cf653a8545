"""The LDAP front as bytes in, bytes out: fake transports, a task.Clock, a real SQLite store."""
from __future__ import annotations

import ldapwire as w
from harness import Harness

from proxy.identity import canonical_dn
from proxy.ldap import messages as m

ALICE = "uid=alice,ou=people,dc=example,dc=org"
LOCKED_CONTROL = [(w.PPOLICY, False, bytes.fromhex("3003810101"))]


def fail_binds(h: Harness, count: int, dn: str = ALICE) -> None:
    """``count`` wrong binds on one connection, each answered 49 by the directory."""
    session, client = h.session()
    for i in range(1, count + 1):
        session.dataReceived(w.bind_request(i, dn, "wrong"))
        h.directory.answer(w.bind_response(i, 49))
    assert client.value() == b"".join(w.bind_response(i, 49) for i in range(1, count + 1))


def test_bind_is_forwarded_and_answered_unchanged(harness: Harness) -> None:
    """A good bind reaches the directory byte for byte and its answer returns byte for byte."""
    session, client = harness.session()
    request = w.bind_request(1, ALICE, "alice-pass", [(w.PPOLICY, False, None)])
    session.dataReceived(request)
    assert harness.directory.received() == request
    response = w.bind_response(1, 0, controls=[(w.PPOLICY, False, bytes.fromhex("3000"))])
    harness.directory.answer(response)
    assert client.value() == response
    [event] = harness.audit()
    assert event["event"] == "auth.success" and event["user"] == canonical_dn(ALICE)
    assert event["client"] == "192.0.2.7" and event["front"] == "ldap"


def test_failures_lock_and_the_lock_never_reaches_the_directory(harness: Harness) -> None:
    """After 3 refused passwords the 4th bind is answered 49 by the proxy, not the directory."""
    fail_binds(harness, 3)
    session, client = harness.session()
    session.dataReceived(w.bind_request(7, ALICE, "alice-pass"))
    assert client.value() == w.bind_response(7, 49)
    assert len(harness.directory.connections) == 1  # the locked bind opened no connection
    events = [(e["event"], e.get("reason")) for e in harness.audit()]
    assert events == [("auth.failure", "invalid_credentials")] * 3 + [
        ("account.locked", "failure_threshold"), ("auth.failure", "locked")]


def test_lock_looks_like_a_wrong_password(harness: Harness) -> None:
    """The locked refusal is the same bytes as the directory's own wrong-password answer."""
    fail_binds(harness, 3)
    session, client = harness.session()
    session.dataReceived(w.bind_request(4, ALICE, "wrong"))
    assert client.value() == w.bind_response(4, 49)


def test_ppolicy_control_says_account_locked(harness: Harness) -> None:
    """With the password policy request control, the locked refusal carries accountLocked."""
    fail_binds(harness, 3)
    session, client = harness.session()
    session.dataReceived(w.bind_request(2, ALICE, "alice-pass", [(w.PPOLICY, False, None)]))
    assert client.value() == w.bind_response(2, 49, controls=LOCKED_CONTROL)


def test_lock_ends_after_duration(harness: Harness) -> None:
    """Once lockout_duration has passed on the clock, binds reach the directory again."""
    fail_binds(harness, 3)
    harness.clock.advance(601)
    session, client = harness.session()
    request = w.bind_request(1, ALICE, "alice-pass")
    session.dataReceived(request)
    assert harness.directory.received() == request


def test_dn_spelling_does_not_escape_the_count(harness: Harness) -> None:
    """Failures under different spellings of one DN count toward the same account."""
    fail_binds(harness, 2)
    fail_binds(harness, 1, "UID=Alice, OU=People,DC=Example,DC=Org")
    session, client = harness.session()
    session.dataReceived(w.bind_request(1, ALICE, "alice-pass"))
    assert client.value() == w.bind_response(1, 49)


def test_administrator_is_not_exempt(harness: Harness) -> None:
    """The directory administrator's DN locks like any other account."""
    fail_binds(harness, 3, "cn=admin,dc=example,dc=org")
    session, client = harness.session()
    session.dataReceived(w.bind_request(1, "cn=admin,dc=example,dc=org", "admin"))
    assert client.value() == w.bind_response(1, 49)


def test_search_and_controls_pass_through_raw(harness: Harness) -> None:
    """A search with the paged-results control and its results pass through untouched."""
    session, client = harness.session()
    search = w.search_request(5, "dc=example,dc=org",
                              [(w.PAGED, True, bytes.fromhex("300502010204" + "00"))])
    session.dataReceived(search)
    assert harness.directory.received() == search
    done = w.search_done(5) + w.search_done(6)
    harness.directory.answer(done[:7])
    harness.directory.answer(done[7:])
    assert client.value() == done
    assert harness.audit_path.exists() is False or harness.audit() == []


def test_pipelined_requests_wait_behind_a_bind(harness: Harness) -> None:
    """A request sent right after a bind reaches the directory once the bind is decided
    (RFC 4511 4.2.1: it runs as whoever the bind made the connection), in order."""
    harness.directory.pending = True
    session, client = harness.session()
    bind, search = w.bind_request(1, ALICE, "pw"), w.search_request(2, "dc=example,dc=org")
    session.dataReceived(bind + search)
    assert harness.directory.received() == b""
    harness.directory.waiting[0].callback(None)
    assert harness.directory.received() == bind
    harness.directory.answer(w.bind_response(1, 0))
    assert harness.directory.received() == bind + search
    assert client.value() == w.bind_response(1, 0)


def test_malformed_pdu_closes_only_that_connection(harness: Harness) -> None:
    """Garbage gets a Notice of Disconnection and a close; another session carries on."""
    bad, bad_client = harness.session()
    good, good_client = harness.session()
    bad.dataReceived(b"\x02\x01\x00garbage")
    notice = m.notice_of_disconnection(m.Result.PROTOCOL_ERROR, "malformed PDU")
    assert bad_client.value() == notice
    assert bad_client.disconnecting
    assert harness.directory.connections == []
    good.dataReceived(w.bind_request(1, ALICE, "pw"))
    harness.directory.answer(w.bind_response(1, 0))
    assert good_client.value() == w.bind_response(1, 0)
    assert not good_client.disconnecting


def test_oversized_pdu_is_refused_before_it_is_buffered(harness: Harness) -> None:
    """A header announcing more than max_pdu_size closes the connection at once."""
    session, client = harness.session()
    session.dataReceived(b"\x30\x84\x00\x10\x00\x00")  # 1 MiB announced, limit 4096
    assert client.disconnecting
    assert session.framer.buffered <= 6


def test_bind_timeout_answers_52_and_counts_nothing(harness: Harness) -> None:
    """A directory that never answers gives 52 after upstream_timeout; no failure is counted."""
    session, client = harness.session()
    session.dataReceived(w.bind_request(1, ALICE, "wrong"))
    harness.clock.advance(4.9)
    assert client.value() == b""
    harness.clock.advance(0.2)
    response = m.ldap_result(1, m.BIND_RESPONSE, 52, "directory unavailable")
    assert client.value() == response
    assert harness.store.get(canonical_dn(ALICE)).failures == ()  # type: ignore[union-attr]
    assert harness.audit()[-1]["reason"] == "directory_unavailable"
    # The session recovers: the next bind opens a new upstream connection.
    session.dataReceived(w.bind_request(2, ALICE, "alice-pass"))
    harness.directory.answer(w.bind_response(2, 0))
    assert client.value() == response + w.bind_response(2, 0)
    assert len(harness.directory.connections) == 2


def test_unreachable_directory_answers_52(harness: Harness) -> None:
    """No reachable directory: binds and searches get 52 and the connection stays usable."""
    harness.directory.reachable = False
    session, client = harness.session()
    session.dataReceived(w.bind_request(1, ALICE, "pw") + w.search_request(2, "dc=x"))
    assert client.value() == (
        m.ldap_result(1, m.BIND_RESPONSE, 52, "directory unavailable")
        + m.ldap_result(2, m.SEARCH_RESULT_DONE, 52, "directory unavailable"))
    assert not client.disconnecting
    harness.directory.reachable = True
    session.dataReceived(w.bind_request(3, ALICE, "pw"))
    harness.directory.answer(w.bind_response(3, 0))
    assert client.value().endswith(w.bind_response(3, 0))


def test_hanging_up_does_not_escape_the_count(harness: Harness) -> None:
    """A client that closes before the answer still has its wrong password counted."""
    session, client = harness.session()
    session.dataReceived(w.bind_request(1, ALICE, "wrong"))
    session.connectionLost()
    harness.directory.answer(w.bind_response(1, 49))
    assert len(harness.store.get(canonical_dn(ALICE)).failures) == 1  # type: ignore[union-attr]
    assert harness.directory.last.transport.disconnecting  # type: ignore[union-attr]


def test_directory_closing_ends_the_session(harness: Harness) -> None:
    """When the directory drops the connection, the client gets a notice and is closed."""
    session, client = harness.session()
    session.dataReceived(w.search_request(1, "dc=x"))
    harness.directory.last.connectionLost()
    assert client.value() == m.notice_of_disconnection(52, "directory unavailable")
    assert client.disconnecting


def test_anonymous_and_sasl_binds_pass_through(harness: Harness) -> None:
    """Anonymous and SASL binds go to the directory unchecked and are not audited."""
    session, _ = harness.session()
    anonymous, sasl = w.bind_request(1, "", ""), w.sasl_bind_request(2)
    session.dataReceived(anonymous + sasl)
    assert harness.directory.received() == anonymous + sasl
    assert not harness.audit_path.exists() or harness.audit() == []


def test_anonymous_and_sasl_binds_can_be_refused(make_harness) -> None:  # type: ignore[no-untyped-def]
    """allow_anonymous / allow_sasl = false answer 53 / 7 without the directory."""
    h = make_harness("allow_anonymous = false\nallow_sasl = false")
    session, client = h.session()
    session.dataReceived(w.bind_request(1, ALICE, "") + w.sasl_bind_request(2))
    assert client.value() == (
        m.ldap_result(1, m.BIND_RESPONSE, 53, "anonymous binds are not allowed")
        + m.ldap_result(2, m.BIND_RESPONSE, 7, "SASL binds are not allowed"))
    assert h.directory.connections == []


def test_unbind_is_forwarded_and_closes(harness: Harness) -> None:
    """An UnbindRequest goes to the directory and the client connection is closed."""
    session, client = harness.session()
    session.dataReceived(w.search_request(1, "dc=x") + w.unbind_request(2))
    assert harness.directory.received().endswith(w.unbind_request(2))
    assert client.disconnecting


def test_concurrent_binds_wait_for_a_place(harness: Harness) -> None:
    """With 3 attempts allowed, a 4th concurrent bind waits and reaches the directory only
    when an attempt in flight succeeds."""
    sessions = [harness.session() for _ in range(4)]
    for session, _ in sessions:
        session.dataReceived(w.bind_request(1, ALICE, "alice-pass"))
    assert len(harness.directory.connections) == 3
    harness.directory.answer(w.bind_response(1, 0), index=0)
    assert len(harness.directory.connections) == 4
    assert sessions[0][1].value() == w.bind_response(1, 0)
