"""The TOTP second factor, end to end: `bindguard otp` enrols users and prints backup codes, the
real daemon checks the code appended to the password before anything reaches the real slapd,
and real clients (ldapwhoami, ldappasswd, python-ldap) see only 0 or 49.

Codes are computed with pyotp at the moment they are used. A replay reuses the very same code
at once; a fresh code after a used one is the next step's (``totp.at(now + 30)``, inside the
accepted window), so no test waits for a 30 s step to pass."""
from __future__ import annotations

import re
import secrets
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import ldap
import pyotp
import pytest
from procs import BINDGUARD, Daemon, enrol, shadow_last_change, whoami

from proxy.demo.slapd import (
    DEMO_USERS,
    SERVICE_DN,
    SERVICE_PASSWORD,
    Slapd,
    user_dn,
)

pytestmark = pytest.mark.integration

ALICE, BOB, CAROL, DAVE = (user_dn(u) for u in ("alice", "bob", "carol", "dave"))
ALICE_PW = DEMO_USERS["alice"]
BACKUP_RE = re.compile(r"^[0-9]-[a-z2-9]{4}-[a-z2-9]{4}$")
ENFORCE = "enforce_2fa = true\n2fa_exempt = ou=services,dc=example,dc=org\n"


# -- helpers ----------------------------------------------------------------------------------



def backup_codes(daemon: Daemon, user: str) -> list[str]:
    """`bindguard otp backup-codes USER`: its output, line by line."""
    result = daemon.cli("otp", "backup-codes", user)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def fresh(totp: pyotp.TOTP) -> str:
    """A code of the next time step: not yet used, and inside the accepted window."""
    return totp.at(time.time() + 30)


def wrong_code(totp: pyotp.TOTP) -> str:
    """Six digits that are no code of any step the daemon could accept now."""
    now = time.time()
    valid = {totp.at(now + offset) for offset in (-90, -60, -30, 0, 30, 60, 90)}
    while True:
        code = f"{secrets.randbelow(10**6):06d}"
        if code not in valid:
            return code


def events(daemon: Daemon, *names: str) -> list[tuple[str, str | None]]:
    """(event, reason) of the audit lines whose event is one of ``names``."""
    return [(e["event"], e.get("reason")) for e in daemon.audit() if e["event"] in names]


def failures_of(daemon: Daemon, dn: str) -> list[str | None]:
    """The reasons of the auth.failure lines of ``dn``."""
    return [e.get("reason") for e in daemon.audit()
            if e["event"] == "auth.failure" and e["user"] == dn]


def py_bind(uri: str, dn: str, password: str) -> str:
    """A simple bind with python-ldap; then WhoAmI on the same connection."""
    conn = ldap.initialize(uri)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 20)
    conn.set_option(ldap.OPT_TIMEOUT, 20)
    try:
        conn.simple_bind_s(dn, password)
        return str(conn.whoami_s())
    finally:
        conn.unbind_s()


def rescue(uri: str, dn: str, old: str, new: str) -> subprocess.CompletedProcess[str]:
    """``ldappasswd -a OLD -s NEW DN`` on an unauthenticated connection (no -D)."""
    return subprocess.run(["ldappasswd", "-x", "-H", uri, "-a", old, "-s", new, dn],
                          capture_output=True, text=True, timeout=30)


# -- tests ------------------------------------------------------------------------------------

def test_enrolled_user_binds_with_password_and_code(daemon: Daemon, slapd: Slapd) -> None:
    """After `otp enroll` (URI parsed by pyotp), password+current code binds with ldapwhoami
    and with python-ldap; each accepted bind reaches slapd exactly once, with the password
    only (slapd accepts it, which it would not with the code still on)."""
    totp = enrol(daemon, "alice")
    assert events(daemon, "otp.enrolled") == [("otp.enrolled", "admin")]
    assert daemon.audit()[-1]["front"] == "cli"
    status = daemon.status("alice")
    assert status["second_factor"] is True and status["second_factor_required"] is True
    before = slapd.bind_count(ALICE)

    result = whoami(daemon.uri, ALICE, ALICE_PW + totp.now())
    assert result.returncode == 0, result.stderr
    assert f"dn:{ALICE}" in result.stdout
    assert slapd.bind_count(ALICE) == before + 1

    assert py_bind(daemon.uri, ALICE, ALICE_PW + fresh(totp)) == f"dn:{ALICE}"
    assert slapd.bind_count(ALICE) == before + 2
    assert events(daemon, "auth.success") == [("auth.success", None)] * 2


def test_replayed_code_is_refused(daemon: Daemon, slapd: Slapd) -> None:
    """The same code a second time is refused (49, audit otp.replayed) before slapd."""
    totp = enrol(daemon, "alice")
    code = totp.now()
    assert whoami(daemon.uri, ALICE, ALICE_PW + code).returncode == 0
    before = slapd.bind_count(ALICE)
    replay = whoami(daemon.uri, ALICE, ALICE_PW + code)
    assert replay.returncode == 49
    assert "Invalid credentials (49)" in replay.stderr
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        py_bind(daemon.uri, ALICE, ALICE_PW + code)
    assert slapd.bind_count(ALICE) == before
    assert failures_of(daemon, ALICE) == ["otp.replayed", "otp.replayed"]


def test_wrong_codes_lock_the_account(make_daemon: Any, slapd: Slapd) -> None:
    """A wrong code is a failure toward lockout: with attempts = 3, three wrong codes lock the
    account (account.locked), after which even the right password and code are refused
    without reaching slapd; none of the wrong codes reached slapd either."""
    daemon: Daemon = make_daemon(attempts=3)
    totp = enrol(daemon, "alice")
    before = slapd.bind_count(ALICE)
    for _ in range(3):
        assert whoami(daemon.uri, ALICE, ALICE_PW + wrong_code(totp)).returncode == 49
    assert failures_of(daemon, ALICE) == ["otp.invalid"] * 3
    assert ("account.locked", "failure_threshold") in events(daemon, "account.locked")
    assert daemon.status("alice")["locked"] is True

    refused = whoami(daemon.uri, ALICE, ALICE_PW + totp.now())
    assert refused.returncode == 49
    assert slapd.bind_count(ALICE) == before
    assert failures_of(daemon, ALICE)[-1] == "locked"


def test_password_alone_is_refused_for_an_enrolled_user(daemon: Daemon, slapd: Slapd) -> None:
    """An enrolled user's password without a code: 49, audit otp.missing, slapd not contacted,
    counted as a failure."""
    enrol(daemon, "alice")
    before = slapd.bind_count(ALICE)
    assert whoami(daemon.uri, ALICE, ALICE_PW).returncode == 49
    with pytest.raises(ldap.INVALID_CREDENTIALS):
        py_bind(daemon.uri, ALICE, ALICE_PW)
    assert slapd.bind_count(ALICE) == before
    assert failures_of(daemon, ALICE) == ["otp.missing", "otp.missing"]
    assert daemon.status("alice")["failures"] == 2


def test_good_code_with_wrong_password_is_refused_by_the_directory(daemon: Daemon,
                                                                   slapd: Slapd) -> None:
    """The right code after a wrong password passes the code check, reaches slapd (once, with
    the password part), and slapd's 49 counts as a failure."""
    totp = enrol(daemon, "alice")
    before = slapd.bind_count(ALICE)
    result = whoami(daemon.uri, ALICE, "not-her-password" + totp.now())
    assert result.returncode == 49
    assert slapd.bind_count(ALICE) == before + 1
    assert failures_of(daemon, ALICE) == ["invalid_credentials"]
    assert daemon.status("alice")["failures"] == 1


def test_backup_code_works_once(daemon: Daemon, slapd: Slapd) -> None:
    """`otp backup-codes` prints exactly 10 codes N-xxxx-xxxx; password+backup code binds once
    (otp.backup_used "9 left"), the same again is refused; new codes void the old."""
    enrol(daemon, "alice")
    codes = backup_codes(daemon, "alice")
    assert len(codes) == 10 and all(BACKUP_RE.match(c) for c in codes), codes
    assert len(set(codes)) == 10
    assert events(daemon, "otp.backup_codes") == [("otp.backup_codes", "admin")]
    assert daemon.status("alice")["backup_codes_left"] == 10

    before = slapd.bind_count(ALICE)
    assert whoami(daemon.uri, ALICE, ALICE_PW + codes[0]).returncode == 0
    assert slapd.bind_count(ALICE) == before + 1
    assert events(daemon, "otp.backup_used") == [("otp.backup_used", "9 left")]
    again = whoami(daemon.uri, ALICE, ALICE_PW + codes[0])
    assert again.returncode == 49
    assert slapd.bind_count(ALICE) == before + 1
    assert failures_of(daemon, ALICE) == ["otp.invalid"]
    assert py_bind(daemon.uri, ALICE, ALICE_PW + codes[5]) == f"dn:{ALICE}"
    assert events(daemon, "otp.backup_used")[-1] == ("otp.backup_used", "8 left")
    assert daemon.status("alice")["backup_codes_left"] == 8

    renewed = backup_codes(daemon, "alice")
    assert len(renewed) == 10 and all(BACKUP_RE.match(c) for c in renewed)
    assert daemon.status("alice")["backup_codes_left"] == 10
    assert whoami(daemon.uri, ALICE, ALICE_PW + codes[3]).returncode == 49  # unused, but old
    assert whoami(daemon.uri, ALICE, ALICE_PW + renewed[3]).returncode == 0
    assert events(daemon, "otp.backup_used")[-1] == ("otp.backup_used", "9 left")


def test_enforce_2fa_with_exempt_subtree(make_daemon: Any, slapd: Slapd) -> None:
    """enforce_2fa = true, 2fa_exempt = the services subtree: the service account binds with
    its password alone; bob, not enrolled, is refused (otp.not_enrolled) before slapd; once
    enrolled, bob binds with password+code."""
    daemon: Daemon = make_daemon(attempts=3, compliance=ENFORCE, proxy="allow_sasl = false")
    service = whoami(daemon.uri, SERVICE_DN, SERVICE_PASSWORD)
    assert service.returncode == 0, service.stderr
    assert py_bind(daemon.uri, SERVICE_DN, SERVICE_PASSWORD) == f"dn:{SERVICE_DN}"
    assert daemon.status(SERVICE_DN)["second_factor_required"] is False
    assert daemon.status("bob")["second_factor_required"] is True

    before = slapd.bind_count(BOB)
    assert whoami(daemon.uri, BOB, DEMO_USERS["bob"]).returncode == 49
    assert slapd.bind_count(BOB) == before
    assert failures_of(daemon, BOB) == ["otp.not_enrolled"]

    totp = enrol(daemon, "bob")
    result = whoami(daemon.uri, BOB, DEMO_USERS["bob"] + totp.now())
    assert result.returncode == 0, result.stderr
    assert slapd.bind_count(BOB) == before + 1


def test_without_enforcement_only_enrolled_users_need_a_code(daemon: Daemon,
                                                             slapd: Slapd) -> None:
    """Without enforce_2fa a user with no second factor binds with the password alone (bob's
    ends in a digit), and `otp remove alice` lets alice bind with her password alone again
    (audit otp.removed)."""
    assert whoami(daemon.uri, BOB, DEMO_USERS["bob"]).returncode == 0
    assert daemon.status("bob")["second_factor_required"] is False

    enrol(daemon, "alice")
    assert whoami(daemon.uri, ALICE, ALICE_PW).returncode == 49
    removed = daemon.cli("otp", "remove", "alice")
    assert removed.returncode == 0, removed.stderr
    assert events(daemon, "otp.removed") == [("otp.removed", "admin")]
    status = daemon.status("alice")
    assert status["second_factor"] is False and status["second_factor_required"] is False
    before = slapd.bind_count(ALICE)
    assert whoami(daemon.uri, ALICE, ALICE_PW).returncode == 0
    assert py_bind(daemon.uri, ALICE, ALICE_PW) == f"dn:{ALICE}"
    assert slapd.bind_count(ALICE) == before + 2


def test_refusals_look_alike_on_the_wire(make_daemon: Any) -> None:
    """A wrong code, a missing code, a locked account and a wrong password give the same
    ldapwhoami exit code and the same stderr."""
    daemon: Daemon = make_daemon(attempts=3)
    totp = enrol(daemon, "alice")
    for _ in range(3):
        whoami(daemon.uri, DAVE, "wrong")
    assert daemon.status("dave")["locked"] is True
    outcomes = {
        "wrong code": whoami(daemon.uri, ALICE, ALICE_PW + wrong_code(totp)),
        "missing code": whoami(daemon.uri, ALICE, ALICE_PW),
        "locked": whoami(daemon.uri, DAVE, DEMO_USERS["dave"]),
        "wrong password": whoami(daemon.uri, CAROL, "not-carols-password"),
    }
    seen = {(r.returncode, r.stdout, r.stderr) for r in outcomes.values()}
    assert len(seen) == 1, outcomes
    assert outcomes["wrong password"].returncode == 49
    assert failures_of(daemon, ALICE) == ["otp.invalid", "otp.missing"]


def test_key_file_mode_and_refusal_when_readable(make_daemon: Any, daemon: Daemon,
                                                 tmp_path: Path) -> None:
    """The key file is created 0600 by the daemon and by the CLI; a daemon whose key file
    others may read refuses to start (exit 1) and its log names the file and says why."""
    key = tmp_path / "otp.key"  # default: beside the state file
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    (tmp_path / "other").mkdir()
    offline: Daemon = make_daemon(start=False, state=tmp_path / "other" / "state.sqlite")
    cli_key = tmp_path / "other" / "otp.key"
    assert not cli_key.exists()
    enrol(offline, "carol")
    assert stat.S_IMODE(cli_key.stat().st_mode) == 0o600

    daemon.stop()
    key.chmod(0o644)
    mark = len(daemon.log_text())
    with open(daemon.log_path, "ab") as log:
        process = subprocess.Popen([BINDGUARD, "serve", "-c", str(daemon.config)],
                                   stdout=log, stderr=log)
    try:
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 1
    text = daemon.log_text()[mark:]
    assert str(key) in text and "others may read" in text, text


def test_no_secret_code_or_password_at_rest_or_in_logs(daemon: Daemon, tmp_path: Path) -> None:
    """Neither the state file (its bytes, WAL included) nor the audit log nor the daemon's log
    holds the base32 secret, a code, a backup code or the password."""
    totp = enrol(daemon, "alice")
    codes = backup_codes(daemon, "alice")
    used_totp = totp.now()
    assert whoami(daemon.uri, ALICE, ALICE_PW + used_totp).returncode == 0
    assert whoami(daemon.uri, ALICE, ALICE_PW + codes[1]).returncode == 0
    wrong = wrong_code(totp)
    assert whoami(daemon.uri, ALICE, ALICE_PW + wrong).returncode == 49
    assert whoami(daemon.uri, ALICE, "bad-password" + fresh(totp)).returncode == 49

    state = b"".join(p.read_bytes() for p in tmp_path.glob("state.sqlite*"))
    assert state, "no state file"
    logs = (daemon.audit_path.read_text() + daemon.log_text()).encode()
    secret = totp.secret
    for blob in (state, logs):
        for clear in (secret, secret.lower(), *codes, ALICE_PW, "bad-password"):
            assert clear.encode() not in blob, clear
        for code in (used_totp, wrong):
            assert not re.search(rb"(?<![0-9])" + code.encode() + rb"(?![0-9])", blob), code


def test_expired_password_rescue_needs_the_code(make_daemon: Any, slapd: Slapd) -> None:
    """An expired password (shadowLastChange 60 days back, password_expires_days = 30) is
    changed with ldappasswd -a OLD+CODE (no -D); OLD alone is refused (49); the new password
    then binds with a fresh code."""
    daemon: Daemon = make_daemon(compliance="password_expires_days = 30\n")
    shadow_last_change(slapd, ALICE, 60)
    totp = enrol(daemon, "alice")
    codes = backup_codes(daemon, "alice")  # shows the expiry without using up a TOTP step
    assert whoami(daemon.uri, ALICE, ALICE_PW + codes[0]).returncode == 49  # expired
    assert failures_of(daemon, ALICE) == ["password_expired"]

    alone = rescue(daemon.uri, ALICE, ALICE_PW, "Rescued-Pass-1")
    assert alone.returncode != 0
    assert "Invalid credentials (49)" in alone.stdout + alone.stderr
    assert failures_of(daemon, ALICE)[-1] == "otp.missing"

    done = rescue(daemon.uri, ALICE, ALICE_PW + totp.now(), "Rescued-Pass-1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert events(daemon, "password.changed") == [("password.changed", "self")]
    # the directory has the new password: straight to slapd, no code
    assert whoami(slapd.uri, ALICE, "Rescued-Pass-1").returncode == 0
    # through bindguard: the new password with a code of a step not used yet
    result = whoami(daemon.uri, ALICE, "Rescued-Pass-1" + fresh(totp))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("spelling", [
    r"uid=\61lice,ou=people,dc=example,dc=org",
    "0.9.2342.19200300.100.1.1=alice,ou=people,dc=example,dc=org",
    "UID=Alice , OU=People, DC=Example, DC=Org",
])
def test_another_spelling_of_the_dn_needs_the_code_too(make_daemon: Any, slapd: Slapd,
                                                      spelling: str) -> None:
    """slapd accepts other spellings of alice's DN (escapes, OIDs, case, spaces); bindguard
    keys them all as alice, so none of them logs in without her code."""
    daemon = make_daemon()
    totp = enrol(daemon, "alice")
    assert whoami(slapd.uri, spelling, ALICE_PW).returncode == 0  # the directory's view
    before = slapd.bind_count()
    assert whoami(daemon.uri, spelling, ALICE_PW).returncode == 49
    assert slapd.bind_count() == before
    assert events(daemon, "auth.failure")[-1] == ("auth.failure", "otp.missing")
    assert whoami(daemon.uri, spelling, ALICE_PW + totp.now()).returncode == 0
    assert {e["user"] for e in daemon.audit() if e["event"].startswith("auth.")} == {ALICE}
