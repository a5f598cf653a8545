"""The TOTP second factor through the LDAP front, bytes in and bytes out: the code is split off
the bind password (and the rescue change's old password) before anything reaches the
directory, and a refused code looks exactly like a wrong password."""
from __future__ import annotations

import os
from typing import Any

import ldapwire as w
import pyotp
import pytest
from argon2 import PasswordHasher
from harness import T0, Harness

from proxy.identity import canonical_dn
from proxy.passwords import Hasher
from proxy.policy import otp
from proxy.policy.lockout import LockoutRules, current
from proxy.sealed import SecretBox

ALICE = "uid=alice,ou=people,dc=example,dc=org"
PASSWORD = "Alice-Pass-2024"  # ends in digits, like many passwords
NEW = "Lantern-Red-81"
SECRET = pyotp.random_base32()
PPOLICY_REQUEST = [(w.PPOLICY, False, None)]
SEVERAL_CONTROLS = [(w.PAGED, True, bytes.fromhex("30050201020400")),
                    (w.PPOLICY, False, None), ("1.2.3.4.5", False, b"\x01\x02")]
LOCKED_CONTROL = [(w.PPOLICY, False, bytes.fromhex("3003810101"))]
OK_CONTROL = [(w.PPOLICY, False, bytes.fromhex("3000"))]
ENFORCE = "enforce_2fa = true\n"
LOCKOUT = LockoutRules(attempts=3, duration=600, window=0)  # the harness's
CHEAP = Hasher(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def code(h: Harness, steps: int = 0, secret: str = SECRET) -> str:
    """The TOTP code for the harness clock's time, ``steps`` steps later."""
    return pyotp.TOTP(secret).at(h.clock.seconds() + 30 * steps)


def wrong_code(h: Harness) -> str:
    """A code of no step near the harness clock."""
    near = {code(h, d) for d in range(-2, 3)}
    return next(c for c in (f"{n:06d}" for n in range(0, 1_000_000, 7919)) if c not in near)


def enrolled(box: SecretBox | None = None, dn: str = ALICE, **harness: Any) -> Any:
    """Make a harness (with a key unless ``box``), and enrol ``dn`` with SECRET through its
    store."""
    def make(make_harness: Any) -> Harness:
        h: Harness = make_harness(box=box or SecretBox(os.urandom(32)), **harness)
        enrol(h, dn)
        return h
    return make


def enrol(h: Harness, dn: str = ALICE, secret: str = SECRET,
          backup: tuple[str, ...] = ()) -> None:
    """Enrol ``dn`` with ``secret`` (sealed by the harness's box) and backup codes."""
    assert h.box is not None
    key = canonical_dn(dn)
    sealed = h.box.seal(key, secret)

    def change(state: Any) -> tuple[Any, None]:
        # as `bindguard otp enrol` does: on the state as of now (first sight recorded)
        state = otp.enrol(current(LOCKOUT, state, T0 - 3600), sealed, T0 - 3600)
        if backup:
            state = otp.set_backup_codes(state, tuple(CHEAP.hash(c) for c in backup))
        return state, None

    h.store.apply([(key, change)])


def events(h: Harness) -> list[tuple[str, str | None]]:
    if not h.audit_path.exists():
        return []
    return [(e["event"], e.get("reason")) for e in h.audit()]


def state(h: Harness, dn: str = ALICE) -> Any:
    return h.store.get(canonical_dn(dn))


def refused_before_directory(h: Harness, bind: bytes, message_id: int) -> None:
    """A bind answered 49 (empty message, no control) by the proxy; the directory saw
    nothing of it."""
    before = [c.transport.value() for c in h.directory.connections]  # type: ignore[union-attr]
    session, client = h.session()
    session.dataReceived(bind)
    assert client.value() == w.bind_response(message_id, 49)
    assert [c.transport.value() for c in h.directory.connections] == before  # type: ignore


# -- binds ------------------------------------------------------------------------------------


@pytest.mark.parametrize("controls", [(), PPOLICY_REQUEST, SEVERAL_CONTROLS])
def test_code_is_split_off_before_the_directory(make_harness: Any, controls: Any) -> None:
    """Password and right code: the directory gets the same BindRequest with the password
    only (message ID, DN and controls byte-identical), and its answer returns unchanged."""
    h = enrolled()(make_harness)
    session, client = h.session()
    session.dataReceived(w.bind_request(7, ALICE, PASSWORD + code(h), controls))
    assert h.directory.received() == w.bind_request(7, ALICE, PASSWORD, controls)
    response = w.bind_response(7, 0, controls=OK_CONTROL)
    h.directory.answer(response)
    assert client.value() == response
    assert state(h).otp_last_step == int(T0 // 30)
    assert events(h) == [("auth.success", None)]


def test_dn_is_forwarded_as_the_client_spelled_it(make_harness: Any) -> None:
    """Only the password changes: a DN spelled differently from the canonical key is kept."""
    h = enrolled()(make_harness)
    spelled = "UID=Alice, OU=People,DC=Example,DC=Org"
    session, client = h.session()
    session.dataReceived(w.bind_request(2, spelled, PASSWORD + code(h), PPOLICY_REQUEST))
    assert h.directory.received() == w.bind_request(2, spelled, PASSWORD, PPOLICY_REQUEST)


def test_directory_refusal_after_a_right_code_passes_through(make_harness: Any) -> None:
    """The right code and a wrong password: the directory's own 49 returns, one failure is
    counted, and the code is used up."""
    h = enrolled()(make_harness)
    session, client = h.session()
    session.dataReceived(w.bind_request(1, ALICE, "wrong" + code(h)))
    assert h.directory.received() == w.bind_request(1, ALICE, "wrong")
    refusal = w.bind_response(1, 49, "Invalid credentials")
    h.directory.answer(refusal)
    assert client.value() == refusal
    assert len(state(h).failures) == 1
    refused_before_directory(h, w.bind_request(2, ALICE, PASSWORD + code(h)), 2)  # a replay


@pytest.mark.parametrize("controls", [(), PPOLICY_REQUEST])
def test_wrong_code_looks_like_a_wrong_password(make_harness: Any, controls: Any) -> None:
    """A wrong code: 49 with an empty message and no ppolicy control even when asked for;
    the directory sees nothing; the failure counts."""
    h = enrolled()(make_harness)
    refused_before_directory(h, w.bind_request(3, ALICE, PASSWORD + wrong_code(h), controls), 3)
    assert h.directory.connections == []
    assert len(state(h).failures) == 1
    assert events(h) == [("auth.failure", "otp.invalid")]


def test_replayed_code_is_refused(make_harness: Any) -> None:
    """A code that already logged in does not log in again, even within its 30 s."""
    h = enrolled()(make_harness)
    session, client = h.session()
    bind = w.bind_request(1, ALICE, PASSWORD + code(h), PPOLICY_REQUEST)
    session.dataReceived(bind)
    h.directory.answer(w.bind_response(1, 0))
    h.clock.advance(5)
    refused_before_directory(h, w.bind_request(1, ALICE, PASSWORD + code(h, 0),
                                               PPOLICY_REQUEST), 1)
    assert events(h)[-1] == ("auth.failure", "otp.replayed")
    h.clock.advance(30)
    session, client = h.session()
    session.dataReceived(w.bind_request(1, ALICE, PASSWORD + code(h)))
    assert h.directory.received() == w.bind_request(1, ALICE, PASSWORD)


def test_missing_code_is_refused_before_the_directory(make_harness: Any) -> None:
    """The password alone, for an enrolled user: 49, and the directory sees nothing."""
    h = enrolled()(make_harness)
    refused_before_directory(h, w.bind_request(1, ALICE, PASSWORD, PPOLICY_REQUEST), 1)
    assert h.directory.connections == []
    assert events(h) == [("auth.failure", "otp.missing")]


def test_wrong_codes_lock_and_the_lock_says_account_locked(make_harness: Any) -> None:
    """Three wrong codes lock the account; then even the right password and code get 49,
    with accountLocked when the client asks for the ppolicy control."""
    h = enrolled()(make_harness)
    for message_id in (1, 2, 3):
        refused_before_directory(h, w.bind_request(message_id, ALICE,
                                                   PASSWORD + wrong_code(h)), message_id)
    assert state(h).locked_at == T0
    session, client = h.session()
    session.dataReceived(w.bind_request(4, ALICE, PASSWORD + code(h), PPOLICY_REQUEST))
    assert client.value() == w.bind_response(4, 49, controls=LOCKED_CONTROL)
    assert h.directory.connections == []
    assert state(h).otp_last_step is None  # a locked attempt uses no code
    assert events(h) == [("auth.failure", "otp.invalid")] * 3 + [
        ("account.locked", "failure_threshold"), ("auth.failure", "locked")]


def test_account_locked_by_the_directory_says_account_locked(make_harness: Any) -> None:
    """Locked by wrong passwords, an enrolled account still gets accountLocked."""
    h = enrolled()(make_harness)
    session, client = h.session()
    for message_id in (1, 2, 3):
        session.dataReceived(w.bind_request(message_id, ALICE, "wrong" + code(h)))
        h.directory.answer(w.bind_response(message_id, 49))
        h.clock.advance(30)
    assert state(h).locked_at is not None
    session, client = h.session()
    session.dataReceived(w.bind_request(9, ALICE, PASSWORD + code(h), PPOLICY_REQUEST))
    assert client.value() == w.bind_response(9, 49, controls=LOCKED_CONTROL)


def test_backup_code_logs_in_once(make_harness: Any) -> None:
    """A backup code stands in for the TOTP code once; the same code again is refused."""
    h = make_harness(box=SecretBox(os.urandom(32)))
    codes = ("0-abcd-efgh", "1-k7mq-x2rd", "2-zzzz-2345")
    enrol(h, backup=codes)
    session, client = h.session()
    session.dataReceived(w.bind_request(1, ALICE, PASSWORD + codes[1], PPOLICY_REQUEST))
    assert h.directory.received() == w.bind_request(1, ALICE, PASSWORD, PPOLICY_REQUEST)
    h.directory.answer(w.bind_response(1, 0))
    assert client.value() == w.bind_response(1, 0)
    assert otp.backup_left(state(h)) == 2
    refused_before_directory(h, w.bind_request(2, ALICE, PASSWORD + codes[1]), 2)
    refused_before_directory(h, w.bind_request(3, ALICE, PASSWORD + "2-abcd-efgh"), 3)
    assert events(h) == [("otp.backup_used", "2 left"), ("auth.success", None),
                         ("auth.failure", "otp.invalid"), ("auth.failure", "otp.invalid")]


def test_password_that_is_not_utf8_still_has_its_code_checked(make_harness: Any) -> None:
    """Bytes that are not UTF-8 followed by a code: a wrong or missing code is refused before
    the directory; the right one forwards exactly the password's bytes."""
    h = enrolled()(make_harness)
    raw = b"\xff\xfe-latin1-\xe9t\xe9"
    refused_before_directory(h, w.bind_request(1, ALICE, raw + wrong_code(h).encode()), 1)
    refused_before_directory(h, w.bind_request(2, ALICE, raw), 2)
    refused_before_directory(h, w.bind_request(3, ALICE, raw + b"12345\xff"), 3)
    assert h.directory.connections == []
    h.clock.advance(601)  # the three failures locked the account for 600 s
    session, client = h.session()
    session.dataReceived(w.bind_request(4, ALICE, raw + code(h).encode(), PPOLICY_REQUEST))
    assert h.directory.received() == w.bind_request(4, ALICE, raw, PPOLICY_REQUEST)


def test_unenrolled_user_password_is_forwarded_whole(make_harness: Any) -> None:
    """Without enrolment or enforcement, trailing digits are part of the password."""
    h = make_harness(box=SecretBox(os.urandom(32)))
    session, client = h.session()
    bind = w.bind_request(1, ALICE, PASSWORD + "123456", PPOLICY_REQUEST)
    session.dataReceived(bind)
    assert h.directory.received() == bind


def test_enforcement_refuses_an_unenrolled_user(make_harness: Any) -> None:
    """enforce_2fa: an account without a second factor is refused before the directory,
    and nothing is counted against it."""
    h = make_harness(extra="allow_sasl = false", compliance=ENFORCE,
                     box=SecretBox(os.urandom(32)))
    refused_before_directory(h, w.bind_request(1, ALICE, PASSWORD + "123456",
                                               PPOLICY_REQUEST), 1)
    assert state(h).failures == ()
    assert events(h) == [("auth.failure", "otp.not_enrolled")]


def test_enforcement_exempt_subtree_is_forwarded_whole(make_harness: Any) -> None:
    """enforce_2fa with an exempt subtree: its accounts bind with the password alone, and a
    sibling subtree with a longer name is not exempt."""
    h = make_harness(extra="allow_sasl = false", box=SecretBox(os.urandom(32)),
                     compliance=ENFORCE + "2fa_exempt = ou=services,dc=example,dc=org\n")
    session, client = h.session()
    bind = w.bind_request(1, "uid=app,ou=services,dc=example,dc=org", "app-pass123456")
    session.dataReceived(bind)
    assert h.directory.received() == bind
    refused_before_directory(h, w.bind_request(
        2, "uid=app,ou=services2,dc=example,dc=org", "app-pass123456"), 2)


def test_secret_that_does_not_open_refuses_without_counting(make_harness: Any) -> None:
    """A secret sealed under another key: 49 before the directory, no failure counted."""
    h = make_harness(box=SecretBox(os.urandom(32)))
    key = canonical_dn(ALICE)
    sealed = SecretBox(os.urandom(32)).seal(key, SECRET)
    h.store.apply([(key, lambda s: (otp.enrol(current(LOCKOUT, s, T0), sealed, T0), None))])
    for message_id in (1, 2, 3, 4):
        refused_before_directory(h, w.bind_request(message_id, ALICE, PASSWORD + code(h),
                                                   PPOLICY_REQUEST), message_id)
    assert state(h).failures == () and state(h).locked_at is None
    assert events(h) == [("auth.failure", "otp.unreadable")] * 4


@pytest.mark.parametrize("alias", [
    r"uid=\61lice,ou=people,dc=example,dc=org",  # an escaped character (RFC 4514 hexpair)
    "0.9.2342.19200300.100.1.1=alice,ou=people,dc=example,dc=org",  # uid by its OID
])
def test_another_spelling_of_the_dn_does_not_skip_the_code(make_harness: Any,
                                                           alias: str) -> None:
    """A DN the directory takes for the enrolled account, spelled another way, still needs
    the code: the password alone must not reach the directory."""
    h = enrolled()(make_harness)
    session, client = h.session()
    session.dataReceived(w.bind_request(1, alias, PASSWORD))
    assert [c.transport.value() for c in h.directory.connections] in (  # type: ignore
        [], [b""]), "the password alone was forwarded without the second factor"
    assert client.value() == w.bind_response(1, 49)


# -- the rescue change: Password Modify on an unbound connection ---------------------------------


@pytest.mark.parametrize("controls", [(), PPOLICY_REQUEST])
def test_rescue_binds_and_changes_with_the_password_only(make_harness: Any,
                                                         controls: Any) -> None:
    """Unbound Password Modify with oldPasswd = old password + code: the proxy binds with the
    old password only, then forwards the change with oldPasswd rewritten to the password
    only; message ID, userIdentity, newPasswd and controls unchanged."""
    h = enrolled()(make_harness)
    session, client = h.session()
    identity = "dn:" + ALICE
    session.dataReceived(w.password_modify(5, identity, PASSWORD + code(h), NEW, controls))
    bind = w.bind_request(5, ALICE, PASSWORD)
    assert h.directory.received() == bind
    h.directory.answer(w.bind_response(5, 0))
    forwarded = h.directory.received()[len(bind):]
    assert forwarded, "the change was not forwarded after the bind succeeded"
    assert w.decode_password_modify(forwarded) == (
        5, {"userIdentity": identity.encode(), "oldPasswd": PASSWORD.encode(),
            "newPasswd": NEW.encode()}, list(controls))
    assert forwarded == w.password_modify(5, identity, PASSWORD, NEW, controls)
    assert client.value() == b""
    h.directory.answer(w.extended_response(5, 0))
    assert client.value() == w.extended_response(5, 0)
    assert h.directory.last.transport.disconnecting  # type: ignore[union-attr]
    assert events(h) == [("auth.success", "password_change"), ("password.changed", "self")]


def test_rescue_with_a_wrong_code_never_reaches_the_directory(make_harness: Any) -> None:
    """A wrong code in the rescue's old password: 49, no bind, no change, one failure."""
    h = enrolled()(make_harness)
    session, client = h.session()
    session.dataReceived(w.password_modify(2, ALICE, PASSWORD + wrong_code(h), NEW,
                                           PPOLICY_REQUEST))
    assert client.value() == w.extended_response(2, 49)
    assert h.directory.connections == []
    assert len(state(h).failures) == 1


def test_rescue_without_a_code_never_reaches_the_directory(make_harness: Any) -> None:
    """The old password alone, for an enrolled user: 49 and nothing forwarded."""
    h = enrolled()(make_harness)
    session, client = h.session()
    session.dataReceived(w.password_modify(2, ALICE, PASSWORD, NEW))
    assert client.value() == w.extended_response(2, 49)
    assert h.directory.connections == []


def test_rescue_of_an_unenrolled_user_is_forwarded_unchanged(make_harness: Any) -> None:
    """Not enrolled: an old password ending in 6 digits is forwarded whole, byte for byte."""
    h = make_harness(box=SecretBox(os.urandom(32)))
    session, client = h.session()
    request = w.password_modify(3, "dn:" + ALICE, PASSWORD + "123456", NEW, PPOLICY_REQUEST)
    session.dataReceived(request)
    bind = w.bind_request(3, ALICE, PASSWORD + "123456")
    assert h.directory.received() == bind
    h.directory.answer(w.bind_response(3, 0))
    assert h.directory.received() == bind + request


# -- secrets ----------------------------------------------------------------------------------


def test_no_code_or_password_reaches_the_audit_log(make_harness: Any) -> None:
    """Accepted, wrong, replayed and backup codes and rescues write no password or code."""
    h = make_harness(box=SecretBox(os.urandom(32)))
    enrol(h, backup=("4-abcd-efgh",))
    right, wrong = code(h), wrong_code(h)
    session, client = h.session()
    session.dataReceived(w.bind_request(1, ALICE, PASSWORD + right))
    h.directory.answer(w.bind_response(1, 0))
    session.dataReceived(w.bind_request(2, ALICE, PASSWORD + right))
    session.dataReceived(w.bind_request(3, ALICE, PASSWORD + wrong))
    h.clock.advance(30)
    session.dataReceived(w.bind_request(4, ALICE, PASSWORD + "4-abcd-efgh"))
    h.directory.answer(w.bind_response(4, 0))
    text = h.audit_path.read_text()
    assert len(text.splitlines()) >= 5
    for secret in (PASSWORD, right, wrong, "abcd-efgh", SECRET):
        assert secret not in text
