"""Lockout after failed attempts (Keystone's lockout_failure_attempts / lockout_duration).

Pure functions of (rules, account state, now). Times are seconds since the epoch, UTC.

Exactness under concurrency comes from *reservations*: an attempt may reach the directory only
after ``admit`` has added a lease to the account's ``pending`` list, and counted failures plus
pending attempts never exceed the threshold. The store applies these functions inside one
atomic transaction, so several processes sharing the state cannot overshoot either.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from proxy.config import ComplianceConfig
from proxy.policy.account import AccountState


@dataclass(frozen=True)
class LockoutRules:
    """The lockout settings; ``attempts`` None means lockout is off."""

    attempts: int | None
    duration: int | None  # seconds; None: locked until an administrator unlocks
    window: int  # seconds after which a failure is forgotten; 0: never

    @classmethod
    def from_config(cls, config: ComplianceConfig) -> LockoutRules:
        """The rules of a ``[security_compliance]`` section."""
        return cls(config.lockout_failure_attempts, config.lockout_duration,
                   config.lockout_failure_window)


KEPT_WITHOUT_LOCKOUT = 100


class Admission(enum.Enum):
    """Whether an attempt may go to the directory now."""

    ALLOW = "allow"  # a reservation was taken: forward the attempt
    LOCKED = "locked"  # refuse: the account is locked
    BUSY = "busy"  # wait: attempts in flight could still reach the threshold


def lock_ends_at(rules: LockoutRules, state: AccountState) -> float | None:
    """When the current lock ends; None when not locked or locked until unlocked."""
    if state.locked_at is None or rules.duration is None:
        return None
    return state.locked_at + rules.duration


def is_locked(rules: LockoutRules, state: AccountState, now: float) -> bool:
    """Whether the account is locked at ``now``."""
    if state.locked_at is None:
        return False
    ends = lock_ends_at(rules, state)
    return ends is None or now < ends


def current(rules: LockoutRules, state: AccountState, now: float) -> AccountState:
    """The state as of ``now``: expired locks, forgotten failures and dead leases dropped."""
    if state.first_seen_at is None:
        state = replace(state, first_seen_at=now)
    if state.locked_at is not None and not is_locked(rules, state, now):
        # As in Keystone, the failure count starts again when a lock runs out.
        state = replace(state, locked_at=None, failures=())
    if rules.window and state.failures and state.failures[0] <= now - rules.window:
        state = replace(state, failures=tuple(t for t in state.failures
                                              if t > now - rules.window))
    if state.pending and min(state.pending) <= now:
        state = replace(state, pending=tuple(t for t in state.pending if t > now))
    return state


def admit(rules: LockoutRules, state: AccountState, now: float,
          lease_until: float) -> tuple[Admission, AccountState]:
    """Decide whether an attempt may reach the directory; reserve it when it may."""
    state = current(rules, state, now)
    if is_locked(rules, state, now):
        return Admission.LOCKED, state
    if rules.attempts is None:
        return Admission.ALLOW, state  # lockout is off: nothing to reserve
    if len(state.failures) >= rules.attempts:
        # The threshold was lowered (a reload) below failures already counted: lock now.
        return Admission.LOCKED, replace(state, failures=(), locked_at=now)
    if len(state.failures) + len(state.pending) >= rules.attempts:
        return Admission.BUSY, state
    return Admission.ALLOW, replace(state, pending=state.pending + (lease_until,))


def record_failure(rules: LockoutRules, state: AccountState, now: float,
                   lease: float) -> tuple[AccountState, bool]:
    """Count a refused password; return the new state and whether a lock began."""
    state = current(rules, _release(state, lease), now)
    # Without lockout nothing decides from the failures: keep the last few, for `status`, so
    # that a stream of wrong passwords cannot grow the account's row without bound.
    failures = (state.failures + (now,))[-(rules.attempts or KEPT_WITHOUT_LOCKOUT):]
    if rules.attempts is not None and len(failures) >= rules.attempts \
            and not is_locked(rules, state, now):
        return replace(state, failures=(), locked_at=now), True
    return replace(state, failures=failures), False


def record_success(rules: LockoutRules, state: AccountState, now: float,
                   lease: float) -> AccountState:
    """A good password: forget the failures, remember the success.

    A lock that began while this attempt was in flight stays: it was earned by failures.
    """
    state = current(rules, _release(state, lease), now)
    return replace(state, failures=(), last_success_at=now)


def release(rules: LockoutRules, state: AccountState, now: float, lease: float) -> AccountState:
    """An attempt that neither failed nor succeeded (directory unavailable): free its place."""
    return current(rules, _release(state, lease), now)


def unlock(state: AccountState) -> AccountState:
    """An administrator's unlock: no lock, no failures."""
    return replace(state, locked_at=None, failures=())


def _release(state: AccountState, lease: float) -> AccountState:
    pending = list(state.pending)
    if lease in pending:
        pending.remove(lease)
    return replace(state, pending=tuple(pending))
