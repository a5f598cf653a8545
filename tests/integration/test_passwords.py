"""Password changes, must-change sessions and the directory's own password record, through the
real daemon in front of a real slapd (with its ppolicy overlay), driven by ldappasswd,
ldapmodify, ldapsearch and ldapwhoami."""
from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from procs import Daemon, modify, shadow_last_change, whoami

from proxy.demo.slapd import ADMIN_DN, ADMIN_PASSWORD, DEMO_USERS, PEOPLE, Slapd, user_dn

pytestmark = pytest.mark.integration

ALICE, BOB, CAROL, DAVE = (user_dn(u) for u in ("alice", "bob", "carol", "dave"))

QUALITY = """
password_min_length = 12
password_min_character_classes = 3
password_regex = ^(?!.*example).*$
password_regex_description = the password must not contain the word "example"
"""

Start = Callable[..., Daemon]


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Slapd]:
    """A throwaway slapd with the ppolicy overlay (pwdChangedTime, pwdReset), no policy."""
    server = Slapd(tmp_path / "slapd-ppolicy", ppolicy=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start(tmp_path: Path, directory: Slapd) -> Iterator[Start]:
    """Start `bindguard serve` in front of ``directory`` with extra compliance lines."""
    daemons: list[Daemon] = []

    def make(compliance: str = "", attempts: int = 5) -> Daemon:
        daemon = Daemon(tmp_path, directory.uri, attempts=attempts, compliance=compliance,
                        name=f"bindguard{len(daemons)}")
        daemons.append(daemon)
        daemon.start()
        return daemon

    yield make
    for daemon in daemons:
        daemon.stop(signal.SIGKILL)


@dataclass
class Outcome:
    """What ldappasswd reported: the LDAP result code and everything it printed."""

    returncode: int  # the LDAP result code (ldappasswd itself exits 1 on any failure)
    stderr: str  # stdout and stderr together


def passwd(uri: str, new: str, *, as_dn: str | None = None, password: str | None = None,
           user: str | None = None, old: str | None = None,
           extra: tuple[str, ...] = ()) -> Outcome:
    """Run the real ``ldappasswd`` (Password Modify)."""
    args = ["ldappasswd", "-x", "-H", uri, "-s", new, *extra]
    if as_dn is not None:
        args += ["-D", as_dn, "-w", password or ""]
    if old is not None:
        args += ["-a", old]
    if user is not None:
        args.append(user)
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    text = result.stdout + result.stderr
    found = re.search(r"\((\d+)\)", text)
    code = 0 if result.returncode == 0 else int(found.group(1)) if found else -1
    return Outcome(code, text)


def search(uri: str, as_dn: str, password: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``ldapsearch`` for one entry."""
    return subprocess.run(["ldapsearch", "-x", "-LLL", "-H", uri, "-D", as_dn, "-w", password,
                           "-b", PEOPLE, "(uid=carol)", "uid"],
                          capture_output=True, text=True, timeout=30)


def events(daemon: Daemon, *names: str) -> list[tuple[str, str | None]]:
    """(event, reason) of the audit lines whose event is one of ``names``."""
    return [(e["event"], e.get("reason")) for e in daemon.audit() if e["event"] in names]


def binds(uri: str, dn: str, password: str) -> bool:
    return whoami(uri, dn, password).returncode == 0


def test_good_change_reaches_the_directory_and_is_recorded(start: Start,
                                                           directory: Slapd) -> None:
    """A self-service ldappasswd that meets every rule is forwarded as the user; the new
    password works at slapd itself; bindguard records and audits it."""
    daemon = start(QUALITY)
    result = passwd(daemon.uri, "Fresh-Password-1", as_dn=ALICE, password=DEMO_USERS["alice"])
    assert result.returncode == 0, result.stderr
    assert binds(directory.uri, ALICE, "Fresh-Password-1")
    assert not binds(directory.uri, ALICE, DEMO_USERS["alice"])
    assert events(daemon, "password.changed") == [("password.changed", "self")]
    status = daemon.status("alice")
    assert status["password_changed_by"] == "self" and status["password_changed"] is not None


@pytest.mark.parametrize(("new", "rule"), [
    ("Short-1", "password_min_length"),
    ("onlylowercaseletters", "password_min_character_classes"),
    ("My-example-Password-1", 'the password must not contain the word "example"'),
])
def test_refused_changes_name_the_rule(start: Start, directory: Slapd, new: str,
                                       rule: str) -> None:
    """A new password that breaks a rule gets 19 with a message naming the rule (the regex's
    description where set); the directory's password stays as it was."""
    daemon = start(QUALITY)
    result = passwd(daemon.uri, new, as_dn=ALICE, password=DEMO_USERS["alice"])
    assert result.returncode == 19, result.stderr
    assert "Constraint violation (19)" in result.stderr
    assert rule in result.stderr
    assert binds(directory.uri, ALICE, DEMO_USERS["alice"])
    assert len(events(daemon, "password.rejected")) == 1
    assert events(daemon, "password.changed") == []


def test_ppolicy_control_on_a_refused_change(start: Start) -> None:
    """With the password policy request control, ldappasswd's refusal carries the response
    control saying why (passwordTooShort)."""
    daemon = start(QUALITY)
    result = passwd(daemon.uri, "Short-1", as_dn=ALICE, password=DEMO_USERS["alice"],
                    extra=("-e", "ppolicy"))
    assert result.returncode == 19
    assert "ppolicy: error=6 (Password is too short for policy)" in result.stderr


def test_history_refuses_the_last_n_passwords(start: Start, directory: Slapd) -> None:
    """unique_last_password_count = 3: each of the last three passwords (the current one
    included) is refused; the fourth back is allowed again."""
    daemon = start(QUALITY + "unique_last_password_count = 3\n")
    current = DEMO_USERS["alice"]  # alice-pass-1: 12 characters, 3 classes
    for new in ("History-Pass-A1", "History-Pass-B2", "History-Pass-C3"):
        result = passwd(daemon.uri, new, as_dn=ALICE, password=current)
        assert result.returncode == 0, result.stderr
        current = new
    for old in ("History-Pass-C3", "History-Pass-B2", "History-Pass-A1"):
        refused = passwd(daemon.uri, old, as_dn=ALICE, password=current)
        assert refused.returncode == 19, refused.stderr
        assert "unique_last_password_count" in refused.stderr
    again = passwd(daemon.uri, DEMO_USERS["alice"], as_dn=ALICE, password=current)
    assert again.returncode == 0, again.stderr
    assert binds(directory.uri, ALICE, DEMO_USERS["alice"])


def test_minimum_age_binds_users_but_not_administrators(start: Start) -> None:
    """minimum_password_age = 1: a second self change the same day is refused; the
    administrator may still set the password, as in Keystone."""
    daemon = start("minimum_password_age = 1\n")
    first = passwd(daemon.uri, "First-Change-1", as_dn=BOB, password=DEMO_USERS["bob"])
    assert first.returncode == 0, first.stderr
    second = passwd(daemon.uri, "Second-Change-2", as_dn=BOB, password="First-Change-1")
    assert second.returncode == 19
    assert "minimum_password_age" in second.stderr
    admin = passwd(daemon.uri, "Admin-Set-3", as_dn=ADMIN_DN, password=ADMIN_PASSWORD,
                   user=BOB)
    assert admin.returncode == 0, admin.stderr
    assert binds(daemon.uri, BOB, "Admin-Set-3")
    assert events(daemon, "password.changed") == [("password.changed", "self"),
                                                  ("password.changed", "admin")]


def test_ldapmodify_changes_are_checked_too(start: Start, directory: Slapd) -> None:
    """A ModifyRequest on userPassword meets the same rules: the self-service forms (delete
    the old value and add the new, as Active Directory wants; replace, as OpenLDAP does) and an
    administrator's replace; a pre-hashed value is refused (53); a modify of another attribute
    passes through."""
    daemon = start(QUALITY)
    short = modify(daemon.uri, ALICE, DEMO_USERS["alice"],
                   f"dn: {ALICE}\nchangetype: modify\ndelete: userPassword\n"
                   f"userPassword: {DEMO_USERS['alice']}\n-\nadd: userPassword\n"
                   "userPassword: Short-1\n-\n")
    assert short.returncode == 19
    assert "password_min_length" in short.stderr
    good = modify(daemon.uri, ALICE, DEMO_USERS["alice"],
                  f"dn: {ALICE}\nchangetype: modify\nreplace: userPassword\n"
                  "userPassword: Modified-Pass-1\n-\n")
    assert good.returncode == 0, good.stderr
    assert binds(directory.uri, ALICE, "Modified-Pass-1")
    admin = modify(daemon.uri, ADMIN_DN, ADMIN_PASSWORD,
                   f"dn: {BOB}\nchangetype: modify\nreplace: userPassword\n"
                   "userPassword: Admin-Replaced-2\n-\n")
    assert admin.returncode == 0, admin.stderr
    assert binds(directory.uri, BOB, "Admin-Replaced-2")
    hashed = modify(daemon.uri, ADMIN_DN, ADMIN_PASSWORD,
                    f"dn: {BOB}\nchangetype: modify\nreplace: userPassword\n"
                    "userPassword: {SSHA}c2VjcmV0c2VjcmV0c2VjcmV0\n-\n")
    assert hashed.returncode == 53
    other = modify(daemon.uri, ALICE, "Modified-Pass-1",
                   f"dn: {ALICE}\nchangetype: modify\nreplace: sn\nsn: Liddell\n-\n")
    assert other.returncode == 50  # slapd's own ACL answers: the request passed through
    assert events(daemon, "password.changed") == [("password.changed", "self"),
                                                  ("password.changed", "admin")]


def test_must_change_after_an_administrator_sets_the_password(start: Start) -> None:
    """change_password_upon_first_use: after the administrator sets carol's password, her
    bind succeeds into a session that may only change it (ldapsearch gets 50, ldapwhoami -e
    ppolicy says so); after her own change the session is normal."""
    daemon = start("change_password_upon_first_use = true\n")
    admin = passwd(daemon.uri, "Temporary-Pass-9", as_dn=ADMIN_DN, password=ADMIN_PASSWORD,
                   user=CAROL)
    assert admin.returncode == 0, admin.stderr
    told = whoami(daemon.uri, CAROL, "Temporary-Pass-9", "-e", "ppolicy")
    assert told.returncode == 0, told.stderr
    assert "Password must be changed" in told.stdout + told.stderr
    refused = search(daemon.uri, CAROL, "Temporary-Pass-9")
    assert refused.returncode == 50, refused.stderr
    assert "password change required" in refused.stderr
    assert daemon.status("carol")["must_change_password"] is True
    changed = passwd(daemon.uri, "Carols-Own-Pass-1", as_dn=CAROL, password="Temporary-Pass-9")
    assert changed.returncode == 0, changed.stderr
    allowed = search(daemon.uri, CAROL, "Carols-Own-Pass-1")
    assert allowed.returncode == 0, allowed.stderr
    assert "uid: carol" in allowed.stdout
    assert daemon.status("carol")["must_change_password"] is False


def test_expire_by_hand_restricts_the_next_login(start: Start) -> None:
    """`bindguard expire dave` makes dave's next login a must-change session, even without
    change_password_upon_first_use; it is audited."""
    daemon = start()
    assert search(daemon.uri, DAVE, DEMO_USERS["dave"]).returncode == 0
    expired = daemon.cli("expire", "dave")
    assert expired.returncode == 0, expired.stderr
    refused = search(daemon.uri, DAVE, DEMO_USERS["dave"])
    assert refused.returncode == 50
    changed = passwd(daemon.uri, "Daves-New-Pass-1", as_dn=DAVE, password=DEMO_USERS["dave"])
    assert changed.returncode == 0, changed.stderr
    assert search(daemon.uri, DAVE, "Daves-New-Pass-1").returncode == 0
    assert events(daemon, "password.expired") == [("password.expired", "admin")]


def test_directory_reset_flag_means_must_change(start: Start, directory: Slapd) -> None:
    """A password marked reset in the directory itself (pwdReset: TRUE) must be changed at
    the next login through bindguard."""
    daemon = start("change_password_upon_first_use = true\n")
    marked = modify(directory.uri, ADMIN_DN, ADMIN_PASSWORD,
                    f"dn: {DAVE}\nchangetype: modify\nreplace: pwdReset\npwdReset: TRUE\n-\n")
    assert marked.returncode == 0, marked.stderr
    told = whoami(daemon.uri, DAVE, DEMO_USERS["dave"], "-e", "ppolicy")
    assert told.returncode == 0
    assert "Password must be changed" in told.stdout + told.stderr
    assert search(daemon.uri, DAVE, DEMO_USERS["dave"]).returncode == 50


def test_expiry_counts_from_the_directory_record(start: Start, directory: Slapd) -> None:
    """Where bindguard has recorded no change, the password's age comes from the directory
    (shadowLastChange here): 60 days old with password_expires_days = 30 is expired at the
    first bind (49, "Password expired" with the control); 20 days old binds with a warning."""
    daemon = start("password_expires_days = 30\npassword_expiry_warning_days = 14\n")
    shadow_last_change(directory, ALICE, 60)
    shadow_last_change(directory, BOB, 20)
    expired = whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-e", "ppolicy")
    assert expired.returncode == 49
    assert "Password expired" in expired.stdout + expired.stderr
    plain = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    wrong = whoami(daemon.uri, CAROL, "wrong")
    assert plain.returncode == 49 and plain.stderr == wrong.stderr
    warned = whoami(daemon.uri, BOB, DEMO_USERS["bob"], "-e", "ppolicy")
    assert warned.returncode == 0, warned.stderr
    assert "Password expires in" in warned.stdout + warned.stderr
    assert ("auth.failure", "password_expired") in events(daemon, "auth.failure")


def test_expired_password_can_be_changed_without_binding(start: Start,
                                                          directory: Slapd) -> None:
    """Self-service rescue: an expired password is changed by a Password Modify with the old
    password on an unauthenticated connection (ldappasswd -a OLD, no -D), under the rules."""
    daemon = start(QUALITY + "password_expires_days = 30\n")
    shadow_last_change(directory, ALICE, 60)
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 49
    short = passwd(daemon.uri, "Short-1", user=ALICE, old=DEMO_USERS["alice"])
    assert short.returncode == 19
    wrong = passwd(daemon.uri, "Rescued-Pass-1", user=ALICE, old="not-her-password")
    assert wrong.returncode == 49
    rescued = passwd(daemon.uri, "Rescued-Pass-1", user=ALICE, old=DEMO_USERS["alice"])
    assert rescued.returncode == 0, rescued.stderr
    assert binds(daemon.uri, ALICE, "Rescued-Pass-1")
    assert events(daemon, "password.changed") == [("password.changed", "self")]
    assert daemon.status("alice")["failures"] == 0  # the good bind forgot the wrong one


def test_no_password_in_logs_or_audit(start: Start) -> None:
    """Neither the daemon's log nor the audit log holds any password used in changes."""
    daemon = start(QUALITY + "unique_last_password_count = 2\n")
    passwd(daemon.uri, "Short-1", as_dn=ALICE, password=DEMO_USERS["alice"])
    passwd(daemon.uri, "Secret-Value-77", as_dn=ALICE, password=DEMO_USERS["alice"])
    passwd(daemon.uri, "Secret-Value-77", as_dn=ALICE, password="Secret-Value-77")
    text = daemon.log_text() + daemon.audit_path.read_text()
    for secret in ("Short-1", "Secret-Value-77", DEMO_USERS["alice"]):
        assert secret not in text
