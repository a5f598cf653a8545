"""Integration tests for the throwaway slapd used by the demo and the test suite."""

from __future__ import annotations

import subprocess

import pytest
from procs import whoami

from proxy.demo.slapd import DEMO_USERS, SERVICE_DN, Slapd, user_dn

pytestmark = pytest.mark.integration


def test_correct_password_binds_and_wrong_password_is_rejected(slapd: Slapd) -> None:
    """A demo user binds with its password (whoami prints its DN); a wrong one gets 49."""
    assert slapd.uri == f"ldap://127.0.0.1:{slapd.port}"
    ok = whoami(slapd.uri, user_dn("alice"), DEMO_USERS["alice"])
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"dn:{user_dn('alice')}"
    bad = whoami(slapd.uri, user_dn("alice"), "not-the-password")
    assert bad.returncode == 49, bad.stderr


def test_bind_count_counts_simple_binds_per_dn(slapd: Slapd) -> None:
    """bind_count sees both alice binds (good and bad), case-insensitively, and no others."""
    assert slapd.bind_count(user_dn("alice")) == 0
    whoami(slapd.uri, user_dn("alice"), DEMO_USERS["alice"])
    whoami(slapd.uri, user_dn("alice"), "wrong")
    whoami(slapd.uri, SERVICE_DN, "svc-app-pass")
    assert slapd.bind_count(user_dn("alice")) == 2
    assert slapd.bind_count("UID=Alice, OU=People,DC=example,DC=org") == 2
    assert slapd.bind_count(SERVICE_DN) == 1
    assert slapd.bind_count(user_dn("bob")) == 0
    assert slapd.bind_count() == 3
    assert 'BIND dn="uid=alice,' in slapd.log_text()


def test_restart_on_same_port_keeps_data(slapd: Slapd) -> None:
    """A password changed by its owner survives stop()+start() on the same port."""
    port = slapd.port
    changed = subprocess.run(
        ["ldappasswd", "-x", "-H", slapd.uri, "-D", user_dn("user29"), "-w", "pw-user29",
         "-s", "new-pass-29"],
        capture_output=True, text=True, timeout=10, check=False,
    )
    assert changed.returncode == 0, changed.stderr
    slapd.stop()
    slapd.stop()
    assert not slapd.running
    assert whoami(slapd.uri, user_dn("user29"), "new-pass-29").returncode != 0
    slapd.start()
    assert slapd.port == port
    res = whoami(slapd.uri, user_dn("user29"), "new-pass-29")
    assert res.returncode == 0, res.stderr
    assert whoami(slapd.uri, user_dn("user29"), "pw-user29").returncode == 49
    assert whoami(slapd.uri, user_dn("user00"), "pw-user00").returncode == 0
