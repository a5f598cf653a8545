"""Which directories a session tries, and in what order, as failures come and go."""
from __future__ import annotations

import pytest
from twisted.internet import task

from proxy.config import Upstream
from proxy.ldap.upstream import UpstreamHealth

A = Upstream("ldap://a", "a", 389, False)
B = Upstream("ldap://b", "b", 389, False)


def health(jitter: float = 0.5) -> tuple[UpstreamHealth, task.Clock]:
    clock = task.Clock()
    return UpstreamHealth((A, B), clock, jitter=lambda: jitter), clock


def test_all_up_in_configured_order() -> None:
    """With nothing down, directories are tried in the configured order."""
    assert health()[0].order() == (A, B)


def test_a_failed_directory_is_skipped_until_its_next_check() -> None:
    """After a failure the directory is skipped for the back-off (1 s, jitter ±20 %), then
    tried again first; a success marks it up for good."""
    h, clock = health(jitter=0.5)  # 0.8 + 0.4 * 0.5 = exactly the back-off
    h.failed(A.uri)
    assert h.order() == (B,)
    clock.advance(0.99)
    assert h.order() == (B,)
    clock.advance(0.02)
    assert h.order() == (A, B)
    h.succeeded(A.uri)
    h.failed(B.uri)
    assert h.order() == (A,)


def test_back_off_doubles_up_to_a_minute_with_jitter() -> None:
    """Each further failure doubles the wait, capped at 60 s; jitter spreads it by ±20 %."""
    waits = []
    for jitter in (0.0, 1.0):
        h, clock = health(jitter=jitter)
        for _ in range(9):
            h.failed(A.uri)
        waits.append(h.next_check[A.uri] - clock.seconds())
    assert waits == pytest.approx([48.0, 72.0])
    h, clock = health()
    h.failed(A.uri)
    h.failed(A.uri)
    assert h.next_check[A.uri] == 2.0


def test_every_directory_down_means_try_them_all() -> None:
    """When all are marked down, all are tried in order: a login is never refused unasked."""
    h, _ = health()
    h.failed(A.uri)
    h.failed(B.uri)
    assert h.order() == (A, B)


def test_listeners_hear_of_changes_only() -> None:
    """Listeners (metrics) hear when a directory goes down and when it comes back, once."""
    h, _ = health()
    heard: list[tuple[str, bool]] = []
    h.listeners.append(lambda uri, up: heard.append((uri, up)))
    h.failed(A.uri)
    h.failed(A.uri)
    h.succeeded(A.uri)
    h.succeeded(A.uri)
    assert heard == [(A.uri, False), (A.uri, True)]
