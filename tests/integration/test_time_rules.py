"""Password expiry and inactivity end to end: the real daemon, days ahead under libfaketime.

Each test starts ``bindguard serve`` at the real time (accounts are first seen then), stops
it, and starts it again on the same state with its wall clock N days ahead (see
``faketime_env``); the CLI runs under the same fake time when it must judge "now". Time moves
only by faketime: nothing here sleeps to wait for a rule. Each shift is checked from inside the
shifted process, through the ``ts`` of an audit event it wrote.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import ldap
import pytest
from faketime_env import DAY, FakeTime, Unavailable, build_shim, days_ahead, parse_ts
from ldap.controls.ppolicy import PasswordPolicyControl
from procs import BINDGUARD, Daemon, whoami

from proxy.demo.slapd import DEMO_USERS, Slapd, user_dn

pytestmark = pytest.mark.integration

ALICE, BOB, CAROL, DAVE = (user_dn(u) for u in ("alice", "bob", "carol", "dave"))
# How far a process' clock may be from "real time + N days" (it ran a moment later).
SLACK = 120.0


@pytest.fixture(scope="session")
def fake(tmp_path_factory: pytest.TempPathFactory) -> FakeTime:
    """libfaketime plus the clock_nanosleep shim, built once per session."""
    try:
        return FakeTime(build_shim(tmp_path_factory.mktemp("faketime")))
    except Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def python_ldap() -> Iterator[list[Any]]:
    """python-ldap connections opened by a test, unbound at teardown."""
    opened: list[Any] = []
    yield opened
    for conn in opened:
        try:
            conn.unbind_s()
        except ldap.LDAPError:
            pass


def shift(daemon: Daemon, fake: FakeTime, days: float) -> int:
    """Stop the daemon (cleanly) and start it again ``days`` days ahead on the same state.

    Returns how many audit lines there were before, to find the shifted daemon's own events.
    """
    assert daemon.stop() == 0, daemon.log_text()
    daemon.env = fake.env(days)
    daemon.start()
    return len(daemon.audit())


def assert_shifted(event: dict[str, str], days: float) -> None:
    """The process that wrote ``event`` lived ``days`` days ahead of the real clock."""
    ahead = days_ahead(event["ts"])
    assert abs(ahead - days) * DAY < SLACK, (
        f"{event} was written {ahead:.4f} days ahead, not {days}: faketime is not in effect")


def cli(fake: FakeTime, days: float, daemon: Daemon, *args: str
        ) -> subprocess.CompletedProcess[str]:
    """``bindguard ARGS -c CONFIG`` with its wall clock ``days`` days ahead."""
    return fake.run(days, [BINDGUARD, *args, "-c", str(daemon.config)])


def status(fake: FakeTime, days: float, daemon: Daemon, user: str) -> dict[str, Any]:
    result = cli(fake, days, daemon, "status", user, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def events(daemon: Daemon, since: int = 0) -> list[tuple[str, str, str | None]]:
    return [(e["event"], e["user"], e.get("reason")) for e in daemon.audit()[since:]]


def bind(uri: str, dn: str, password: str, opened: list[Any]) -> Any:
    """A python-ldap simple bind with the password policy request control; its response."""
    conn = ldap.initialize(uri)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 10)
    conn.set_option(ldap.OPT_TIMEOUT, 10)
    opened.append(conn)
    return conn.simple_bind_s(dn, password, serverctrls=[PasswordPolicyControl()])


def ppolicy_of(controls: list[Any]) -> PasswordPolicyControl | None:
    found = [c for c in controls if isinstance(c, PasswordPolicyControl)]
    return found[0] if found else None


# -- the harness itself -----------------------------------------------------------------------


def test_fake_clock_shifts_only_the_wall_clock(fake: FakeTime) -> None:
    """A Python process under the helper's environment sees the wall clock 31 days ahead, while
    time.sleep and timed waits (Event.wait) work and take their real time (the monotonic clock
    is not faked)."""
    probe = ("import threading, time\n"
             "t = time.monotonic(); time.sleep(0.05); threading.Event().wait(0.05)\n"
             "print(time.time(), time.monotonic() - t)\n")
    before = time.time()
    result = fake.run(31, [sys.executable, "-c", probe], timeout=20)
    assert result.returncode == 0, result.stderr
    wall, waited = map(float, result.stdout.split())
    assert abs(wall - before - 31 * DAY) < SLACK
    assert 0.09 < waited < 5


def test_daemon_serves_and_stops_days_ahead(fake: FakeTime, make_daemon: Any) -> None:
    """`bindguard serve` under libfaketime starts, serves a bind and exits 0 on SIGTERM within
    seconds; its audit events carry the shifted time."""
    started = time.monotonic()
    daemon = make_daemon(env=fake.env(31))
    good = whoami(daemon.uri, ALICE, DEMO_USERS["alice"], timeout=10)
    assert good.returncode == 0, good.stderr
    assert daemon.stop() == 0, daemon.log_text()
    assert time.monotonic() - started < 10
    (event,) = daemon.audit()
    assert event["event"] == "auth.success"
    assert_shifted(event, 31)


# -- password expiry --------------------------------------------------------------------------


def test_password_expires_after_the_configured_days(fake: FakeTime, make_daemon: Any,
                                                    slapd: Slapd) -> None:
    """password_expires_days = 30: alice binds now; at +31d the right password is refused with
    49 (ldapwhoami -e ppolicy says "Password expired"; without the control the answer is the
    plain wrong-password one), audited as auth.failure password_expired and not counted as a
    failure; a wrong password at +31d is a plain 49 and counts."""
    daemon = make_daemon(compliance="password_expires_days = 30")
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0

    mark = shift(daemon, fake, 31)
    expired = whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-e", "ppolicy")
    assert expired.returncode == 49
    assert "Invalid credentials (49)" in expired.stderr
    assert "Password expired" in expired.stderr
    assert events(daemon, mark) == [("auth.failure", ALICE, "password_expired")]
    assert_shifted(daemon.audit()[mark], 31)
    assert status(fake, 31, daemon, "alice")["failures"] == 0  # the right password: no failure

    plain = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    wrong = whoami(daemon.uri, ALICE, "wrong", "-e", "ppolicy")
    assert plain.returncode == wrong.returncode == 49
    assert wrong.stderr == "ldap_bind: Invalid credentials (49)\n"  # no "Password expired"
    assert plain.stderr == wrong.stderr  # without the control, expired looks like wrong
    assert events(daemon, mark)[-2:] == [("auth.failure", ALICE, "password_expired"),
                                         ("auth.failure", ALICE, "invalid_credentials")]
    assert status(fake, 31, daemon, "alice")["failures"] == 1  # the wrong password counted


def test_ignored_accounts_never_expire(fake: FakeTime, make_daemon: Any) -> None:
    """Accounts in password_expires_ignore_user_ids (by name or by DN) still bind at +31d, while
    alice, seen at the same time, has expired."""
    daemon = make_daemon(compliance=f"password_expires_days = 30\n"
                                    f"password_expires_ignore_user_ids = bob\n    {DAVE}\n")
    for uid in ("alice", "bob", "dave"):
        assert whoami(daemon.uri, user_dn(uid), DEMO_USERS[uid]).returncode == 0

    mark = shift(daemon, fake, 31)
    for uid in ("bob", "dave"):
        result = whoami(daemon.uri, user_dn(uid), DEMO_USERS[uid], "-e", "ppolicy")
        assert result.returncode == 0, result.stderr
        assert "Password expire" not in result.stderr
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 49
    assert events(daemon, mark) == [("auth.success", BOB, None), ("auth.success", DAVE, None),
                                    ("auth.failure", ALICE, "password_expired")]
    assert_shifted(daemon.audit()[mark], 31)


def test_no_expiry_on_rollout(fake: FakeTime, make_daemon: Any) -> None:
    """An account bindguard has never seen binds on the daemon's first day even with
    password_expires_days = 1 (the daemon first runs 400 days ahead, long after the password was
    set): expiry counts from first sight, so carol expires only a day after it."""
    daemon = make_daemon(compliance="password_expires_days = 1", env=fake.env(400))
    first = whoami(daemon.uri, CAROL, DEMO_USERS["carol"], "-e", "ppolicy")
    assert first.returncode == 0, first.stderr
    assert events(daemon) == [("auth.success", CAROL, None)]
    assert_shifted(daemon.audit()[0], 400)

    mark = shift(daemon, fake, 402)
    later = whoami(daemon.uri, CAROL, DEMO_USERS["carol"], "-e", "ppolicy")
    assert later.returncode == 49
    assert "Password expired" in later.stderr
    assert events(daemon, mark) == [("auth.failure", CAROL, "password_expired")]
    assert_shifted(daemon.audit()[mark], 402)


def test_expiry_warning_before_the_password_expires(fake: FakeTime, make_daemon: Any,
                                                    python_ldap: list[Any]) -> None:
    """expires_days = 30, warning 14: at +10d a bind carries no warning; at +20d it succeeds and
    the ppolicy response says the password expires in about 10 days ("Password expires in N
    seconds" from ldapwhoami, timeBeforeExpiration for python-ldap)."""
    daemon = make_daemon(compliance="password_expires_days = 30\n"
                                    "password_expiry_warning_days = 14")
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0
    first_seen = parse_ts(daemon.audit()[0]["ts"])

    mark = shift(daemon, fake, 10)
    early = whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-e", "ppolicy")
    assert early.returncode == 0, early.stderr
    assert "Password expires" not in early.stderr
    assert_shifted(daemon.audit()[mark], 10)

    mark = shift(daemon, fake, 20)
    warned = whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-e", "ppolicy")
    assert warned.returncode == 0, warned.stderr
    assert warned.stdout.strip() == f"dn:{ALICE}"
    found = re.search(r"Password expires in (\d+) seconds", warned.stderr)
    assert found, warned.stderr
    # first seen + 30 days, seen from (now + 20 days): 10 days less the seconds since then
    left = first_seen + 30 * DAY - (time.time() + 20 * DAY)
    assert 10 * DAY - SLACK < int(found.group(1)) <= 10 * DAY
    assert abs(int(found.group(1)) - left) < SLACK
    assert_shifted(daemon.audit()[mark], 20)

    _, _, _, controls = bind(daemon.uri, ALICE, DEMO_USERS["alice"], python_ldap)
    control = ppolicy_of(controls)
    assert control is not None and control.error is None
    assert 10 * DAY - SLACK < control.timeBeforeExpiration <= 10 * DAY
    assert events(daemon, mark) == [("auth.success", ALICE, None)] * 2


def test_expired_password_changed_without_binding(fake: FakeTime, make_daemon: Any,
                                                  slapd: Slapd, python_ldap: list[Any]) -> None:
    """At +31d alice's password has expired, yet `ldappasswd -a OLD -s NEW` on an unbound
    connection (Password Modify with userIdentity and oldPasswd) changes it; the new password
    then binds at +31d, through bindguard and at the directory, and the audit has
    password.changed."""
    daemon = make_daemon(compliance="password_expires_days = 30")
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0
    new = "Alice-new-pass-31"

    mark = shift(daemon, fake, 31)
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 49
    changed = subprocess.run(["ldappasswd", "-x", "-H", daemon.uri, "-a", DEMO_USERS["alice"],
                              "-s", new, ALICE], capture_output=True, text=True, timeout=30)
    assert changed.returncode == 0, changed.stdout + changed.stderr

    after = whoami(daemon.uri, ALICE, new, "-e", "ppolicy")
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == f"dn:{ALICE}"
    assert "Password expire" not in after.stderr  # a fresh password: 30 days again
    _, _, _, controls = bind(daemon.uri, ALICE, new, python_ldap)
    assert ppolicy_of(controls) is None
    direct = whoami(slapd.uri, ALICE, new)  # the directory itself has the new password
    assert direct.returncode == 0, direct.stderr
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 49

    got = events(daemon, mark)
    assert ("password.changed", ALICE, "self") in got
    assert got[0] == ("auth.failure", ALICE, "password_expired")
    assert got[-3:] == [("auth.success", ALICE, None), ("auth.success", ALICE, None),
                        ("auth.failure", ALICE, "invalid_credentials")]
    changed_event = next(e for e in daemon.audit()[mark:] if e["event"] == "password.changed")
    assert_shifted(changed_event, 31)
    report = status(fake, 31, daemon, "alice")
    assert report["password_expired"] is False
    assert abs(parse_ts(report["password_expires"]) - parse_ts(changed_event["ts"])
               - 30 * DAY) < 5


# -- inactivity -------------------------------------------------------------------------------


def test_inactive_account_is_disabled_until_enabled(fake: FakeTime, make_daemon: Any,
                                                    slapd: Slapd) -> None:
    """disable_user_account_days_inactive = 10: alice binds now; at +11d her right password is
    refused (49) without reaching the directory, account.disabled is audited once (inactivity)
    and each refusal as auth.failure disabled; status shows disabled; `bindguard enable` (at
    +11d) re-enables her and the next bind works."""
    daemon = make_daemon(compliance="disable_user_account_days_inactive = 10")
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0

    mark = shift(daemon, fake, 11)
    before = slapd.bind_count(ALICE)
    for _ in range(2):
        refused = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
        assert refused.returncode == 49
        assert "Invalid credentials (49)" in refused.stderr
    assert slapd.bind_count(ALICE) == before  # refused before the directory
    assert events(daemon, mark) == [("account.disabled", ALICE, "inactivity"),
                                    ("auth.failure", ALICE, "disabled"),
                                    ("auth.failure", ALICE, "disabled")]
    assert_shifted(daemon.audit()[mark], 11)

    report = status(fake, 11, daemon, "alice")
    assert report["disabled"] is True
    assert abs(parse_ts(report["disabled_since"]) - parse_ts(daemon.audit()[mark]["ts"])) < 5

    enabled = cli(fake, 11, daemon, "enable", "alice")
    assert enabled.returncode == 0, enabled.stderr
    assert "enabled" in enabled.stdout
    enable_event = daemon.audit()[-1]
    assert (enable_event["event"], enable_event["front"]) == ("account.enabled", "cli")
    assert_shifted(enable_event, 11)  # the CLI ran days ahead too
    assert status(fake, 11, daemon, "alice")["disabled"] is False

    good = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    assert good.returncode == 0, good.stderr
    assert slapd.bind_count(ALICE) == before + 1
    assert events(daemon, mark)[-2:] == [("account.enabled", ALICE, "admin"),
                                         ("auth.success", ALICE, None)]


def test_inactivity_counts_from_first_sight(fake: FakeTime, make_daemon: Any) -> None:
    """Turning disable_user_account_days_inactive on disables nobody at once: bob, never seen in
    the first run, binds fine at +11d (his count starts then) while alice, seen at day 0, is
    disabled."""
    daemon = make_daemon(compliance="disable_user_account_days_inactive = 10")
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0

    mark = shift(daemon, fake, 11)
    fresh = whoami(daemon.uri, BOB, DEMO_USERS["bob"])
    assert fresh.returncode == 0, fresh.stderr
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 49
    assert events(daemon, mark) == [("auth.success", BOB, None),
                                    ("account.disabled", ALICE, "inactivity"),
                                    ("auth.failure", ALICE, "disabled")]
    assert_shifted(daemon.audit()[mark], 11)
    report = status(fake, 11, daemon, "bob")
    assert report["disabled"] is False
    assert abs(days_ahead(report["first_seen"]) - 11) * DAY < SLACK


# -- status -----------------------------------------------------------------------------------


def test_status_reports_the_expired_password(fake: FakeTime, make_daemon: Any) -> None:
    """`bindguard status alice --json` at +31d: password_expired true, password_expires 30 days
    after bindguard first saw alice (her first bind, at the real time); at the real time the
    same password is not expired yet."""
    daemon = make_daemon(compliance="password_expires_days = 30")
    seen = time.time()
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0
    assert daemon.stop() == 0, daemon.log_text()

    now = status(fake, 0, daemon, "alice")
    assert now["known"] is True and now["password_expired"] is False
    report = status(fake, 31, daemon, "alice")
    assert report["known"] is True
    assert report["password_expired"] is True
    first_seen = parse_ts(report["first_seen"])
    assert abs(first_seen - seen) < SLACK
    assert abs(parse_ts(report["password_expires"]) - first_seen - 30 * DAY) < 1
    assert report["password_changed"] is None  # bindguard has seen no change: first sight counts
    assert report["disabled"] is False
