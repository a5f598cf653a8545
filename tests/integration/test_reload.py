"""SIGHUP: the daemon reads its configuration again without dropping connections."""
from __future__ import annotations

from typing import Any

import ldap
import pytest
from procs import hup, whoami

from proxy.demo.slapd import DEMO_USERS, PEOPLE, user_dn

pytestmark = pytest.mark.integration




def test_a_new_lockout_threshold_takes_effect_on_sighup(make_daemon: Any) -> None:
    """lockout_failure_attempts 5 → 2 by SIGHUP: the next failure locks; a connection opened
    before the reload keeps working after it."""
    daemon = make_daemon(attempts=5)
    conn = ldap.initialize(daemon.uri)
    conn.simple_bind_s(user_dn("carol"), DEMO_USERS["carol"])
    for _ in range(2):
        assert whoami(daemon.uri, user_dn("bob"), "wrong").returncode == 49
    assert daemon.status("bob")["locked"] is False
    daemon.config.write_text(daemon.config.read_text().replace(
        "lockout_failure_attempts = 5", "lockout_failure_attempts = 2"))
    hup(daemon, "configuration reloaded")
    assert whoami(daemon.uri, user_dn("bob"), "wrong").returncode == 49
    assert daemon.status("bob")["locked"] is True
    assert conn.search_s(PEOPLE, ldap.SCOPE_ONELEVEL, "(uid=alice)", ["uid"])
    conn.unbind_s()


def test_a_broken_config_keeps_the_old_one(make_daemon: Any) -> None:
    """A reload of an invalid file is refused, its problems are logged as section.key lines,
    and the running rules stay: the old threshold still locks."""
    daemon = make_daemon(attempts=2)
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace("lockout_failure_attempts = 2",
                                          "lockout_failure_attempts = many"))
    hup(daemon, "reload refused")
    assert "security_compliance.lockout_failure_attempts" in daemon.log_text()
    daemon.config.write_text(good)  # for the CLI below; the daemon never took the broken one
    for _ in range(2):
        whoami(daemon.uri, user_dn("dave"), "wrong")
    assert daemon.status("dave")["locked"] is True
    assert whoami(daemon.uri, user_dn("alice"), DEMO_USERS["alice"]).returncode == 0


def test_what_is_bound_at_start_waits_for_a_restart(make_daemon: Any) -> None:
    """A changed listener or state file is reported and kept until a restart; the rest of the
    new file applies."""
    daemon = make_daemon(attempts=5)
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace("audit_log = ", "audit_log = /tmp/elsewhere-")
                             .replace("lockout_failure_attempts = 5",
                                      "lockout_failure_attempts = 1"))
    hup(daemon, "configuration reloaded")
    assert "[proxy] audit_log changed; it takes effect at the next restart" in daemon.log_text()
    assert whoami(daemon.uri, user_dn("bob"), "wrong").returncode == 49
    assert daemon.status("bob")["locked"] is True
    assert [e["event"] for e in daemon.audit()][-2:] == ["auth.failure", "account.locked"]
