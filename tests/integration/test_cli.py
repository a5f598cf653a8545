"""The CLI against a running daemon and a real directory."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from procs import Daemon, whoami

from proxy.demo.slapd import ADMIN_DN, ADMIN_PASSWORD, DEMO_USERS, PEOPLE, Slapd, user_dn

pytestmark = pytest.mark.integration


def test_names_map_to_dns_by_directory_search(make_daemon: Any, slapd: Slapd,
                                              tmp_path: Path) -> None:
    """With search_base instead of a template, `status NAME` finds the DN by searching the
    directory with the configured service account."""
    daemon: Daemon = make_daemon(attempts=2)
    password_file = tmp_path / "search.password"
    password_file.write_text(ADMIN_PASSWORD + "\n")
    text = daemon.config.read_text().replace(
        "user_dn_template = uid={user},ou=people,dc=example,dc=org",
        f"search_base = {PEOPLE}\nsearch_filter = (uid={{user}})\nbind_dn = {ADMIN_DN}\n"
        f"bind_password_file = {password_file}")
    daemon.config.write_text(text)
    for _ in range(2):
        whoami(daemon.uri, user_dn("carol"), "wrong")
    status = daemon.status("carol")
    assert status["user"] == user_dn("carol") and status["locked"] is True
    missing = daemon.cli("status", "nobody-here")
    assert missing.returncode == 1
    assert "found 0 entries" in missing.stderr


def test_status_reports_failures_and_last_success(daemon: Daemon) -> None:
    """`bindguard status` shows the failure count, then the last success after a good bind."""
    whoami(daemon.uri, user_dn("dave"), "wrong")
    assert daemon.status("dave")["failures"] == 1
    assert whoami(daemon.uri, user_dn("dave"), DEMO_USERS["dave"]).returncode == 0
    status = daemon.status(user_dn("dave"))
    assert status["failures"] == 0 and status["last_success"] is not None
    human = daemon.cli("status", "dave")
    assert human.returncode == 0 and "last success:" in human.stdout
