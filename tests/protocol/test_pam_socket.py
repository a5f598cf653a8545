"""The daemon's PAM socket as bytes in, bytes out: frames, the root-only rule, conversations
for a second factor, and the stdlib client's side of the same protocol."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyotp
import pytest
from harness import T0, Harness
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport

from pam_module import client
from proxy.config import parse_config
from proxy.identity import canonical_dn
from proxy.pamd import MAX_FRAME, PamFront, PamRequest, PamSession, parse_request
from proxy.policy import otp
from proxy.sealed import SecretBox
from proxy.service import DirectoryRecord

ALICE = canonical_dn("uid=alice,ou=people,dc=example,dc=org")
PASSWORDS = {ALICE: "alice-pass-1"}


class FakeDirectory:
    """A directory backend that knows one password per DN, and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []
        self.reachable = True

    def authenticate(self, dn: str, password: str,
                     attributes: Any) -> Deferred[tuple[int, DirectoryRecord]]:
        self.asked.append((dn, password))
        return succeed((0 if PASSWORDS.get(dn) == password else 49, DirectoryRecord()))


@pytest.fixture
def front(make_harness: Any) -> tuple[PamFront, Harness, FakeDirectory]:
    box = SecretBox(os.urandom(32))
    harness = make_harness(box=box, compliance="[directory]\nuser_dn_template = "
                                                "uid={user},ou=people,dc=example,dc=org\n")
    pam_front = PamFront(harness.config, harness.factory.service, harness.clock)
    directory = FakeDirectory()
    pam_front.directory = directory  # type: ignore[assignment]
    pam_front.peer_uid = lambda transport: 0
    return pam_front, harness, directory


class UnixTransport(StringTransport):
    """A fake Unix socket transport that can half-close."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def connect(front: PamFront) -> tuple[PamSession, UnixTransport]:
    session = front.buildProtocol(None)
    transport = UnixTransport(peerAddress=UNIXAddress(None))
    session.makeConnection(transport)
    return session, transport


def replies(transport: StringTransport) -> list[dict[str, object]]:
    data, out = transport.value(), []
    while data:
        size = int.from_bytes(data[:4], "big")
        out.append(client.decode(data[4:4 + size]))
        data = data[4 + size:]
    transport.clear()
    return out


def ask(front: PamFront, **request: object) -> dict[str, object]:
    session, transport = connect(front)
    session.dataReceived(client.encode(request))
    (reply,) = replies(transport)
    return reply


def test_right_and_wrong_password(front: Any) -> None:
    """authenticate: the directory checks the password; success or a generic denial, both
    audited with front pam and the service in the client field."""
    pam_front, harness, directory = front
    assert ask(pam_front, type="authenticate", user="alice", password="alice-pass-1",
               service="sshd", rhost="192.0.2.1") == {"version": 1, "result": "success",
                                                      "message": ""}
    assert ask(pam_front, type="authenticate", user="alice", password="wrong",
               service="sshd", rhost="192.0.2.1") == {
        "version": 1, "result": "denied", "message": "Authentication failed"}
    events = [(e["event"], e["front"], e["client"], e.get("reason")) for e in harness.audit()]
    assert events == [("auth.success", "pam", "192.0.2.1 (sshd)", None),
                      ("auth.failure", "pam", "192.0.2.1 (sshd)", "invalid_credentials")]


def test_a_frame_split_anywhere_gets_the_same_answer(front: Any) -> None:
    """The framing does not depend on how the bytes arrive."""
    pam_front, _, _ = front
    session, transport = connect(pam_front)
    for byte in client.encode({"type": "authenticate", "user": "alice",
                               "password": "alice-pass-1"}):
        session.dataReceived(bytes([byte]))
    assert [r["result"] for r in replies(transport)] == ["success"]


@pytest.mark.parametrize("data", [
    (MAX_FRAME + 1).to_bytes(4, "big"),  # announced too large: refused from the header alone
    (9).to_bytes(4, "big") + b"not json!",
    client.encode({"type": "authenticate"}),  # no user
    (19).to_bytes(4, "big") + b'{"version":2,"x":1}',
    (9).to_bytes(4, "big") + b'[1, 2, 3]',
    client.encode({"type": "reboot", "user": "alice"}),
    client.encode({"type": "authenticate", "user": "alice", "password": "a\x00b"}),
])
def test_malformed_frames_close_the_connection(front: Any, data: bytes) -> None:
    """A frame too large, not JSON, of another version or type, or with bad fields gets an
    error reply and the connection is closed; the directory is never asked."""
    pam_front, _, directory = front
    session, transport = connect(pam_front)
    session.dataReceived(data)
    assert replies(transport) == [{"version": 1, "result": "error",
                                   "message": "malformed request"}]
    assert transport.disconnecting
    assert directory.asked == []


def test_a_non_root_peer_is_refused(front: Any) -> None:
    """SO_PEERCRED: a process not running as root is answered denied at once; what it sends
    is read and ignored (so the answer is not lost to a reset), and it is cut off after a
    few seconds."""
    pam_front, harness, directory = front
    pam_front.peer_uid = lambda transport: 1000
    session, transport = connect(pam_front)
    assert replies(transport) == [{"version": 1, "result": "denied",
                                   "message": "only root may ask"}]
    session.dataReceived(client.encode({"type": "authenticate", "user": "alice",
                                        "password": "alice-pass-1"}))
    assert transport.value() == b"" and transport.write_closed and not transport.disconnecting
    harness.clock.advance(5)
    assert transport.disconnecting
    assert directory.asked == []


def _enrol(harness: Harness, box: SecretBox) -> pyotp.TOTP:
    secret = pyotp.random_base32()
    harness.store.apply([(ALICE, lambda s: (otp.enrol(replace(s, first_seen_at=T0),
                                                      box.seal(ALICE, secret), T0), None))])
    return pyotp.TOTP(secret)


def test_conversation_asks_for_the_code(front: Any) -> None:
    """converse: an enrolled user is asked for the code in a second step of the same
    connection; the directory sees the password alone; another session token is refused."""
    pam_front, harness, directory = front
    totp = _enrol(harness, harness.box)
    session, transport = connect(pam_front)
    session.dataReceived(client.encode({"type": "authenticate", "user": "alice",
                                        "password": "alice-pass-1", "converse": True}))
    (prompt,) = replies(transport)
    assert prompt["result"] == "prompt_code" and prompt["message"] == "Verification code: "
    session.dataReceived(client.encode({"type": "code", "session": "forged", "code": "1"}))
    assert replies(transport)[0]["result"] == "denied"
    assert directory.asked == []
    session.dataReceived(client.encode({"type": "authenticate", "user": "alice",
                                        "password": "alice-pass-1", "converse": True}))
    (prompt,) = replies(transport)
    session.dataReceived(client.encode({"type": "code", "session": prompt["session"],
                                        "code": totp.at(T0)}))
    assert replies(transport)[0]["result"] == "success"
    assert directory.asked == [(ALICE, "alice-pass-1")]


def test_no_prompt_without_a_second_factor(front: Any) -> None:
    """converse for a user without a second factor authenticates at once."""
    pam_front, _, _ = front
    assert ask(pam_front, type="authenticate", user="alice", password="alice-pass-1",
               converse=True)["result"] == "success"


def test_pam_exec_style_code_appended(front: Any) -> None:
    """Without converse (pam_exec) the code comes appended to the password."""
    pam_front, harness, directory = front
    totp = _enrol(harness, harness.box)
    assert ask(pam_front, type="authenticate", user="alice",
               password="alice-pass-1" + totp.at(T0))["result"] == "success"
    assert ask(pam_front, type="authenticate", user="alice",
               password="alice-pass-1")["result"] == "denied"
    assert directory.asked == [(ALICE, "alice-pass-1")]


def test_account_refuses_a_locked_user(front: Any) -> None:
    """account: success normally; denied once wrong passwords locked the account."""
    pam_front, _, _ = front
    assert ask(pam_front, type="account", user="alice")["result"] == "success"
    for _ in range(3):
        ask(pam_front, type="authenticate", user="alice", password="wrong")
    assert ask(pam_front, type="account", user="alice")["result"] == "denied"


def test_requests_never_show_secrets() -> None:
    """A request's repr (what a log line would show) has no password, code or new password."""
    request = parse_request(client.encode({"type": "chauthtok", "user": "alice",
                                           "password": "old-secret-1", "code": "123456",
                                           "new_password": "new-secret-2"})[4:])
    assert isinstance(request, PamRequest)
    for secret in ("old-secret-1", "123456", "new-secret-2"):
        assert secret not in repr(request)


@pytest.mark.parametrize("text, expected", [
    ("pam_socket = /run/x.sock\n", "/run/x.sock"),
    ("pam_socket = /run/x.sock ; the socket\n", "/run/x.sock"),
    ("pam_socket = /run/x.sock # the socket\n", "/run/x.sock"),
    ("; pam_socket = /run/commented.sock\n", client.DEFAULT_SOCKET),
    ("", client.DEFAULT_SOCKET),
])
def test_helper_reads_the_socket_path_as_the_daemon_does(tmp_path: Path, text: str,
                                                         expected: str) -> None:
    """The helper's one-line reader finds the same pam_socket as the daemon's configparser,
    or the same default."""
    config = f"[proxy]\nupstream = ldap://dir.example.org\n{text}"
    path = tmp_path / "bindguard.ini"
    path.write_text(config)
    assert client.socket_path(str(path)) == expected
    assert parse_config(config).proxy.pam_socket == expected


def test_helper_ignores_pam_socket_outside_proxy(tmp_path: Path) -> None:
    """A pam_socket line in another section, or indented under another key (a continuation
    of its value), is not the socket."""
    path = tmp_path / "bindguard.ini"
    path.write_text("[directory]\npam_socket = /run/other.sock\n[proxy]\nupstream = ldap://a\n"
                    "    pam_socket = /run/continuation.sock\n")
    assert client.socket_path(str(path)) == client.DEFAULT_SOCKET


def test_client_refuses_a_socket_not_owned_by_root(tmp_path: Path) -> None:
    """Before any password is sent, the path must be a socket owned by root."""
    not_socket = tmp_path / "file"
    not_socket.write_text("")
    with pytest.raises(client.Unreachable, match="not a socket"):
        client.check_owner(str(not_socket))
    with pytest.raises(client.Unreachable, match="No such file"):
        client.check_owner(str(tmp_path / "missing"))


def test_chauthtok_refused_by_the_rules_is_not_a_login(make_harness: Any) -> None:
    """chauthtok with a new password the rules refuse: denied with the rule's message, audited
    as password.rejected only — no login failure counted, the directory never asked."""
    harness = make_harness(compliance="password_min_length = 12\n[directory]\n"
                                      "user_dn_template = uid={user},ou=people,dc=example,dc=org\n")
    pam_front = PamFront(harness.config, harness.factory.service, harness.clock)
    directory = FakeDirectory()
    pam_front.directory = directory  # type: ignore[assignment]
    pam_front.peer_uid = lambda transport: 0
    reply = ask(pam_front, type="chauthtok", user="alice", password="alice-pass-1",
                new_password="short")
    assert reply == {"version": 1, "result": "denied",
                     "message": "password_min_length: at least 12 characters"}
    assert [(e["event"], e.get("reason")) for e in harness.audit()] == [
        ("password.rejected", "password_min_length")]
    assert directory.asked == []
    state = harness.store.get(ALICE)
    assert state is not None and state.failures == () and state.pending == ()
