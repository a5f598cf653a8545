"""The pam_python module (pam_module/pam_bindguard.py) in a real PAM stack, driven by pamtester,
in front of the real daemon and a real slapd.

pam_python is never loaded into this process (with python-pam in the same process it segfaults):
each test writes its own /etc/pam.d/bindguard-test-<random> service and runs ``pamtester``.
pamtester converses through libpam_misc's misc_conv, which, when standard input is not a
terminal, reads one line per prompt: the answers are fed as lines on standard input, in the
order the prompts come. Prompts and error messages go to standard error, informational
messages to standard output."""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from procs import Daemon, enrol, shadow_last_change, whoami

from proxy.demo.slapd import DEMO_USERS, Slapd, user_dn

# Debian's libpam-python installs it in /lib/security (libpam also looks there).
PAM_PYTHON = ("/lib/security/pam_python.so", "/lib/x86_64-linux-gnu/security/pam_python.so")
MODULE = Path(__file__).resolve().parents[2] / "pam_module" / "pam_bindguard.py"
CODE_PROMPT = "Verification code: "

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="writes /etc/pam.d and runs PAM as root"),
    pytest.mark.skipif(shutil.which("pamtester") is None
                       or not any(map(os.path.exists, PAM_PYTHON)),
                       reason="needs pamtester and libpam-python"),
]

ALICE, BOB, CAROL = (user_dn(u) for u in ("alice", "bob", "carol"))
Service = Callable[[Daemon], str]


@pytest.fixture
def pam_service() -> Iterator[Service]:
    """Write a PAM service using the module against a daemon's config; removed at teardown."""
    written: list[Path] = []

    def make(daemon: Daemon) -> str:
        name = f"bindguard-test-{secrets.token_hex(4)}"
        line = f"pam_python.so {MODULE} -c {daemon.config}"
        path = Path("/etc/pam.d") / name
        written.append(path)
        path.write_text(f"auth      required  {line}\naccount   required  {line}\n"
                        f"password  required  {line}\nsession   optional  pam_permit.so\n")
        return name

    try:
        yield make
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def pamtester(service: str, user: str, *operations: str,
              answers: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run pamtester; ``answers`` are the replies to the prompts, one line each."""
    return subprocess.run(["pamtester", service, user, *operations],
                          input="".join(f"{answer}\n" for answer in answers),
                          capture_output=True, text=True, timeout=60)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def events(daemon: Daemon, *names: str) -> list[tuple[str, str | None]]:
    """(event, reason) of the audit lines whose event is one of ``names``."""
    return [(e["event"], e.get("reason")) for e in daemon.audit() if e["event"] in names]




def wrong_code(totp: pyotp.TOTP) -> str:
    """Six digits that are no code of any step the daemon could accept now."""
    valid = {totp.at(time.time() + offset) for offset in range(-90, 91, 30)}
    while True:
        code = f"{secrets.randbelow(10**6):06d}"
        if code not in valid:
            return code


def binds(slapd: Slapd, dn: str, password: str) -> bool:
    """Whether slapd itself (not the proxy) accepts ``password`` for ``dn``."""
    return whoami(slapd.uri, dn, password).returncode == 0


def test_right_password_authenticates(make_daemon: Any, pam_service: Service) -> None:
    """The right password at the "Password: " prompt: pamtester succeeds, no code is asked,
    and the audit log records a PAM success."""
    daemon = make_daemon()
    result = pamtester(pam_service(daemon), "alice", "authenticate",
                       answers=(DEMO_USERS["alice"],))
    assert result.returncode == 0, output(result)
    assert "Password: " in result.stderr and CODE_PROMPT not in result.stderr
    assert "successfully authenticated" in result.stdout
    assert [(e["event"], e["front"]) for e in daemon.audit()
            if e["event"].startswith("auth.")] == [("auth.success", "pam")]


def test_wrong_password_is_refused(make_daemon: Any, pam_service: Service) -> None:
    """A wrong password fails (PAM_AUTH_ERR, no message beyond pamtester's) and is audited as
    invalid_credentials; the password appears in no log."""
    daemon = make_daemon()
    result = pamtester(pam_service(daemon), "alice", "authenticate", answers=("not-hers",))
    assert result.returncode != 0
    assert "Authentication failure" in output(result)
    assert events(daemon, "auth.failure") == [("auth.failure", "invalid_credentials")]
    assert "not-hers" not in daemon.audit_path.read_text() + daemon.log_text()


def test_enrolled_user_is_asked_for_a_code(make_daemon: Any, pam_service: Service) -> None:
    """An enrolled user: password at the first prompt, code at the second, success. A user
    without a second factor is asked for no code."""
    daemon = make_daemon()
    service = pam_service(daemon)
    totp = enrol(daemon, "alice")
    result = pamtester(service, "alice", "authenticate",
                       answers=(DEMO_USERS["alice"], totp.now()))
    assert result.returncode == 0, output(result)
    assert result.stderr.count(CODE_PROMPT) == 1
    assert result.stderr.index("Password: ") < result.stderr.index(CODE_PROMPT)
    plain = pamtester(service, "bob", "authenticate", answers=(DEMO_USERS["bob"],))
    assert plain.returncode == 0, output(plain)
    assert CODE_PROMPT not in plain.stderr


def test_wrong_code_is_refused(make_daemon: Any, slapd: Slapd,
                               pam_service: Service) -> None:
    """The right password with a wrong code fails, audited as otp.invalid, and the password
    never reaches slapd."""
    daemon = make_daemon()
    totp = enrol(daemon, "alice")
    before = slapd.bind_count(ALICE)
    result = pamtester(pam_service(daemon), "alice", "authenticate",
                       answers=(DEMO_USERS["alice"], wrong_code(totp)))
    assert result.returncode != 0
    assert CODE_PROMPT in result.stderr
    assert events(daemon, "auth.failure") == [("auth.failure", "otp.invalid")]
    assert slapd.bind_count(ALICE) == before


def test_locked_account_fails_account_management(make_daemon: Any,
                                                 pam_service: Service) -> None:
    """Three wrong passwords with attempts=3 lock the account: account management then
    refuses it (PAM_PERM_DENIED), and so does the right password."""
    daemon = make_daemon(attempts=3)
    service = pam_service(daemon)
    fine = pamtester(service, "carol", "acct_mgmt")
    assert fine.returncode == 0, output(fine)
    for _ in range(3):
        assert pamtester(service, "carol", "authenticate", answers=("wrong",)).returncode != 0
    assert daemon.status("carol")["locked_until"]
    locked = pamtester(service, "carol", "acct_mgmt")
    assert locked.returncode != 0
    assert "Permission denied" in output(locked)
    right = pamtester(service, "carol", "authenticate", answers=(DEMO_USERS["carol"],))
    assert right.returncode != 0


def test_account_management_shows_the_expiry_warning(make_daemon: Any, slapd: Slapd,
                                                     pam_service: Service) -> None:
    """password_expires_days = 30, the password changed 20 days ago (shadowLastChange): after
    the login, account management succeeds and shows "Your password expires in N days"
    (N about 10) as an informational message."""
    daemon = make_daemon(compliance="password_expires_days = 30\n")
    shadow_last_change(slapd, CAROL, 20)
    result = pamtester(pam_service(daemon), "carol", "authenticate", "acct_mgmt",
                       answers=(DEMO_USERS["carol"],))
    assert result.returncode == 0, output(result)
    # shadowLastChange counts whole days: 9 days and some hours are left
    assert re.search(r"^Your password expires in (9|10) days$", result.stdout, re.M), result.stdout


def test_expired_by_admin_needs_a_new_password(make_daemon: Any,
                                               pam_service: Service) -> None:
    """After `bindguard expire carol` the password still authenticates (the daemon says
    change_password: auth succeeds), account management answers PAM_NEW_AUTHTOK_REQD, and once
    chauthtok has changed it, the new password logs in and passes account management."""
    daemon = make_daemon()
    expired = daemon.cli("expire", "carol")
    assert expired.returncode == 0, expired.stderr
    service = pam_service(daemon)
    auth = pamtester(service, "carol", "authenticate", answers=(DEMO_USERS["carol"],))
    assert auth.returncode == 0, output(auth)
    result = pamtester(service, "carol", "acct_mgmt")
    assert result.returncode != 0
    assert "new one required" in output(result)
    assert "You must change your password" in result.stderr
    new = "Carol-New-Passw0rd"
    changed = pamtester(service, "carol", "chauthtok(PAM_CHANGE_EXPIRED_AUTHTOK)",
                        answers=(DEMO_USERS["carol"], new, new))
    assert changed.returncode == 0, output(changed)
    after = pamtester(service, "carol", "authenticate", "acct_mgmt", answers=(new,))
    assert after.returncode == 0, output(after)


def test_chauthtok_changes_the_password_in_slapd(make_daemon: Any, slapd: Slapd,
                                                 pam_service: Service) -> None:
    """Current, new and retyped password at pamtester's chauthtok: slapd then takes the new
    password and no longer the old one."""
    daemon = make_daemon()
    new = "Carol-New-Passw0rd"
    result = pamtester(pam_service(daemon), "carol", "chauthtok",
                       answers=(DEMO_USERS["carol"], new, new))
    assert result.returncode == 0, output(result)
    assert "Current password: " in result.stderr and "Retype new password: " in result.stderr
    assert binds(slapd, CAROL, new)
    assert not binds(slapd, CAROL, DEMO_USERS["carol"])
    assert ("password.changed", "self") in events(daemon, "password.changed")
    assert new not in daemon.audit_path.read_text() + daemon.log_text()


def test_chauthtok_refuses_a_password_against_the_rules(make_daemon: Any, slapd: Slapd,
                                                        pam_service: Service) -> None:
    """password_min_length = 12: a shorter new password is refused with the daemon's reason
    shown, and slapd keeps the old password."""
    daemon = make_daemon(compliance="password_min_length = 12\n")
    result = pamtester(pam_service(daemon), "carol", "chauthtok",
                       answers=(DEMO_USERS["carol"], "Sh0rt-pw", "Sh0rt-pw"))
    assert result.returncode != 0
    assert "12" in result.stderr  # the rule's message, e.g. "at least 12 characters"
    assert binds(slapd, CAROL, DEMO_USERS["carol"])
    assert not binds(slapd, CAROL, "Sh0rt-pw")


def test_chauthtok_refuses_a_mistyped_retype(make_daemon: Any, slapd: Slapd,
                                             pam_service: Service) -> None:
    """A retyped password that differs is refused before the daemon is asked."""
    daemon = make_daemon()
    result = pamtester(pam_service(daemon), "carol", "chauthtok",
                       answers=(DEMO_USERS["carol"], "Carol-New-Passw0rd", "Carol-New-Passw0rX"))
    assert result.returncode != 0
    assert "do not match" in result.stderr
    assert binds(slapd, CAROL, DEMO_USERS["carol"])
    assert events(daemon, "password.changed", "password.rejected", "auth.success") == []


def test_chauthtok_asks_an_enrolled_user_for_a_code(make_daemon: Any, slapd: Slapd,
                                                    pam_service: Service) -> None:
    """For an enrolled user the change asks for the code after the passwords."""
    daemon = make_daemon()
    totp = enrol(daemon, "alice")
    new = "Alice-New-Passw0rd"
    result = pamtester(pam_service(daemon), "alice", "chauthtok",
                       answers=(DEMO_USERS["alice"], new, new, totp.now()))
    assert result.returncode == 0, output(result)
    assert result.stderr.index("Retype new password: ") < result.stderr.index(CODE_PROMPT)
    assert binds(slapd, ALICE, new)


@contextlib.contextmanager
def syslog_lines() -> Iterator[list[str] | None]:
    """Collect the syslog lines of pam_bindguard sent while the block runs, through a datagram
    socket bound at /dev/log for that time; None when a syslog daemon owns /dev/log."""
    if os.path.exists("/dev/log"):
        yield None
        return
    lines: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind("/dev/log")
            yield lines
            sock.setblocking(False)
            while True:  # other processes (slapd) may log meanwhile: keep ours only
                try:
                    line = sock.recv(65536).decode(errors="replace")
                except BlockingIOError:
                    break
                if "pam_bindguard" in line:
                    lines.append(line)
        finally:
            Path("/dev/log").unlink(missing_ok=True)


def test_daemon_stopped_fails_closed(make_daemon: Any, pam_service: Service) -> None:
    """With the daemon stopped the right password is refused, and syslog says the daemon is
    unreachable (without the password)."""
    daemon = make_daemon()
    service = pam_service(daemon)
    daemon.stop()
    with syslog_lines() as logged:
        result = pamtester(service, "alice", "authenticate", answers=(DEMO_USERS["alice"],))
    assert result.returncode != 0
    assert "Authentication failure" in output(result)
    if logged is not None:
        assert len(logged) == 1, logged
        assert "bindguard daemon unreachable" in logged[0] and "alice" in logged[0]
        assert DEMO_USERS["alice"] not in logged[0]
