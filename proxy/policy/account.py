"""What bindguard knows about one account: the state every policy reads and changes."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AccountState:
    """One account's state. Times are seconds since the epoch, UTC; None means never/unknown."""

    # lockout
    failures: tuple[float, ...] = ()  # times of the failures that still count, oldest first
    pending: tuple[float, ...] = ()  # lease expiry of each attempt in flight
    locked_at: float | None = None  # when the current lock began
    # activity
    last_success_at: float | None = None  # recorded at most once per COALESCE_SECONDS
    first_seen_at: float | None = None
    enabled_at: float | None = None  # `bindguard enable`: the inactivity count starts again
    disabled_at: float | None = None  # disabled for inactivity
    # password
    password_changed_at: float | None = None  # the last change bindguard forwarded
    password_changed_by: str | None = None  # "self" or "admin"
    directory_changed_at: float | None = None  # pwdChangedTime & co., as last read
    must_change: str | None = None  # why the password must change: admin_reset, expire, ...
    history: tuple[str, ...] = field(default=(), repr=False)  # argon2id hashes, newest first
    # second factor
    otp_secret: str | None = field(default=None, repr=False)  # sealed (AES-GCM) base32 secret
    otp_last_step: int | None = None  # the time step of the last accepted TOTP code
    otp_backup: tuple[str, ...] = field(default=(), repr=False)  # argon2id hashes; "-" = used
    otp_enrolled_at: float | None = None
