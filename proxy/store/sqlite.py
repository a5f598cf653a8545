"""The embedded store: one SQLite file in WAL mode, shareable by several processes on one host."""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from proxy.policy.account import AccountState
from proxy.store import Change

# Each entry migrates the schema from version i to i + 1 (PRAGMA user_version).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE account (
        dn TEXT PRIMARY KEY,            -- canonical DN (proxy.identity.canonical_dn)
        failures TEXT NOT NULL,         -- times of counted failures, space-separated
        pending TEXT NOT NULL,          -- lease expiry of attempts in flight
        locked_at REAL,                 -- seconds since the epoch, UTC
        last_success_at REAL,
        first_seen_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2: password lifecycle and inactivity (history: argon2id hashes, newest first)
    """
    ALTER TABLE account ADD COLUMN enabled_at REAL;
    ALTER TABLE account ADD COLUMN disabled_at REAL;
    ALTER TABLE account ADD COLUMN password_changed_at REAL;
    ALTER TABLE account ADD COLUMN password_changed_by TEXT;
    ALTER TABLE account ADD COLUMN directory_changed_at REAL;
    ALTER TABLE account ADD COLUMN must_change TEXT;
    ALTER TABLE account ADD COLUMN history TEXT NOT NULL DEFAULT ''
    """,
    # 3: the TOTP second factor (secret sealed with the key file; backup codes: argon2id hashes)
    """
    ALTER TABLE account ADD COLUMN otp_secret TEXT;
    ALTER TABLE account ADD COLUMN otp_last_step INTEGER;
    ALTER TABLE account ADD COLUMN otp_backup TEXT NOT NULL DEFAULT '';
    ALTER TABLE account ADD COLUMN otp_enrolled_at REAL
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = ("failures, pending, locked_at, last_success_at, first_seen_at, enabled_at, "
            "disabled_at, password_changed_at, password_changed_by, directory_changed_at, "
            "must_change, history, otp_secret, otp_last_step, otp_backup, otp_enrolled_at")
_PLACES = ", ".join("?" * (1 + _COLUMNS.count(",") + 1))


class SqliteStore:
    """Account state in SQLite. Every call blocks: run it off the reactor thread."""

    def __init__(self, path: str, busy_timeout: float = 10.0) -> None:
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # The state file holds lock decisions of every user: readable by its owner only.
        old_umask = os.umask(0o077)
        try:
            self._db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None,
                                       check_same_thread=False)
        finally:
            os.umask(old_umask)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL with synchronous=NORMAL: a commit is in the OS before apply() returns, so a killed
        # process loses nothing; only a power cut can lose the last transactions.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise RuntimeError(f"{self.path}: schema version {version} is newer than "
                                       f"this bindguard ({SCHEMA_VERSION}); upgrade bindguard")
                for step in MIGRATIONS[version:]:
                    for statement in step.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def apply(self, changes: list[tuple[str, Change[Any]]]) -> list[Any]:
        """Apply each (dn, change) in order inside one IMMEDIATE transaction."""
        results = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for dn, change in changes:
                    before = self._read(dn)
                    after, result = change(before or AccountState())
                    if after != (before or AccountState()):  # reads write nothing
                        self._write(dn, after)
                    results.append(result)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return results

    def get(self, dn: str) -> AccountState | None:
        """The stored state of ``dn``."""
        with self._lock:
            return self._read(dn)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _read(self, dn: str) -> AccountState | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM account WHERE dn = ?", (dn,)).fetchone()
        if row is None:
            return None
        return AccountState(failures=_times(row[0]), pending=_times(row[1]), locked_at=row[2],
                            last_success_at=row[3], first_seen_at=row[4], enabled_at=row[5],
                            disabled_at=row[6], password_changed_at=row[7],
                            password_changed_by=row[8], directory_changed_at=row[9],
                            must_change=row[10], history=tuple(row[11].split()),
                            otp_secret=row[12], otp_last_step=row[13],
                            otp_backup=tuple(row[14].split()), otp_enrolled_at=row[15])

    def _write(self, dn: str, state: AccountState) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO account (dn, {_COLUMNS}) VALUES ({_PLACES})",
            (dn, _text(state.failures), _text(state.pending), state.locked_at,
             state.last_success_at, state.first_seen_at, state.enabled_at, state.disabled_at,
             state.password_changed_at, state.password_changed_by, state.directory_changed_at,
             state.must_change, " ".join(state.history), state.otp_secret, state.otp_last_step,
             " ".join(state.otp_backup), state.otp_enrolled_at))


def _times(text: str) -> tuple[float, ...]:
    return tuple(float(t) for t in text.split())


def _text(times: tuple[float, ...]) -> str:
    return " ".join(repr(t) for t in times)
