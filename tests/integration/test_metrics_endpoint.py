"""The real daemon's Prometheus endpoint (``[proxy] metrics``), scraped over HTTP after known
traffic from real clients: ldapwhoami binds, garbage on a socket, PAM requests on the socket."""
from __future__ import annotations

import json
import os
import socket
import struct
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from procs import Daemon, wait_for_port, whoami
from prometheus_client.parser import text_string_to_metric_families

from proxy.demo.slapd import DEMO_USERS, Slapd, free_port, user_dn

pytestmark = pytest.mark.integration

ALICE, BOB = user_dn("alice"), user_dn("bob")
AUTH = "bindguard_authentications_total"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """GET /metrics; every sample by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def eventually(port: int, check: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    """Scrape until ``check`` holds (a closed connection is seen a moment after the client's
    exit); return the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def metrics_daemon(make_daemon: Any, **options: Any) -> tuple[Daemon, int]:
    """A daemon serving metrics on a free port of 127.0.0.1, once that port answers."""
    port = free_port()
    daemon = make_daemon(proxy=f"metrics = tcp:{port}:interface=127.0.0.1\n", **options)
    try:
        wait_for_port(port)
    except TimeoutError:
        pytest.fail(f"no metrics endpoint on port {port}:\n{daemon.log_text()}")
    return daemon, port


def test_ldap_traffic_is_counted(make_daemon: Any, slapd: Slapd) -> None:
    """Two right binds, three wrong ones (attempts = 3: a lock), a bind refused by the lock and
    a garbage PDU show up as exactly those counts; the directory is up, with one latency per
    bind it answered; no connection stays open."""
    daemon, port = metrics_daemon(make_daemon, attempts=3)
    for _ in range(2):
        assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0
    for _ in range(3):
        assert whoami(daemon.uri, BOB, "wrong").returncode == 49
    assert whoami(daemon.uri, BOB, DEMO_USERS["bob"]).returncode == 49  # locked
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
        sock.sendall(b"\x00" * 64)
        sock.settimeout(5)
        assert sock.recv(4096)[:1] in (b"\x30", b"")  # a notice of disconnection, the close

    samples = eventually(port, lambda s: sample(
        s, "bindguard_connections_open", front="ldap") == 0)
    assert sample(samples, AUTH, front="ldap", outcome="success", reason="none") == 2
    assert sample(samples, AUTH, front="ldap", outcome="failure",
                  reason="invalid_credentials") == 3
    assert sample(samples, AUTH, front="ldap", outcome="failure", reason="locked") == 1
    assert sum(v for (name, _), v in samples.items() if name == AUTH) == 6
    assert sample(samples, "bindguard_lockouts_total") == 1
    assert sample(samples, "bindguard_accounts_locked") == 1
    assert sample(samples, "bindguard_pdus_malformed_total", front="ldap") == 1
    assert sample(samples, "bindguard_connections_open", front="ldap") == 0
    assert sample(samples, "bindguard_upstream_up", uri=slapd.uri) == 1
    # Five binds reached slapd (the locked one did not); each answer is one observation.
    answered = sample(samples, "bindguard_upstream_seconds_count", uri=slapd.uri)
    assert answered is not None and answered >= 5
    assert sample(samples, "bindguard_upstream_seconds_bucket", uri=slapd.uri,
                  le="5.0") == answered  # within upstream_timeout

    assert daemon.cli("unlock", "bob").returncode == 0
    after = scrape(port)
    assert sample(after, "bindguard_accounts_locked") == 0  # computed at each scrape
    assert sample(after, "bindguard_lockouts_total") == 1  # a count of events: it stays


def test_unreachable_directory_is_down(make_daemon: Any, slapd: Slapd) -> None:
    """With the first upstream refusing connections, it is reported down and the next up."""
    dead = f"ldap://127.0.0.1:{free_port()}"
    daemon, port = metrics_daemon(make_daemon, upstream=f"{dead} {slapd.uri}")
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0
    samples = scrape(port)
    assert sample(samples, "bindguard_upstream_up", uri=dead) == 0
    assert sample(samples, "bindguard_upstream_up", uri=slapd.uri) == 1


# -- the PAM front ----------------------------------------------------------------------------


def pam_ask(daemon: Daemon, request: dict[str, Any] | bytes) -> dict[str, Any]:
    """One request on the daemon's PAM socket (as root), its reply."""
    body = request if isinstance(request, bytes) else json.dumps(
        {"version": 1, **request}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.pam_socket))
        sock.sendall(struct.pack(">I", len(body)) + body)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data[4:]) if len(data) > 4 else {}  # type: ignore[no-any-return]


def wait_for_pam_socket(daemon: Daemon, timeout: float = 10.0) -> None:
    """Block until the daemon's PAM socket exists (it is served alongside the LDAP port)."""
    deadline = time.monotonic() + timeout
    while not daemon.pam_socket.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"no PAM socket at {daemon.pam_socket}:\n{daemon.log_text()}")
        time.sleep(0.02)


@pytest.mark.skipif(os.geteuid() != 0, reason="the PAM socket serves root only")
def test_pam_traffic_is_counted(make_daemon: Any, slapd: Slapd) -> None:
    """PAM authentications count under front="pam", with the same reasons as LDAP binds; a
    frame that is not JSON counts as malformed."""
    daemon, port = metrics_daemon(make_daemon)
    wait_for_pam_socket(daemon)
    right = {"type": "authenticate", "user": "alice", "password": DEMO_USERS["alice"],
             "service": "sshd"}
    assert pam_ask(daemon, right)["result"] == "success"
    assert pam_ask(daemon, {**right, "password": "wrong"})["result"] == "denied"
    assert pam_ask(daemon, b"not json")["result"] == "error"
    samples = eventually(port, lambda s: sample(
        s, "bindguard_connections_open", front="pam") == 0)
    assert sample(samples, AUTH, front="pam", outcome="success", reason="none") == 1
    assert sample(samples, AUTH, front="pam", outcome="failure",
                  reason="invalid_credentials") == 1
    assert sample(samples, AUTH, front="ldap", outcome="success", reason="none") == 0
    assert sample(samples, "bindguard_pdus_malformed_total", front="pam") == 1
    assert sample(samples, "bindguard_connections_open", front="pam") == 0

