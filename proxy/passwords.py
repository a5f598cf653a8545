"""Password hashes for the history: argon2id (argon2-cffi). Every call is slow on purpose:
run it off the reactor thread."""
from __future__ import annotations

import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Hasher:
    """argon2id with argon2-cffi's defaults (RFC 9106 low-memory: t=3, m=64 MiB, p=4)."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()

    def hash(self, password: str) -> str:
        """A salted argon2id hash of ``password``."""
        return self._hasher.hash(password)

    def matches(self, hashed: str, password: str) -> bool:
        """Whether ``password`` is the one ``hashed`` was made from."""
        try:
            return self._hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False

    def __repr__(self) -> str:
        return "Hasher(argon2id)"


def same(a: str, b: str) -> bool:
    """Constant-time equality of two passwords."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
