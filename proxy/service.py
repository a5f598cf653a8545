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
from proxy.policy import lockout
from proxy.policy.lockout import AccountState, Admission, LockoutRules
from proxy.store import Change
from proxy.store.worker import Runner

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


class AuthService:
    """Orders the checks of one authentication and records its outcome."""

    def __init__(self, config: Config, runner: Runner, audit: AuditLog, reactor: Any) -> None:
        self.rules = LockoutRules.from_config(config.compliance)
        self.runner = runner
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
            d = self.runner.submit(key, _admit_change(self.rules, now, lease))
            return d.addCallback(decided, lease)

        def decided(verdict: Admission, lease: float) -> Attempt | None | Deferred[Attempt | None]:
            if verdict is Admission.ALLOW:
                return Attempt(key, front, client, lease)
            if verdict is Admission.LOCKED:
                self.audit.write("auth.failure", key, front, client, reason="locked")
                return None
            if self.clock() >= deadline:
                self.audit.write("auth.failure", key, front, client, reason="attempts_in_flight")
                return None
            return self._wait_for_slot(key).addCallback(lambda _: ask())

        return ask()

    def record(self, attempt: Attempt, result: int | None) -> Deferred[None]:
        """Record the directory's answer (None: the directory could not be reached)."""
        now = self.clock()
        if result == SUCCESS and attempt.dn not in self._waiters:
            # A success need not be durable before the client hears of it: losing it in a
            # crash only keeps earlier failures counted. Nobody waits, so no reactor wake-up.
            self.runner.post(attempt.dn, _success_change(self.rules, now, attempt.lease))
            self._recorded(None, attempt, result)
            return succeed(None)
        if result == SUCCESS:
            change: Change[Any] = _success_change(self.rules, now, attempt.lease)
        elif result == INVALID_CREDENTIALS:
            change = _failure_change(self.rules, now, attempt.lease)
        else:
            change = _release_change(self.rules, now, attempt.lease)
        d = self.runner.submit(attempt.dn, change)
        d.addCallback(self._recorded, attempt, result)
        d.addBoth(self._woken, attempt.dn)
        return d

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


def _admit_change(rules: LockoutRules, now: float,
                  lease: float) -> Callable[[AccountState], tuple[AccountState, Admission]]:
    def change(state: AccountState) -> tuple[AccountState, Admission]:
        verdict, new = lockout.admit(rules, state, now, lease)
        return new, verdict
    return change


def _failure_change(rules: LockoutRules, now: float,
                    lease: float) -> Callable[[AccountState], tuple[AccountState, bool]]:
    def change(state: AccountState) -> tuple[AccountState, bool]:
        return lockout.record_failure(rules, state, now, lease)
    return change


def _success_change(rules: LockoutRules, now: float,
                    lease: float) -> Callable[[AccountState], tuple[AccountState, None]]:
    def change(state: AccountState) -> tuple[AccountState, None]:
        return lockout.record_success(rules, state, now, lease), None
    return change


def _release_change(rules: LockoutRules, now: float,
                    lease: float) -> Callable[[AccountState], tuple[AccountState, None]]:
    def change(state: AccountState) -> tuple[AccountState, None]:
        return lockout.release(rules, state, now, lease), None
    return change
