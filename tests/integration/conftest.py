"""Fixtures of real processes: a throwaway slapd and the real ``bindguard serve``."""
from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import Daemon

from proxy.demo.slapd import Slapd


@pytest.fixture
def slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A running throwaway slapd with the demo users."""
    server = Slapd(tmp_path / "slapd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_daemon(tmp_path: Path, slapd: Slapd) -> Iterator[Any]:
    """Start ``bindguard serve`` processes in front of the test slapd; stopped at teardown."""
    daemons: list[Daemon] = []

    def make(start: bool = True, upstream: str | None = None, **options: Any) -> Daemon:
        daemon = Daemon(tmp_path, upstream or slapd.uri, name=f"bindguard{len(daemons)}",
                        **options)
        daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    yield make
    for daemon in daemons:
        daemon.stop(signal.SIGKILL)


@pytest.fixture
def daemon(make_daemon: Any) -> Daemon:
    """One running daemon: 5 attempts, 600 s lock, 2 s upstream timeout."""
    return make_daemon()  # type: ignore[no-any-return]

