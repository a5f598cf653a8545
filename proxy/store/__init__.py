"""Account state behind one small interface (SQLite embedded; PostgreSQL can implement it)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from proxy.policy.account import AccountState

T = TypeVar("T")

# A change computes the new state of one account from its current one, plus a result for the
# caller. It must be pure: the store may call it inside a transaction it retries.
Change = Callable[[AccountState], "tuple[AccountState, T]"]


class Store(Protocol):
    """Durable, shared account state keyed by canonical DN."""

    def apply(self, changes: list[tuple[str, Change[T]]]) -> list[T]:
        """Apply each (dn, change) atomically, in order, in one transaction; return the results.

        Atomic means: between reading an account and writing its new state no other process
        or thread can change it (SQLite: BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR UPDATE).
        """
        ...

    def get(self, dn: str) -> AccountState | None:
        """The stored state of ``dn``, or None if bindguard has never seen it."""
        ...

    def close(self) -> None:
        """Release the database."""
        ...


def open_store(location: str) -> Store:
    """Open the store named by ``[proxy] state`` (a file path: SQLite)."""
    if location.startswith(("postgresql://", "postgres://")):
        raise ValueError("PostgreSQL state is not implemented in this release")
    from proxy.store.sqlite import SqliteStore

    return SqliteStore(location)
