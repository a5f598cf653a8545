"""Fixtures for the protocol tier: LDAP sessions on fake transports with a task.Clock."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from harness import CONFIG, T0, FakeDirectory, Harness
from twisted.internet import task
from twisted.internet.defer import maybeDeferred

from proxy.audit import AuditLog
from proxy.config import parse_config
from proxy.ldap.session import LdapFrontFactory
from proxy.passwords import Hasher
from proxy.sealed import SecretBox
from proxy.service import AuthService
from proxy.store.sqlite import SqliteStore
from proxy.store.worker import ImmediateRunner


@pytest.fixture
def make_harness(tmp_path: Path) -> Any:
    """Build a Harness; keyword ``extra`` adds [proxy] lines, ``compliance`` adds
    [security_compliance] lines, ``box`` opens TOTP secrets (a SecretBox; default: none).
    Hashing (argon2, cheap parameters) runs synchronously."""
    stores: list[SqliteStore] = []

    def make(extra: str = "", compliance: str = "", box: SecretBox | None = None) -> Harness:
        audit_path = tmp_path / "audit.jsonl"
        config = parse_config(CONFIG.format(state=tmp_path / "state.sqlite", audit=audit_path,
                                            extra=extra) + compliance)
        clock = task.Clock()
        clock.advance(T0)
        store = SqliteStore(config.proxy.state)
        stores.append(store)
        directory = FakeDirectory()
        service = AuthService(config, ImmediateRunner(store),
                              AuditLog(str(audit_path), clock.seconds), clock,
                              offload=lambda f, *a: maybeDeferred(f, *a),
                              hasher=Hasher(PasswordHasher(time_cost=1, memory_cost=8,
                                                           parallelism=1)),
                              box=box)
        factory = LdapFrontFactory(service, config.proxy, clock, directory.connect)
        return Harness(clock, directory, factory, store, audit_path, box, config)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def harness(make_harness: Any) -> Harness:
    """The default Harness: lockout after 3 failures for 600 s, 5 s upstream timeout."""
    return make_harness()
