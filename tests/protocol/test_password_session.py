"""Password changes through the LDAP front as bytes in, bytes out: Password Modify, Modify,
must-change sessions, the read of the directory's password facts, and the rescue change."""
from __future__ import annotations

import time
from typing import Any

import ldapwire as w
import pytest
from harness import T0, Harness
from twisted.internet.testing import StringTransport

from proxy.identity import canonical_dn
from proxy.ldap.session import LdapSession

ALICE = "uid=alice,ou=people,dc=example,dc=org"
ADMIN = "cn=admin,dc=example,dc=org"
ADMIN_PW = "Admin-Secret-0"
P0, P1, P2, P3 = "Kettle-Blue-70", "Lantern-Red-81", "Harbor-Green-92", "Meadow-Gold-03"
ATTRIBUTES = ["pwdChangedTime", "pwdReset", "shadowLastChange", "pwdLastSet"]
DAY = 86400
PPOLICY_REQUEST = [(w.PPOLICY, False, None)]

QUALITY = """password_min_length = 12
password_min_character_classes = 3
unique_last_password_count = 3
minimum_password_age = 1
"""
HISTORY = """password_min_length = 12
unique_last_password_count = 3
"""
REGEX = """password_regex = ^[A-Za-z0-9]+$
password_regex_description = letters and digits only
"""
FIRST_USE = """password_min_length = 12
password_min_character_classes = 3
unique_last_password_count = 3
change_password_upon_first_use = true
"""
EXPIRY = """password_expires_days = 30
"""

TOO_SHORT = "password_min_length: at least 12 characters"
TOO_FEW_CLASSES = ("password_min_character_classes: at least 3 of lower case, upper case, "
                   "digits and other characters")
IN_HISTORY = "unique_last_password_count: the password was used recently"
TOO_YOUNG = "minimum_password_age: the password can be changed 1 day after its last change"
MUST_CHANGE = ("password change required: change the password (Password Modify, e.g. "
               "ldappasswd) before anything else")
PREHASHED = ("the password must be given as UTF-8 text: a pre-hashed value cannot be checked "
             "against the password rules")

Session = tuple[LdapSession, StringTransport]


def login(h: Harness, dn: str = ALICE, password: str = P0, message_id: int = 1,
          entry: list[tuple[str, list[str | bytes]]] | None = None,
          controls: Any = ()) -> Session:
    """A session bound as ``dn``; the directory accepts the bind and, when the proxy reads the
    entry, returns ``entry``. The client's buffer is cleared after the BindResponse."""
    session, client = h.session()
    bind = w.bind_request(message_id, dn, password, controls)
    session.dataReceived(bind)
    h.directory.answer(w.bind_response(message_id, 0))
    if h.directory.received() != bind:
        assert h.directory.received() == bind + w.base_search(message_id, dn, ATTRIBUTES)
        if entry is not None:
            h.directory.answer(w.search_entry(message_id, dn, entry))
        h.directory.answer(w.search_done(message_id))
    else:
        assert entry is None, "the proxy did not read the entry"
    assert client.value().startswith(b"\x30")
    client.clear()
    return session, client


def events(h: Harness) -> list[tuple[str, str | None]]:
    return [(e["event"], e.get("reason")) for e in h.audit()]


def changed(h: Harness, session: Session, message_id: int, new: str, index: int = -1,
            **parts: Any) -> None:
    """A Password Modify that passes and that the directory accepts."""
    s, client = session
    request = w.password_modify(message_id, new=new, **parts)
    before = h.directory.received(index)
    s.dataReceived(request)
    assert h.directory.received(index) == before + request
    client.clear()
    h.directory.answer(w.extended_response(message_id, 0), index=index)
    assert client.value() == w.extended_response(message_id, 0)
    client.clear()


def refused(h: Harness, session: Session, message_id: int, new: str, message: str,
            error: int) -> None:
    """A Password Modify answered 19 by the proxy with the ppolicy error; the directory sees
    nothing."""
    s, client = session
    client.clear()
    before = [c.transport.value() for c in h.directory.connections]  # type: ignore[union-attr]
    s.dataReceived(w.password_modify(message_id, new=new, controls=PPOLICY_REQUEST))
    assert client.value() == w.extended_response(message_id, 19, message,
                                                 controls=w.ppolicy_response(error))
    assert [c.transport.value() for c in h.directory.connections] == before  # type: ignore
    client.clear()


def gtime(seconds: float) -> str:
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(seconds))


# -- self-service changes ----------------------------------------------------------------------


def test_good_password_modify_is_forwarded_unchanged(make_harness: Any) -> None:
    """A bound user's Password Modify with a good new password reaches the directory byte for
    byte; the directory's success reaches the client byte for byte; password.changed (self)."""
    h = make_harness(compliance=QUALITY)
    session, client = login(h)
    request = w.password_modify(2, new=P1)
    session.dataReceived(request)
    assert h.directory.received() == w.bind_request(1, ALICE, P0) + request
    assert client.value() == b""
    response = w.extended_response(2, 0, "password changed")
    h.directory.answer(response)
    assert client.value() == response
    assert events(h) == [("auth.success", None), ("password.changed", "self")]
    assert h.audit()[-1]["user"] == canonical_dn(ALICE)


@pytest.mark.parametrize(("new", "message", "error", "rule"), [
    ("Sh0rt-pw", TOO_SHORT, 6, "password_min_length"),
    ("alllowercase1234", TOO_FEW_CLASSES, 5, "password_min_character_classes"),
])
@pytest.mark.parametrize("with_control", [False, True])
def test_weak_password_is_refused(make_harness: Any, new: str, message: str, error: int,
                                  rule: str, with_control: bool) -> None:
    """A new password breaking a quality rule gets constraintViolation (19) naming the rule;
    nothing reaches the directory; password.rejected with the rule. With the ppolicy request
    control the response carries passwordTooShort (6) / insufficientPasswordQuality (5)."""
    h = make_harness(compliance=QUALITY)
    session, client = login(h)
    controls = PPOLICY_REQUEST if with_control else []
    session.dataReceived(w.password_modify(2, new=new, controls=controls))
    expected_controls = w.ppolicy_response(error) if with_control else []
    assert client.value() == w.extended_response(2, 19, message, controls=expected_controls)
    assert h.directory.received() == w.bind_request(1, ALICE, P0)
    assert events(h) == [("auth.success", None), ("password.rejected", rule)]


def test_regex_refusal_says_the_description(make_harness: Any) -> None:
    """A password failing password_regex is refused with password_regex_description as the
    message and insufficientPasswordQuality (5)."""
    h = make_harness(compliance=REGEX)
    session, client = login(h)
    session.dataReceived(w.password_modify(2, new="has-a-dash", controls=PPOLICY_REQUEST))
    assert client.value() == w.extended_response(2, 19, "letters and digits only",
                                                 controls=w.ppolicy_response(5))
    assert h.directory.received() == w.bind_request(1, ALICE, P0)
    assert events(h)[-1] == ("password.rejected", "password_regex")


# -- history -----------------------------------------------------------------------------------


def test_current_password_is_in_history(make_harness: Any) -> None:
    """Changing to the password the session bound with is refused: passwordInHistory (8)."""
    h = make_harness(compliance=HISTORY)
    session = login(h)
    refused(h, session, 2, P0, IN_HISTORY, 8)
    assert events(h)[-1] == ("password.rejected", "unique_last_password_count")


def test_last_n_passwords_are_refused_and_an_older_one_accepted(make_harness: Any) -> None:
    """After P0 -> P1 -> P2 -> P3 (each accepted by the directory), with
    unique_last_password_count = 3, P3, P2 and P1 are refused and P0 is accepted."""
    h = make_harness(compliance=HISTORY)
    session = login(h)
    for message_id, new in ((2, P1), (3, P2), (4, P3)):
        changed(h, session, message_id, new)
    for message_id, old in ((5, P3), (6, P2), (7, P1)):
        refused(h, session, message_id, old, IN_HISTORY, 8)
    changed(h, session, 8, P0)
    assert [e for e in events(h) if e[0] == "password.changed"] == [
        ("password.changed", "self")] * 4


# -- minimum age -------------------------------------------------------------------------------


def test_minimum_age(make_harness: Any) -> None:
    """A second self change the same day is refused (passwordTooYoung, 7); an administrator's
    change of that user is accepted the same day; a day later the user may change again."""
    h = make_harness(compliance=QUALITY)
    alice = login(h)
    changed(h, alice, 2, P1)
    refused(h, alice, 3, P2, TOO_YOUNG, 7)
    admin = login(h, ADMIN, ADMIN_PW)
    changed(h, admin, 2, P2, index=1, user_identity="dn:" + ALICE)
    assert events(h)[-1] == ("password.changed", "admin")
    assert h.audit()[-1]["user"] == canonical_dn(ALICE)
    h.clock.advance(DAY + 1)
    changed(h, alice, 4, P3, index=0)
    assert events(h)[-1] == ("password.changed", "self")


def test_directory_refusal_passes_through_and_records_nothing(make_harness: Any) -> None:
    """The directory refusing a change (50) reaches the client unchanged and is not recorded:
    the next change is not "too young"."""
    h = make_harness(compliance=QUALITY)
    session, client = login(h)
    session.dataReceived(w.password_modify(2, new=P1))
    refusal = w.extended_response(2, 50, "no write access to parent")
    h.directory.answer(refusal)
    assert client.value() == refusal
    assert events(h) == [("auth.success", None)]
    changed(h, (session, client), 3, P1)
    assert events(h)[-1] == ("password.changed", "self")


# -- ModifyRequest -----------------------------------------------------------------------------


def test_modify_replacing_user_password_is_checked(make_harness: Any) -> None:
    """A ModifyRequest replacing userPassword is judged like Password Modify: a short value
    gets 19 (ModifyResponse) without the directory; a good one is forwarded unchanged and the
    directory's answer returns unchanged."""
    h = make_harness(compliance=QUALITY)
    session, client = login(h)
    session.dataReceived(w.modify_request(2, ALICE, [(w.REPLACE, "userPassword", ["Sh0rt-pw"])],
                                          PPOLICY_REQUEST))
    assert client.value() == w.modify_response(2, 19, TOO_SHORT,
                                               controls=w.ppolicy_response(6))
    assert h.directory.received() == w.bind_request(1, ALICE, P0)
    client.clear()
    good = w.modify_request(3, ALICE, [(w.REPLACE, "userPassword", [P1])])
    session.dataReceived(good)
    assert h.directory.received() == w.bind_request(1, ALICE, P0) + good
    h.directory.answer(w.modify_response(3, 0))
    assert client.value() == w.modify_response(3, 0)
    assert events(h) == [("auth.success", None), ("password.rejected", "password_min_length"),
                         ("password.changed", "self")]


def test_modify_with_prehashed_password_is_refused(make_harness: Any) -> None:
    """A pre-hashed {SSHA} userPassword cannot be checked: unwillingToPerform (53)."""
    h = make_harness(compliance=QUALITY)
    session, client = login(h)
    session.dataReceived(w.modify_request(
        2, ALICE, [(w.REPLACE, "userPassword", ["{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="])]))
    assert client.value() == w.modify_response(2, 53, PREHASHED)
    assert h.directory.received() == w.bind_request(1, ALICE, P0)


def test_modify_not_touching_a_password_passes_raw(make_harness: Any) -> None:
    """A ModifyRequest of other attributes and its response pass through unchanged, unaudited."""
    h = make_harness(compliance=QUALITY)
    session, client = login(h)
    request = w.modify_request(2, ALICE, [(w.REPLACE, "mail", ["alice@example.org"])],
                               [(w.PAGED, False, None)])
    session.dataReceived(request)
    assert h.directory.received() == w.bind_request(1, ALICE, P0) + request
    h.directory.answer(w.modify_response(2, 0))
    assert client.value() == w.modify_response(2, 0)
    assert events(h) == [("auth.success", None)]


# -- must change -------------------------------------------------------------------------------


def test_must_change_after_administrator_reset(make_harness: Any) -> None:
    """After an administrator sets a password (change_password_upon_first_use), the user's next
    bind carries changeAfterReset (2); a search gets 50 saying a change is required; WhoAmI and
    Password Modify pass; after the user's change a search passes through again."""
    h = make_harness(compliance=FIRST_USE)
    admin = login(h, ADMIN, ADMIN_PW)
    changed(h, admin, 2, P1, user_identity=ALICE)
    assert events(h)[-1] == ("password.changed", "admin")

    session, client = h.session()
    bind = w.bind_request(1, ALICE, P1, PPOLICY_REQUEST)
    session.dataReceived(bind)
    h.directory.answer(w.bind_response(1, 0))
    assert h.directory.received() == bind + w.base_search(1, ALICE, ATTRIBUTES)
    h.directory.answer(w.search_done(1))
    assert client.value() == w.bind_response(1, 0, controls=w.ppolicy_response(2))
    assert events(h)[-1] == ("auth.success", "must_change")
    client.clear()

    session.dataReceived(w.search_request(2, "dc=example,dc=org"))
    assert client.value() == w.search_done(2, 50, MUST_CHANGE)
    client.clear()
    sent = h.directory.received()
    session.dataReceived(w.whoami(3))
    assert h.directory.received() == sent + w.whoami(3)
    whoami = w.extended_response(3, 0, value=b"dn:" + ALICE.encode())
    h.directory.answer(whoami)
    assert client.value() == whoami
    client.clear()

    changed(h, (session, client), 4, P2)
    assert events(h)[-1] == ("password.changed", "self")
    search = w.search_request(5, "dc=example,dc=org")
    session.dataReceived(search)
    assert h.directory.received().endswith(search)
    h.directory.answer(w.search_done(5))
    assert client.value() == w.search_done(5)


def test_must_change_session_may_change_only_its_own_password(make_harness: Any) -> None:
    """A must-change session's Password Modify for another account gets 50 and never reaches
    the directory: the session's own password comes first."""
    h = make_harness(compliance=FIRST_USE)
    admin = login(h, ADMIN, ADMIN_PW)
    changed(h, admin, 2, P1, user_identity=ALICE)
    session, client = login(h, ALICE, P1)
    sent = h.directory.received()
    session.dataReceived(w.password_modify(2, new=P2, user_identity=ADMIN))
    assert client.value() == w.extended_response(2, 50, MUST_CHANGE)
    assert h.directory.received() == sent


def test_administrator_reset_can_be_changed_at_once_despite_minimum_age(
        make_harness: Any) -> None:
    """minimum_password_age holds back only self-service passwords (Keystone checks it only
    when the current password was set by its owner): after an administrator's reset, the
    must-change user may change the password at once."""
    h = make_harness(compliance=FIRST_USE + "minimum_password_age = 1\n")
    admin = login(h, ADMIN, ADMIN_PW)
    changed(h, admin, 2, P1, user_identity=ALICE)
    alice = login(h, ALICE, P1)
    request = w.password_modify(2, new=P2)
    alice[0].dataReceived(request)
    assert alice[1].value() == b"", alice[1].value()
    assert h.directory.received().endswith(request)


# -- the directory's password facts ------------------------------------------------------------


def test_bind_waits_for_the_read_of_the_entry(make_harness: Any) -> None:
    """With password_expires_days, a good bind is followed by a base search of the user's DN
    with the bind's message ID; the client's BindResponse comes only after SearchResultDone."""
    h = make_harness(compliance=EXPIRY)
    session, client = h.session()
    bind = w.bind_request(7, ALICE, P0)
    session.dataReceived(bind)
    h.directory.answer(w.bind_response(7, 0))
    assert h.directory.received() == bind + w.base_search(7, ALICE, ATTRIBUTES)
    assert client.value() == b""
    h.directory.answer(w.search_entry(7, ALICE, [("pwdChangedTime", [gtime(T0 - DAY)])]))
    assert client.value() == b""
    h.directory.answer(w.search_done(7))
    assert client.value() == w.bind_response(7, 0)


def test_directory_reset_flag_restricts_the_session(make_harness: Any) -> None:
    """pwdReset TRUE in the entry (change_password_upon_first_use) makes a must-change session."""
    h = make_harness(compliance=FIRST_USE)
    session, client = login(h, entry=[("pwdReset", ["TRUE"])])
    session.dataReceived(w.search_request(2, "dc=example,dc=org"))
    assert client.value() == w.search_done(2, 50, MUST_CHANGE)
    assert events(h) == [("auth.success", "must_change")]


@pytest.mark.parametrize("with_control", [False, True])
def test_expired_password_refuses_the_bind(make_harness: Any, with_control: bool) -> None:
    """A pwdChangedTime older than password_expires_days turns the directory's success into 49
    (with the ppolicy control: passwordExpired, 0), and the bound upstream connection is
    dropped."""
    h = make_harness(compliance=EXPIRY)
    session, client = h.session()
    session.dataReceived(w.bind_request(1, ALICE, P0, PPOLICY_REQUEST if with_control else []))
    h.directory.answer(w.bind_response(1, 0))
    h.directory.answer(w.search_entry(1, ALICE, [("pwdChangedTime", [gtime(T0 - 31 * DAY)])])
                       + w.search_done(1))
    expected = w.ppolicy_response(0) if with_control else []
    assert client.value() == w.bind_response(1, 49, controls=expected)
    assert h.directory.connections[0].transport.disconnecting  # type: ignore[union-attr]
    assert events(h) == [("auth.failure", "password_expired")]
    # The connection is anonymous again: the next request goes on a new upstream connection.
    session.dataReceived(w.search_request(2, "dc=example,dc=org"))
    assert len(h.directory.connections) == 2
    assert h.directory.received() == w.search_request(2, "dc=example,dc=org")


def test_expiry_warning_carries_time_before_expiration(make_harness: Any) -> None:
    """Within the warning window the BindResponse carries timeBeforeExpiration, in seconds."""
    h = make_harness(compliance=EXPIRY)
    session, client = h.session()
    session.dataReceived(w.bind_request(1, ALICE, P0, PPOLICY_REQUEST))
    h.directory.answer(w.bind_response(1, 0))
    h.directory.answer(w.search_entry(1, ALICE, [("pwdChangedTime", [gtime(T0 - 20 * DAY)])])
                       + w.search_done(1))
    assert client.value() == w.bind_response(1, 0,
                                             controls=w.ppolicy_response(None, 10 * DAY))


# -- rescue: changing a password on an unbound connection --------------------------------------


def test_rescue_change_binds_as_the_user_first(make_harness: Any) -> None:
    """Unbound, Password Modify with userIdentity and oldPasswd: the proxy binds as the user
    with the old password (same message ID), then forwards the change, then drops the upstream
    connection."""
    h = make_harness(compliance=QUALITY)
    session, client = h.session()
    request = w.password_modify(3, "dn:" + ALICE, P0, P1)
    session.dataReceived(request)
    bind = w.bind_request(3, ALICE, P0)
    assert h.directory.received() == bind
    h.directory.answer(w.bind_response(3, 0))
    assert h.directory.received() == bind + request
    assert client.value() == b""
    h.directory.answer(w.extended_response(3, 0))
    assert client.value() == w.extended_response(3, 0)
    assert h.directory.connections[0].transport.disconnecting  # type: ignore[union-attr]
    assert events(h) == [("auth.success", "password_change"), ("password.changed", "self")]


def test_rescue_with_wrong_old_password_counts_toward_lockout(make_harness: Any) -> None:
    """A wrong old password gets 49 and counts as a failure: after 3, the 4th rescue is
    refused 49 without reaching the directory."""
    h = make_harness(compliance=QUALITY)
    session, client = h.session()
    for message_id in (1, 2, 3):
        session.dataReceived(w.password_modify(message_id, ALICE, "wrong-Old-1", P1))
        assert h.directory.received() == w.bind_request(message_id, ALICE, "wrong-Old-1")
        h.directory.answer(w.bind_response(message_id, 49))
        assert client.value() == w.extended_response(message_id, 49)
        assert h.directory.last.transport.disconnecting  # type: ignore[union-attr]
        client.clear()
    assert h.store.get(canonical_dn(ALICE)).locked_at == T0  # type: ignore[union-attr]
    assert events(h) == [("auth.failure", "invalid_credentials")] * 3 + [
        ("account.locked", "failure_threshold")]
    session.dataReceived(w.password_modify(4, ALICE, P0, P1))
    assert client.value() == w.extended_response(4, 49)
    assert len(h.directory.connections) == 3
    assert events(h)[-1] == ("auth.failure", "locked")


def test_unbound_change_without_old_password_is_refused(make_harness: Any) -> None:
    """Unbound, Password Modify without oldPasswd gets insufficientAccessRights (50)."""
    h = make_harness(compliance=QUALITY)
    session, client = h.session()
    session.dataReceived(w.password_modify(1, "dn:" + ALICE, new=P1))
    assert client.value() == w.extended_response(
        1, 50, "bind first, or give userIdentity and the old password")
    assert h.directory.connections == []


# -- secrets -----------------------------------------------------------------------------------


def test_no_password_reaches_the_audit_log(make_harness: Any) -> None:
    """Binds, accepted, refused and administrator changes and rescues write no password."""
    h = make_harness(compliance=QUALITY)
    alice = login(h)
    changed(h, alice, 2, P1)
    refused(h, alice, 3, "Sh0rt-pw", TOO_SHORT, 6)
    refused(h, alice, 4, P2, TOO_YOUNG, 7)
    admin = login(h, ADMIN, ADMIN_PW)
    changed(h, admin, 2, P2, index=1, user_identity=ALICE)
    session, client = h.session()
    session.dataReceived(w.password_modify(1, ALICE, "wrong-Old-1", P3))
    h.directory.answer(w.bind_response(1, 49))
    text = h.audit_path.read_text()
    assert len(text.splitlines()) == 7
    for secret in (P0, P1, P2, P3, ADMIN_PW, "Sh0rt-pw", "wrong-Old-1"):
        assert secret not in text
