"""Several directories: one that does not answer is marked down, so it slows one login, not
every login."""
from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
from procs import whoami

from proxy.demo.slapd import DEMO_USERS, Slapd, user_dn

pytestmark = pytest.mark.integration


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A directory address whose connects hang: a listener with a full, never-accepted
    backlog, so the kernel drops further SYNs (like a dead host)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):  # fill the accept queue; later connects get no SYN-ACK
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield f"ldap://127.0.0.1:{port}"
    for sock in fillers + [listener]:
        sock.close()


def login_seconds(uri: str, count: int) -> list[float]:
    took = []
    for i in range(count):
        user = f"user{i % 30:02d}"
        started = time.monotonic()
        result = whoami(uri, user_dn(user), DEMO_USERS[user])
        took.append(time.monotonic() - started)
        assert result.returncode == 0, result.stderr
    return took


def test_a_dead_first_directory_costs_one_timeout(make_daemon: Any, slapd: Slapd,
                                                  blackhole: str) -> None:
    """With a first directory that never answers, the first login waits upstream_timeout and
    fails over; the dead one is then marked down and the next logins go straight to the
    second directory."""
    daemon = make_daemon(upstream=f"{blackhole} {slapd.uri}", timeout=1.0)
    first = login_seconds(daemon.uri, 1)[0]
    assert 0.9 <= first < 3.0, first
    after = login_seconds(daemon.uri, 20)
    p50 = statistics.median(after)
    print(f"\nfailover: first login {first * 1e3:.0f} ms, next 20 logins p50 "
          f"{p50 * 1e3:.1f} ms, max {max(after) * 1e3:.1f} ms")
    assert max(after) < 0.9  # none waited for the dead directory again
    assert "marked down" in daemon.log_text()


def test_failover_when_the_first_directory_stops(make_daemon: Any, slapd: Slapd,
                                                 tmp_path: Any) -> None:
    """Two real directories: stopping the first moves logins to the second at once (its
    connections are refused), and they keep working."""
    second = Slapd(tmp_path / "slapd-second")
    second.start()
    try:
        daemon = make_daemon(upstream=f"{slapd.uri} {second.uri}")
        login_seconds(daemon.uri, 3)
        before = second.bind_count()
        slapd.stop()
        after = login_seconds(daemon.uri, 10)
        print(f"\nfirst directory stopped: next 10 logins p50 "
              f"{statistics.median(after) * 1e3:.1f} ms, max {max(after) * 1e3:.1f} ms")
        assert second.bind_count() - before == 10
    finally:
        second.stop()
