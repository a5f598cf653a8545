"""The real daemon in front of a real slapd, driven by real LDAP clients."""
from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ldap
import pytest
from procs import BINDGUARD, Daemon, whoami

from proxy.demo.slapd import DEMO_USERS, PEOPLE, Slapd, free_port, user_dn

pytestmark = pytest.mark.integration

ALICE, BOB = user_dn("alice"), user_dn("bob")


def test_right_and_wrong_password(daemon: Daemon, slapd: Slapd) -> None:
    """ldapwhoami through the proxy: the right password binds, a wrong one gets 49."""
    good = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == f"dn:{ALICE}"
    bad = whoami(daemon.uri, ALICE, "wrong")
    assert bad.returncode == 49
    assert "Invalid credentials (49)" in bad.stderr
    assert [(e["event"], e.get("reason")) for e in daemon.audit()] == [
        ("auth.success", None), ("auth.failure", "invalid_credentials")]


def test_paged_search_passes_through(daemon: Daemon) -> None:
    """ldapsearch with the paged-results control returns every entry, page by page."""
    result = subprocess.run(
        ["ldapsearch", "-x", "-LLL", "-H", daemon.uri, "-D", ALICE, "-w", DEMO_USERS["alice"],
         "-b", PEOPLE, "-E", "pr=4/noprompt", "(objectClass=inetOrgPerson)", "uid"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    uids = {line.split(": ")[1] for line in result.stdout.splitlines()
            if line.startswith("uid: ")}
    assert uids == set(DEMO_USERS)


def test_lockout_and_unlock_with_the_cli(make_daemon: Any, slapd: Slapd) -> None:
    """Three wrong binds lock bob; the right password is then refused without reaching slapd
    until `bindguard unlock`."""
    daemon = make_daemon(attempts=3)
    for _ in range(3):
        assert whoami(daemon.uri, BOB, "wrong").returncode == 49
    before = slapd.bind_count(BOB)
    refused = whoami(daemon.uri, BOB, DEMO_USERS["bob"])
    assert refused.returncode == 49
    assert slapd.bind_count(BOB) == before  # the locked attempt never reached the directory
    status = daemon.status("bob")
    assert status["locked"] is True and status["locked_until"] is not None
    unlocked = daemon.cli("unlock", "bob")
    assert unlocked.returncode == 0, unlocked.stderr
    assert whoami(daemon.uri, BOB, DEMO_USERS["bob"]).returncode == 0
    events = [e["event"] for e in daemon.audit()]
    assert events == ["auth.failure"] * 3 + ["account.locked", "auth.failure",
                                             "account.unlocked", "auth.success"]


def test_ppolicy_control_reports_the_lock(make_daemon: Any) -> None:
    """`ldapwhoami -e ppolicy` on a locked account prints "Account locked"; without the control
    the refusal is the plain wrong-password answer."""
    daemon = make_daemon(attempts=2)
    for _ in range(2):
        whoami(daemon.uri, BOB, "wrong")
    with_control = whoami(daemon.uri, BOB, DEMO_USERS["bob"], "-e", "ppolicy")
    assert with_control.returncode == 49
    assert "Account locked" in with_control.stderr
    plain = whoami(daemon.uri, BOB, DEMO_USERS["bob"])
    wrong = whoami(daemon.uri, user_dn("carol"), "wrong")
    assert plain.stderr == wrong.stderr  # a lock looks exactly like a wrong password


def _wrong_bind(uri: str, dn: str) -> int:
    conn = ldap.initialize(uri)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 20)
    try:
        conn.simple_bind_s(dn, "wrong")
    except ldap.INVALID_CREDENTIALS:
        return 49
    except ldap.LDAPError as exc:
        return exc.args[0].get("result", -1) if exc.args and isinstance(exc.args[0], dict) else -1
    finally:
        conn.unbind_s()
    return 0


def _burst(uris: list[str], dn: str, count: int) -> list[int]:
    """``count`` simultaneous wrong binds spread over ``uris``, released by one barrier."""
    barrier = threading.Barrier(count)

    def one(i: int) -> int:
        barrier.wait()
        return _wrong_bind(uris[i % len(uris)], dn)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_concurrent_wrong_binds_stop_at_the_threshold(daemon: Daemon, slapd: Slapd) -> None:
    """100 simultaneous wrong binds with lockout_failure_attempts = 5: at most 5 reach slapd."""
    dn = user_dn("user01")
    results = _burst([daemon.uri], dn, 100)
    assert set(results) == {49}
    assert 1 <= slapd.bind_count(dn) <= 5
    assert daemon.status(dn)["locked"] is True


def test_concurrent_wrong_binds_across_two_daemons(make_daemon: Any, slapd: Slapd) -> None:
    """Two bindguard processes sharing one state file still let at most 5 attempts through."""
    first = make_daemon()
    second = make_daemon(state=first.state)
    dn = user_dn("user02")
    results = _burst([first.uri, second.uri], dn, 100)
    assert set(results) == {49}
    assert 1 <= slapd.bind_count(dn) <= 5
    assert first.status(dn)["locked"] is True


def test_kill_9_loses_no_failure(make_daemon: Any, slapd: Slapd) -> None:
    """Failures counted before a kill -9 are still there after a restart; so is a lock."""
    daemon = make_daemon(attempts=3)
    for _ in range(2):
        assert whoami(daemon.uri, BOB, "wrong").returncode == 49
    daemon.stop(signal.SIGKILL)
    daemon.start()
    assert daemon.status("bob")["failures"] == 2
    assert whoami(daemon.uri, BOB, "wrong").returncode == 49
    daemon.stop(signal.SIGKILL)
    daemon.start()
    before = slapd.bind_count(BOB)
    assert whoami(daemon.uri, BOB, DEMO_USERS["bob"]).returncode == 49
    assert slapd.bind_count(BOB) == before
    assert daemon.status("bob")["locked"] is True


def test_directory_down_gives_52_then_recovers(daemon: Daemon, slapd: Slapd) -> None:
    """With slapd stopped a bind gets 52 at once; after slapd restarts binds work again."""
    slapd.stop()
    started = time.monotonic()
    down = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    assert down.returncode == 52, down.stderr
    assert time.monotonic() - started < 2.0
    assert daemon.status("alice")["failures"] == 0
    slapd.start()
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0


def test_silent_directory_gives_52_within_the_timeout(make_daemon: Any) -> None:
    """A directory that accepts connections but never answers gives 52 after upstream_timeout
    (2 s), not a hang; the attempt counts as no failure."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(50)
    try:
        daemon = make_daemon(upstream=f"ldap://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        result = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.returncode == 52, result.stderr
    assert 1.9 <= elapsed < 4.0
    assert daemon.audit()[-1]["reason"] == "directory_unavailable"


def test_failover_to_the_second_directory(make_daemon: Any, slapd: Slapd) -> None:
    """With the first upstream down, binds go to the next one in the list."""
    dead = f"ldap://127.0.0.1:{free_port()}"
    daemon = make_daemon(upstream=f"{dead} {slapd.uri}")
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0


def test_garbage_does_not_hurt_the_daemon(daemon: Daemon) -> None:
    """Garbage, an oversized PDU and a half PDU on some connections; others still bind."""
    for payload in (b"\x00" * 64, b"GET / HTTP/1.0\r\n\r\n", b"\x30\x84\xff\xff\xff\xff",
                    b"\x30\x05\x02\x01"):
        with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
            sock.sendall(payload)
            if payload != b"\x30\x05\x02\x01":
                sock.settimeout(5)
                assert sock.recv(4096)[:1] in (b"\x30", b"")  # a notice, then the close
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0
    assert daemon.process is not None and daemon.process.poll() is None


def test_sigterm_stops_cleanly(daemon: Daemon) -> None:
    """SIGTERM ends `bindguard serve` with exit code 0 well within 10 seconds."""
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10


def test_invalid_config_exits_2_with_reasons(tmp_path: Path) -> None:
    """`bindguard serve` on a bad config exits 2 printing the same lines as check-config."""
    config = tmp_path / "bad.ini"
    config.write_text("[proxy]\nupstream = ldap://127.0.0.1:1\nupstream_timeout = soon\n"
                      "[security_compliance]\nlockout_failure_attempts = 0\nbogus = 1\n")
    serve = subprocess.run([BINDGUARD, "serve", "-c", str(config)], capture_output=True,
                           text=True, timeout=30)
    check = subprocess.run([BINDGUARD, "check-config", "-c", str(config)], capture_output=True,
                           text=True, timeout=30)
    assert serve.returncode == check.returncode == 2
    assert serve.stderr == check.stderr
    assert set(serve.stderr.splitlines()) == {
        "proxy.upstream_timeout: a number expected, got 'soon'",
        "security_compliance.lockout_failure_attempts: must be at least 1, got 0",
        "security_compliance.bogus: unknown option",
    }


def test_no_password_in_logs_or_audit(make_daemon: Any) -> None:
    """Neither the audit log nor the daemon's log ever holds a password that was tried."""
    daemon = make_daemon(attempts=2)
    secret_wrong = "Wr0ng-Secret-XYZ"
    whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    for _ in range(3):
        whoami(daemon.uri, ALICE, secret_wrong)
    daemon.stop()
    for text in (daemon.audit_path.read_text(), daemon.log_text()):
        assert DEMO_USERS["alice"] not in text and secret_wrong not in text
    auth_events = [e for e in daemon.audit() if e["event"].startswith("auth.")]
    assert len(auth_events) == 4  # exactly one per authentication
