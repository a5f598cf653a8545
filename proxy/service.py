"""AuthService: the one place that knows the order of checks for an authentication.

Fronts call ``admit`` before an attempt reaches the directory and ``record`` with the
directory's answer; the service loads and changes account state through the store runner,
asks the policy, and writes the audit log.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed

from proxy.audit import AuditLog
from proxy.config import Config
from proxy.identity import canonical_dn
from proxy.passwords import Hasher, same
from proxy.policy import lockout
from proxy.policy import password as pw
from proxy.policy.account import AccountState
from proxy.policy.lockout import Admission, LockoutRules
from proxy.policy.password import PasswordRules, Violation
from proxy.store import Change
from proxy.store.worker import Runner

# Blocking CPU work (argon2) goes through this: the reactor's thread pool in the daemon.
Offload = Callable[..., "Deferred[Any]"]

log = logging.getLogger(__name__)

INVALID_CREDENTIALS = 49
SUCCESS = 0

# While attempts in flight hold every place below the threshold, a new attempt waits for one of
# them to finish (woken at once by this process, or by polling for other processes).
BUSY_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Attempt:
    """One authentication admitted to the directory, holding its reservation."""

    dn: str  # canonical
    front: str
    client: str
    lease: float = field(repr=False)
    state: AccountState = field(default=AccountState(), repr=False)  # as admitted


@dataclass(frozen=True)
class DirectoryRecord:
    """What the directory says about a password: its last change, and whether it was reset."""

    changed_at: float | None = None
    reset: bool = False


@dataclass(frozen=True)
class BindVerdict:
    """What becomes of a bind the directory accepted."""

    allowed: bool = True  # False: refuse it (49): the password has expired
    restricted: bool = False  # the session may only change its password
    warn_seconds: int | None = None  # the password expires in this many seconds


ALLOWED = BindVerdict()


@dataclass(frozen=True)
class PasswordChange:
    """A request to set ``dn``'s password, as a front end saw it."""

    dn: str  # canonical
    by_self: bool  # the account changes its own password (else an administrator does)
    new: str = field(repr=False)
    current: str | None = field(default=None, repr=False)  # the password replaced, if known
    front: str = "ldap"
    client: str = "-"


@dataclass(frozen=True)
class ChangePlan:
    """A change that passed every rule, with what to record once the directory accepts it."""

    change: PasswordChange
    new_hash: str | None = field(default=None, repr=False)
    current_hash: str | None = field(default=None, repr=False)

class AuthService:
    """Orders the checks of one authentication and records its outcome."""

    def __init__(self, config: Config, runner: Runner, audit: AuditLog, reactor: Any,
                 offload: Offload | None = None, hasher: Hasher | None = None) -> None:
        self.rules = LockoutRules.from_config(config.compliance)
        self.passwords = PasswordRules.from_config(config)
        self.runner = runner
        self.offload: Offload = offload or _offload_to_pool(reactor)
        self.hasher = hasher or Hasher()
        self.audit = audit
        self.reactor = reactor
        self.clock: Callable[[], float] = reactor.seconds
        # Longest an attempt can be in flight: every upstream tried to its timeout, plus slack.
        self.lease_seconds = config.proxy.upstream_timeout * (len(config.proxy.upstream) + 1) + 5
        self._waiters: dict[str, list[Deferred[None]]] = {}

    def admit(self, dn: str, front: str, client: str) -> Deferred[Attempt | None]:
        """Checks before the directory is contacted; an Attempt to forward, or None if refused.

        A refusal is already audited; the caller answers as for a wrong password.
        (Plain Deferred callbacks rather than inlineCallbacks: this runs for every bind.)
        """
        key = canonical_dn(dn)
        deadline = self.clock() + self.lease_seconds

        def ask() -> Deferred[Attempt | None]:
            now = self.clock()
            lease = now + self.lease_seconds
            d = self.runner.submit(key, _admit_change(self.rules, self.passwords, now, lease))
            return d.addCallback(decided, lease)

        def decided(verdict: tuple[Admission | str, AccountState],
                    lease: float) -> Attempt | None | Deferred[Attempt | None]:
            admission, state = verdict
            if admission is Admission.ALLOW:
                return Attempt(key, front, client, lease, state)
            if admission is Admission.LOCKED:
                self.audit.write("auth.failure", key, front, client, reason="locked")
                return None
            if admission in (_DISABLED, _NEWLY_DISABLED):
                if admission is _NEWLY_DISABLED:
                    self.audit.write("account.disabled", key, front, client, reason="inactivity")
                    log.warning("account disabled after %s days without a login: %s",
                                self.passwords.inactive_days, key)
                self.audit.write("auth.failure", key, front, client, reason="disabled")
                return None
            if self.clock() >= deadline:
                self.audit.write("auth.failure", key, front, client, reason="attempts_in_flight")
                return None
            return self._wait_for_slot(key).addCallback(lambda _: ask())

        return ask()

    def directory_attributes(self, attempt: Attempt) -> list[str] | None:
        """Attributes to read from the user's entry after a good bind, or None (no read).

        Read when the directory may know what bindguard does not: a reset flag (with
        change_password_upon_first_use), or a password change bindguard did not see (with
        expiry, while bindguard has no change of its own or would refuse or warn).
        """
        rules = self.passwords
        wanted = rules.change_on_first_use
        if rules.expires_days is not None and attempt.dn not in rules.expires_ignore:
            state = attempt.state
            standing = pw.expiry(rules, state, attempt.dn, self.clock())
            wanted = wanted or (state.password_changed_at is None or standing.expired
                                or standing.warn_seconds is not None)
        return list(DIRECTORY_ATTRIBUTES) if wanted else None

    def record(self, attempt: Attempt, result: int | None,
               directory: DirectoryRecord | None = None,
               rescue: bool = False) -> Deferred[BindVerdict | None]:
        """Record the directory's answer (None: the directory could not be reached).

        For a bind the directory accepted, decide expiry and must-change (with what the
        directory said about the password, when it was read) and return the verdict.
        ``rescue``: the bind only proves the old password for a password change, which is
        allowed whatever the expiry or must-change state.
        """
        now = self.clock()
        if result == SUCCESS:
            return self._success(attempt, now, directory or DirectoryRecord(), rescue)
        if result == INVALID_CREDENTIALS:
            change: Change[Any] = _failure_change(self.rules, now, attempt.lease)
        else:
            change = _release_change(self.rules, now, attempt.lease)
        d = self.runner.submit(attempt.dn, change)
        d.addCallback(self._recorded, attempt, result)
        d.addBoth(self._woken, attempt.dn)
        return d

    def _success(self, attempt: Attempt, now: float, directory: DirectoryRecord,
                 rescue: bool) -> Deferred[BindVerdict | None]:
        rules = self.passwords
        state = pw.with_directory_record(rules, attempt.state, directory.changed_at,
                                         directory.reset)
        standing = pw.expiry(rules, state, attempt.dn, now)
        if rescue:
            verdict = ALLOWED
            change: Change[Any] = _success_change(self.rules, rules, now, attempt.lease,
                                                  directory)
            self._audit(attempt, "auth.success", "password_change")
        elif standing.expired:
            verdict = BindVerdict(allowed=False)
            change = _expired_change(self.rules, rules, now, attempt.lease,
                                                  directory)
            self._audit(attempt, "auth.failure", "password_expired")
        else:
            restricted = pw.must_change(rules, state)
            verdict = BindVerdict(restricted=restricted, warn_seconds=standing.warn_seconds)
            change = _success_change(self.rules, rules, now, attempt.lease, directory)
            self._audit(attempt, "auth.success", "must_change" if restricted else None)
        news = (attempt.lease in attempt.state.pending or attempt.state.failures
                or state != attempt.state or pw.success_is_news(attempt.state, now))
        if attempt.dn in self._waiters:
            d = self.runner.submit(attempt.dn, change)
            d.addBoth(self._woken, attempt.dn)
            return d.addCallback(lambda _: verdict)
        if news:
            # A success need not be durable before the client hears of it: losing it in a
            # crash only keeps earlier failures counted. Nobody waits, so no reactor wake-up.
            self.runner.post(attempt.dn, change)
        return succeed(verdict)

    # -- password changes ---------------------------------------------------------------------

    def check_change(self, request: PasswordChange) -> Deferred[ChangePlan | Violation]:
        """Every rule for a new password; a refusal is audited (``password.rejected``)."""
        now = self.clock()
        rules = self.passwords
        d = self.runner.submit(request.dn, _read_change(self.rules, now))

        def decide(state: AccountState) -> ChangePlan | Violation | Deferred[Any]:
            violation = pw.check_quality(rules, request.new) or pw.check_age(
                rules, state, now, request.by_self)
            if violation is not None:
                return violation
            if rules.history_count == 0:
                return ChangePlan(request)
            return self.offload(self._check_history, request, pw.history_to_check(rules, state))

        def audited(outcome: ChangePlan | Violation) -> ChangePlan | Violation:
            if isinstance(outcome, Violation):
                self.audit.write("password.rejected", request.dn, request.front, request.client,
                                 reason=outcome.rule)
            return outcome

        return d.addCallback(decide).addCallback(audited)

    def _check_history(self, request: PasswordChange,
                       history: tuple[str, ...]) -> ChangePlan | Violation:
        """Blocking (argon2): the new password against the last N, the current included."""
        if request.current is not None and same(request.current, request.new):
            return pw.HISTORY_VIOLATION
        if any(self.hasher.matches(hashed, request.new) for hashed in history):
            return pw.HISTORY_VIOLATION
        current_hash = None
        if not history and request.current is not None:
            current_hash = self.hasher.hash(request.current)
        return ChangePlan(request, self.hasher.hash(request.new), current_hash)

    def commit_change(self, plan: ChangePlan) -> Deferred[None]:
        """The directory accepted the change: record it (``password.changed``)."""
        request = plan.change
        d = self.runner.submit(request.dn, _change_change(
            self.rules, self.passwords, self.clock(), request.by_self, plan.new_hash,
            plan.current_hash))

        def audited(_: object) -> None:
            self.audit.write("password.changed", request.dn, request.front, request.client,
                             reason="self" if request.by_self else "admin")

        return d.addCallback(audited)

    def _recorded(self, locked: bool | None, attempt: Attempt, result: int | None) -> None:
        if result == SUCCESS:
            self._audit(attempt, "auth.success")
        elif result == INVALID_CREDENTIALS:
            self._audit(attempt, "auth.failure", "invalid_credentials")
            if locked:
                self._audit(attempt, "account.locked", "failure_threshold")
                log.warning("account locked after %s failures: %s", self.rules.attempts,
                            attempt.dn)
        else:
            reason = "directory_unavailable" if result is None else f"directory_result_{result}"
            self._audit(attempt, "auth.failure", reason)

    def _woken(self, passthrough: Any, key: str) -> Any:
        self._wake(key)
        return passthrough

    def _audit(self, attempt: Attempt, event: str, reason: str | None = None) -> None:
        self.audit.write(event, attempt.dn, attempt.front, attempt.client, reason=reason)

    def _wait_for_slot(self, key: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiters.setdefault(key, []).append(d)
        call = self.reactor.callLater(BUSY_POLL_SECONDS, self._fire, key, d)
        d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def _fire(self, key: str, d: Deferred[None]) -> None:
        waiters = self._waiters.get(key, [])
        if d in waiters:
            waiters.remove(d)
            if not waiters:
                del self._waiters[key]
        if not d.called:
            d.callback(None)

    def _wake(self, key: str) -> None:
        for d in self._waiters.pop(key, []):
            if not d.called:
                d.callback(None)


# What the directory may say about a password; asked for only when a rule needs it.
DIRECTORY_ATTRIBUTES = ("pwdChangedTime", "pwdReset", "shadowLastChange", "pwdLastSet")

# Admission outcomes beyond the lockout's own.
_DISABLED = "disabled"
_NEWLY_DISABLED = "newly disabled"


def _offload_to_pool(reactor: Any) -> Offload:
    from twisted.internet.threads import deferToThreadPool

    def offload(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)

    return offload


def _admit_change(rules: LockoutRules, passwords: PasswordRules, now: float, lease: float
                  ) -> Callable[[AccountState], tuple[AccountState, tuple[Any, AccountState]]]:
    def change(state: AccountState) -> tuple[AccountState, tuple[Any, AccountState]]:
        state = lockout.current(rules, state, now)
        if lockout.is_locked(rules, state, now):
            return state, (Admission.LOCKED, state)
        state, disabled, newly = pw.check_inactive(passwords, state, now)
        if disabled:
            return state, (_NEWLY_DISABLED if newly else _DISABLED, state)
        verdict, new = lockout.admit(rules, state, now, lease)
        return new, (verdict, new)
    return change


def _read_change(rules: LockoutRules,
                 now: float) -> Callable[[AccountState], tuple[AccountState, AccountState]]:
    def change(state: AccountState) -> tuple[AccountState, AccountState]:
        return state, lockout.current(rules, state, now)
    return change


def _failure_change(rules: LockoutRules, now: float,
                    lease: float) -> Callable[[AccountState], tuple[AccountState, bool]]:
    def change(state: AccountState) -> tuple[AccountState, bool]:
        return lockout.record_failure(rules, state, now, lease)
    return change


def _success_change(rules: LockoutRules, passwords: PasswordRules, now: float, lease: float,
                    directory: DirectoryRecord
                    ) -> Callable[[AccountState], tuple[AccountState, None]]:
    def change(state: AccountState) -> tuple[AccountState, None]:
        state = lockout.record_success(rules, state, now, lease)
        return pw.with_directory_record(passwords, state, directory.changed_at,
                                        directory.reset), None
    return change


def _expired_change(rules: LockoutRules, passwords: PasswordRules, now: float, lease: float,
                    directory: DirectoryRecord
                    ) -> Callable[[AccountState], tuple[AccountState, None]]:
    """The right password, but expired: not a failure, not a success either."""
    def change(state: AccountState) -> tuple[AccountState, None]:
        state = lockout.release(rules, state, now, lease)
        return pw.with_directory_record(passwords, state, directory.changed_at,
                                        directory.reset), None
    return change


def _change_change(rules: LockoutRules, passwords: PasswordRules, now: float, by_self: bool,
                   new_hash: str | None, current_hash: str | None
                   ) -> Callable[[AccountState], tuple[AccountState, None]]:
    def change(state: AccountState) -> tuple[AccountState, None]:
        state = lockout.current(rules, state, now)
        return pw.record_change(passwords, state, now, by_self, new_hash, current_hash), None
    return change


def _release_change(rules: LockoutRules, now: float,
                    lease: float) -> Callable[[AccountState], tuple[AccountState, None]]:
    def change(state: AccountState) -> tuple[AccountState, None]:
        return lockout.release(rules, state, now, lease), None
    return change
