"""The store changes of one authentication, in the order of checks.

Each factory returns a change for ``Store.apply``: a pure function of one account's state that
returns its new state and a result, run atomically (so several processes sharing the state
decide from the same, current state). The service builds them; the policy decides inside them.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.policy import lockout, otp
from proxy.policy import password as pw
from proxy.policy.account import AccountState
from proxy.policy.lockout import Admission, LockoutRules
from proxy.policy.otp import CodeCheck, Kind, OtpRules, Split
from proxy.policy.password import PasswordRules
from proxy.sealed import SealError, SecretBox

# A failure that never held a reservation (a wrong code): there is no lease to release.
NO_LEASE = -math.inf


class Refusal(enum.Enum):
    """Why an attempt is refused before the directory; the value is the audit reason."""

    LOCKED = "locked"
    DISABLED = "disabled"
    OTP_NOT_ENROLLED = "otp.not_enrolled"  # enforce_2fa, and no second factor enrolled
    OTP_UNREADABLE = "otp.unreadable"  # the sealed secret does not open with the key file
    OTP_INVALID = CodeCheck.INVALID.value
    OTP_REPLAYED = CodeCheck.REPLAYED.value
    OTP_MISSING = CodeCheck.MISSING.value
    ATTEMPTS_IN_FLIGHT = "attempts_in_flight"  # every place stayed taken for the whole wait

    @property
    def locked(self) -> bool:
        """Whether the ppolicy response control may say accountLocked (a lock, or an account
        disabled for inactivity); a wrong or missing code looks like a wrong password."""
        return self in (Refusal.LOCKED, Refusal.DISABLED)


@dataclass(frozen=True)
class Backup:
    """A backup code checked against its hash (off the reactor thread) before admission."""

    index: int
    hashed: str | None = field(repr=False)  # the hash it was checked against; None: unused
    matches: bool


@dataclass(frozen=True)
class Admitted:
    """The outcome of an admission."""

    admission: Admission | Refusal
    state: AccountState = field(repr=False)
    newly_disabled: bool = False
    locked: bool = False  # a wrong code reached the threshold
    backup_left: int | None = None  # a backup code was used: how many are left


Change = Callable[[AccountState], "tuple[AccountState, Any]"]


def admit(rules: LockoutRules, passwords: PasswordRules, otp_rules: OtpRules,
          box: SecretBox | None, dn: str, given: Split | None, backup: Backup | None,
          now: float, lease: float) -> Change:
    """Locked? Disabled? Second factor? Then a reservation for the directory."""
    def change(state: AccountState) -> tuple[AccountState, Admitted]:
        state = lockout.current(rules, state, now)
        if lockout.is_locked(rules, state, now):
            return state, Admitted(Refusal.LOCKED, state)
        state, disabled, newly = pw.check_inactive(passwords, state, now)
        if disabled:
            return state, Admitted(Refusal.DISABLED, state, newly_disabled=newly)
        left = None
        if given is not None and otp.required(otp_rules, state, dn):
            if not otp.enrolled(state):
                return state, Admitted(Refusal.OTP_NOT_ENROLLED, state)
            if lockout.admit(rules, state, now, lease)[0] is Admission.BUSY:
                return state, Admitted(Admission.BUSY, state)  # keep the code for the retry
            checked, accepted = _second_factor(box, dn, state, given, backup, now)
            if accepted is None:
                assert checked is not None
                if checked is Refusal.OTP_UNREADABLE:
                    return state, Admitted(checked, state)
                failed, locked = lockout.record_failure(rules, state, now, NO_LEASE)
                return failed, Admitted(checked, failed, locked=locked)
            state = accepted
            left = otp.backup_left(state) if given.kind is Kind.BACKUP else None
        verdict, new = lockout.admit(rules, state, now, lease)
        if verdict is Admission.LOCKED:  # the lock begins now (a lowered threshold)
            return new, Admitted(Refusal.LOCKED, new, locked=True)
        return new, Admitted(verdict, new, backup_left=left)
    return change


def _second_factor(box: SecretBox | None, dn: str, state: AccountState, given: Split,
                   backup: Backup | None, now: float
                   ) -> tuple[Refusal | None, AccountState | None]:
    """(why refused, None) or (None, the state with the code used up)."""
    if given.kind is Kind.TOTP:
        assert state.otp_secret is not None
        try:
            secret = box.open(dn, state.otp_secret) if box is not None else None
        except SealError:
            secret = None
        if secret is None:
            return Refusal.OTP_UNREADABLE, None
        checked, step = otp.check_totp(secret, given.code, state.otp_last_step, now)
        if step is None:
            return Refusal(checked.value), None
        return None, otp.accept_totp(state, step)
    if given.kind is Kind.BACKUP and backup is not None and backup.matches \
            and backup.hashed is not None:
        used = otp.consume_backup(state, backup.index, backup.hashed)
        return (None, used) if used is not None else (Refusal.OTP_INVALID, None)
    if given.kind is Kind.BACKUP:
        return Refusal.OTP_INVALID, None
    return Refusal.OTP_MISSING, None


def read(rules: LockoutRules, now: float) -> Change:
    """The state as of now (first sight recorded)."""
    def change(state: AccountState) -> tuple[AccountState, AccountState]:
        state = lockout.current(rules, state, now)
        return state, state
    return change


def failure(rules: LockoutRules, now: float, lease: float) -> Change:
    """The directory refused the password: one more failure, maybe a lock."""
    def change(state: AccountState) -> tuple[AccountState, bool]:
        return lockout.record_failure(rules, state, now, lease)
    return change


def success(rules: LockoutRules, passwords: PasswordRules, now: float, lease: float,
            changed_at: float | None, reset: bool, expired: bool = False) -> Change:
    """The directory accepted the password; fold in what it said about it. An ``expired``
    password is not a failure, and not a success either: its place is only freed."""
    def change(state: AccountState) -> tuple[AccountState, None]:
        if expired:
            state = lockout.release(rules, state, now, lease)
        else:
            state = lockout.record_success(rules, state, now, lease)
        return pw.with_directory_record(passwords, state, changed_at, reset), None
    return change


def password_changed(rules: LockoutRules, passwords: PasswordRules, now: float, by_self: bool,
                     new_hash: str | None, current_hash: str | None) -> Change:
    """The directory accepted a new password."""
    def change(state: AccountState) -> tuple[AccountState, None]:
        state = lockout.current(rules, state, now)
        return pw.record_change(passwords, state, now, by_self, new_hash, current_hash), None
    return change


def release(rules: LockoutRules, now: float, lease: float) -> Change:
    """No answer from the directory: free the attempt's place, count nothing."""
    def change(state: AccountState) -> tuple[AccountState, None]:
        return lockout.release(rules, state, now, lease), None
    return change
