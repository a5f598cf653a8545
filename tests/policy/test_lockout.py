"""Lockout decisions as pure functions with an explicit ``now`` (Keystone's test matrix)."""
from __future__ import annotations

import pytest

from proxy.policy.lockout import (
    KEPT_WITHOUT_LOCKOUT,
    AccountState,
    Admission,
    LockoutRules,
    admit,
    current,
    is_locked,
    lock_ends_at,
    record_failure,
    record_success,
    release,
    unlock,
)

T0 = 1_800_000_000.0
LEASE = 30.0


def fail_times(rules: LockoutRules, state: AccountState, times: list[float]) -> AccountState:
    """Admit and fail one attempt at each time."""
    for now in times:
        verdict, state = admit(rules, state, now, now + LEASE)
        assert verdict is Admission.ALLOW
        state, _ = record_failure(rules, state, now, now + LEASE)
    return state


@pytest.mark.parametrize("attempts,failures,locked", [
    (1, 1, True), (3, 2, False), (3, 3, True), (6, 5, False), (6, 6, True),
])
def test_threshold(attempts: int, failures: int, locked: bool) -> None:
    """The account locks exactly when the failures reach lockout_failure_attempts."""
    rules = LockoutRules(attempts=attempts, duration=1800, window=0)
    state = fail_times(rules, AccountState(), [T0 + i for i in range(failures)])
    assert is_locked(rules, state, T0 + failures) is locked


def test_failure_reports_the_lock_beginning_once() -> None:
    """record_failure says True only for the failure that starts the lock."""
    rules = LockoutRules(attempts=2, duration=60, window=0)
    state, began = record_failure(rules, AccountState(), T0, T0 + LEASE)
    assert not began
    state, began = record_failure(rules, state, T0 + 1, T0 + LEASE)
    assert began
    state, began = record_failure(rules, state, T0 + 2, T0 + LEASE)
    assert not began


def test_locked_account_is_refused_without_reservation() -> None:
    """A locked account is refused before the directory and takes no reservation."""
    rules = LockoutRules(attempts=2, duration=1800, window=0)
    state = fail_times(rules, AccountState(), [T0, T0 + 1])
    verdict, after = admit(rules, state, T0 + 2, T0 + 2 + LEASE)
    assert verdict is Admission.LOCKED
    assert after.pending == ()


def test_duration_ends_the_lock_and_restarts_the_count() -> None:
    """After lockout_duration seconds the account is open again with a fresh count."""
    rules = LockoutRules(attempts=2, duration=600, window=0)
    state = fail_times(rules, AccountState(), [T0, T0 + 10])
    assert lock_ends_at(rules, state) == T0 + 10 + 600
    assert is_locked(rules, state, T0 + 609)
    assert not is_locked(rules, state, T0 + 610)
    verdict, state = admit(rules, state, T0 + 611, T0 + 611 + LEASE)
    assert verdict is Admission.ALLOW
    assert state.failures == () and state.locked_at is None


def test_unset_duration_locks_until_unlocked() -> None:
    """Without lockout_duration the lock holds however long, until an administrator unlocks."""
    rules = LockoutRules(attempts=2, duration=None, window=0)
    state = fail_times(rules, AccountState(), [T0, T0 + 1])
    assert lock_ends_at(rules, state) is None
    assert is_locked(rules, state, T0 + 10 * 365 * 86400)
    state = unlock(state)
    assert not is_locked(rules, state, T0 + 2)
    assert admit(rules, state, T0 + 2, T0 + 2 + LEASE)[0] is Admission.ALLOW


def test_window_forgets_old_failures() -> None:
    """A failure older than lockout_failure_window no longer counts toward the threshold."""
    rules = LockoutRules(attempts=3, duration=600, window=100)
    state = fail_times(rules, AccountState(), [T0, T0 + 50])
    state = fail_times(rules, state, [T0 + 120])  # the first has been forgotten
    assert not is_locked(rules, state, T0 + 121)
    assert len(current(rules, state, T0 + 121).failures) == 2
    state = fail_times(rules, state, [T0 + 130])
    assert is_locked(rules, state, T0 + 131)


def test_window_zero_never_forgets() -> None:
    """With lockout_failure_window = 0 failures count until a success or a lock."""
    rules = LockoutRules(attempts=3, duration=600, window=0)
    state = fail_times(rules, AccountState(), [T0, T0 + 86400 * 30])
    state = fail_times(rules, state, [T0 + 86400 * 365])
    assert is_locked(rules, state, T0 + 86400 * 365 + 1)


def test_success_resets_the_count() -> None:
    """A good password forgets the failures and records the success time."""
    rules = LockoutRules(attempts=3, duration=600, window=0)
    state = fail_times(rules, AccountState(), [T0, T0 + 1])
    verdict, state = admit(rules, state, T0 + 2, T0 + 2 + LEASE)
    state = record_success(rules, state, T0 + 2, T0 + 2 + LEASE)
    assert state.failures == () and state.pending == ()
    assert state.last_success_at == T0 + 2
    state = fail_times(rules, state, [T0 + 3, T0 + 4])
    assert not is_locked(rules, state, T0 + 5)


def test_success_in_flight_does_not_undo_a_lock() -> None:
    """A good answer that arrives after failures locked the account leaves the lock in place."""
    rules = LockoutRules(attempts=2, duration=600, window=0)
    _, state = admit(rules, AccountState(), T0, T0 + LEASE)  # the good attempt, in flight
    state = fail_times(rules, state, [T0 + 1])
    assert admit(rules, state, T0 + 1, T0 + 1 + LEASE)[0] is Admission.BUSY
    state = fail_times(rules, record_success(rules, state, T0 + 2, T0 + LEASE), [T0 + 3, T0 + 4])
    assert is_locked(rules, state, T0 + 5)


def test_reservations_bound_attempts_in_flight() -> None:
    """Failures plus attempts in flight never exceed the threshold: the next one must wait."""
    rules = LockoutRules(attempts=5, duration=600, window=0)
    state = AccountState()
    verdicts = []
    for i in range(100):
        verdict, state = admit(rules, state, T0, T0 + LEASE + i)
        verdicts.append(verdict)
    assert verdicts.count(Admission.ALLOW) == 5
    assert set(verdicts[5:]) == {Admission.BUSY}


def test_release_frees_a_place_without_counting() -> None:
    """An attempt the directory never answered frees its place and counts nothing."""
    rules = LockoutRules(attempts=1, duration=600, window=0)
    _, state = admit(rules, AccountState(), T0, T0 + LEASE)
    assert admit(rules, state, T0, T0 + LEASE + 1)[0] is Admission.BUSY
    state = release(rules, state, T0 + 1, T0 + LEASE)
    assert state.failures == () and state.pending == ()
    assert admit(rules, state, T0 + 1, T0 + 1 + LEASE)[0] is Admission.ALLOW


def test_dead_leases_expire() -> None:
    """A reservation whose process died stops holding a place once its lease runs out."""
    rules = LockoutRules(attempts=1, duration=600, window=0)
    _, state = admit(rules, AccountState(), T0, T0 + LEASE)
    assert admit(rules, state, T0 + LEASE - 1, T0 + 2 * LEASE)[0] is Admission.BUSY
    assert admit(rules, state, T0 + LEASE, T0 + 2 * LEASE)[0] is Admission.ALLOW


def test_lockout_off_never_locks() -> None:
    """With lockout_failure_attempts unset, failures never lock and never make anyone wait."""
    rules = LockoutRules(attempts=None, duration=None, window=0)
    state = AccountState()
    for i in range(50):
        verdict, state = admit(rules, state, T0 + i, T0 + i + LEASE)
        assert verdict is Admission.ALLOW
    state = fail_times(rules, state, [T0 + 100 + i for i in range(50)])
    assert not is_locked(rules, state, T0 + 200)


def test_first_seen_is_set_once() -> None:
    """The first time bindguard sees an account is remembered and never moves."""
    rules = LockoutRules(attempts=3, duration=None, window=0)
    _, state = admit(rules, AccountState(), T0, T0 + LEASE)
    assert state.first_seen_at == T0
    _, state = admit(rules, state, T0 + 50, T0 + 50 + LEASE)
    assert state.first_seen_at == T0


def test_failures_without_lockout_are_kept_bounded() -> None:
    """With lockout off nothing decides from failures: only the last few are kept, so a stream
    of wrong passwords cannot grow the account's state without bound."""
    rules = LockoutRules(attempts=None, duration=None, window=0)
    state = AccountState()
    for i in range(250):
        state, locked = record_failure(rules, state, T0 + i, lease=-1.0)
        assert not locked
    assert len(state.failures) == KEPT_WITHOUT_LOCKOUT
    assert state.failures[-1] == T0 + 249


def test_a_lowered_threshold_locks_at_the_next_attempt() -> None:
    """Failures already counted reach a threshold lowered by a reload: the next attempt is
    refused and the lock begins then."""
    state = AccountState(failures=(T0, T0 + 1, T0 + 2), first_seen_at=T0)
    lowered = LockoutRules(attempts=2, duration=600, window=0)
    verdict, after = admit(lowered, state, T0 + 10, lease_until=T0 + 30)
    assert verdict is Admission.LOCKED
    assert after.locked_at == T0 + 10 and after.failures == () and after.pending == ()
