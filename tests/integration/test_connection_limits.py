"""Connection limits and timeouts against the real daemon: many idle connections and a slowloris
client do not keep a normal login out."""
from __future__ import annotations

import resource
import socket
import time
from typing import Any

import pytest
from procs import whoami

from proxy.demo.slapd import DEMO_USERS, user_dn

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> None:
    """500 client sockets here and 500 in the daemon need more than a default 1024 limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))


def test_idle_connections_and_slowloris_do_not_block_a_login(make_daemon: Any) -> None:
    """500 idle connections and a client dribbling a request byte by byte: a normal bind
    still succeeds at once, and the slow client is cut off after pdu_timeout."""
    daemon = make_daemon(proxy="pdu_timeout = 2\nidle_timeout = 60\n")
    idle = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(500)]
    slow = socket.create_connection(("127.0.0.1", daemon.port))
    slow.sendall(b"\x30\x0c\x02")  # the start of a request, never finished
    try:
        started = time.monotonic()
        result = whoami(daemon.uri, user_dn("alice"), DEMO_USERS["alice"])
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert took < 2.0, f"a login took {took:.2f} s behind 500 idle connections"
        slow.settimeout(5)
        notice = slow.recv(4096)  # the Notice of Disconnection, then the close
        assert notice.startswith(b"\x30") and b"1.3.6.1.4.1.1466.20036" in notice
        assert slow.recv(4096) == b""
    finally:
        for sock in idle + [slow]:
            sock.close()


def test_per_address_limit_refuses_the_next_connection(make_daemon: Any) -> None:
    """Over max_connections_per_source the daemon closes a new connection at once; once one
    closes, a login works again."""
    daemon = make_daemon(proxy="max_connections_per_source = 3\n")
    time.sleep(0.3)  # the start-up probe's connection is gone
    held = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(3)]
    try:
        time.sleep(0.2)  # let the daemon accept them
        refused = whoami(daemon.uri, user_dn("alice"), DEMO_USERS["alice"], timeout=10)
        assert refused.returncode != 0
        held.pop().close()
        time.sleep(0.2)
        assert whoami(daemon.uri, user_dn("alice"), DEMO_USERS["alice"]).returncode == 0
    finally:
        for sock in held:
            sock.close()
    assert "per-address limit" in daemon.log_text()
