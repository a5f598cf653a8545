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

from proxy import transitions
from proxy.audit import AuditLog
from proxy.config import Config
from proxy.identity import canonical_dn
from proxy.passwords import Hasher, same
from proxy.policy import lockout, otp
from proxy.policy import password as pw
from proxy.policy.account import AccountState
from proxy.policy.lockout import Admission, LockoutRules
from proxy.policy.otp import Kind, OtpRules
from proxy.policy.password import PasswordRules, Violation
from proxy.sealed import SecretBox
from proxy.store import Change
from proxy.store.worker import Runner
from proxy.transitions import Admitted, Backup, Refusal

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
    # The password to forward when a second factor was split off it; None: forward as given.
    password: str | None = field(default=None, repr=False)


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
class Standing:
    """An account as PAM's account management sees it."""

    allowed: bool = True  # False: locked or disabled
    reason: str | None = None  # why not allowed: "locked" or "disabled"
    must_change: bool = False  # expired, or must change: a new password is required
    warn_seconds: int | None = None


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
                 offload: Offload | None = None, hasher: Hasher | None = None,
                 box: SecretBox | None = None) -> None:
        self.reconfigure(config)
        self.box = box  # opens TOTP secrets; None: no key file, nobody can be enrolled
        self.runner = runner
        self.offload: Offload = offload or _offload_to_pool(reactor)
        self.hasher = hasher or Hasher()
        self.audit = audit
        self.reactor = reactor
        self.clock: Callable[[], float] = reactor.seconds
        self._waiters: dict[str, list[Deferred[None]]] = {}

    def reconfigure(self, config: Config) -> None:
        """Take the rules of ``config`` for the next authentications (start, SIGHUP)."""
        self.rules = LockoutRules.from_config(config.compliance)
        self.passwords = PasswordRules.from_config(config)
        self.otp = OtpRules.from_config(config)
        # Longest an attempt can be in flight: every upstream tried to its timeout, plus slack.
        self.lease_seconds = config.proxy.upstream_timeout * (len(config.proxy.upstream) + 1) + 5

    def admit(self, dn: str, front: str, client: str,
              password: str | None = None) -> Deferred[Attempt | Refusal]:
        """Checks before the directory is contacted: an Attempt to forward, or why it is refused.

        ``password`` is what the user gave: the password, followed by a second factor when
        one is required. A refusal is already audited; the caller answers as for a wrong
        password. (Plain Deferred callbacks rather than inlineCallbacks: this runs for every
        bind.)
        """
        key = canonical_dn(dn)
        deadline = self.clock() + self.lease_seconds
        given = otp.split(password) if password is not None else None

        def ask(backup: Backup | None) -> Deferred[Attempt | Refusal]:
            now = self.clock()
            lease = now + self.lease_seconds
            d = self.runner.submit(key, transitions.admit(
                self.rules, self.passwords, self.otp, self.box, key, given, backup, now, lease))
            return d.addCallback(decided, lease, backup)

        def decided(outcome: Admitted, lease: float,
                    backup: Backup | None) -> Attempt | Refusal | Deferred[Attempt | Refusal]:
            if outcome.admission is Admission.ALLOW:
                if outcome.backup_left is not None:
                    self.audit.write("otp.backup_used", key, front, client,
                                     reason=f"{outcome.backup_left} left")
                forward = given.password if given is not None and otp.required(
                    self.otp, outcome.state, key) else None
                return Attempt(key, front, client, lease, outcome.state, forward)
            if isinstance(outcome.admission, Refusal):
                self._refused(key, front, client, outcome)
                return outcome.admission
            if self.clock() >= deadline:
                self.audit.write("auth.failure", key, front, client,
                                 reason=Refusal.ATTEMPTS_IN_FLIGHT.value)
                return Refusal.ATTEMPTS_IN_FLIGHT
            return self._wait_for_slot(key).addCallback(lambda _: ask(backup))

        if given is not None and given.kind is Kind.BACKUP:
            return self._check_backup(key, given).addCallback(ask)
        return ask(None)

    def _check_backup(self, dn: str, given: otp.Split) -> Deferred[Backup]:
        """Verify a backup code against its hash on the thread pool (argon2)."""
        assert given.backup_index is not None
        index = given.backup_index

        def verify(state: AccountState) -> Backup | Deferred[Backup]:
            hashed = otp.backup_hash(state, index)
            if hashed is None:
                return Backup(index, None, False)
            d = self.offload(self.hasher.matches, hashed, given.code)
            return d.addCallback(lambda matches: Backup(index, hashed, matches))

        return self.runner.submit(dn, transitions.read(self.rules, self.clock())).addCallback(
            verify)

    def _refused(self, key: str, front: str, client: str, outcome: Admitted) -> None:
        """Audit a refusal before the directory."""
        refusal = outcome.admission
        assert isinstance(refusal, Refusal)
        if outcome.newly_disabled:
            self.audit.write("account.disabled", key, front, client, reason="inactivity")
            log.warning("account disabled after %s days without a login: %s",
                        self.passwords.inactive_days, key)
        if refusal is Refusal.OTP_UNREADABLE:
            log.error("the TOTP secret of %s does not open with the key file: is key_file the "
                      "one it was enrolled with?", key)
        self.audit.write("auth.failure", key, front, client, reason=refusal.value)
        if outcome.locked:
            self.audit.write("account.locked", key, front, client, reason="failure_threshold")
            log.warning("account locked after %s failures: %s", self.rules.attempts, key)

    def needs_code(self, dn: str) -> Deferred[bool]:
        """Whether a login of ``dn`` must carry a second factor (a PAM module then asks)."""
        key = canonical_dn(dn)
        d = self.runner.submit(key, transitions.read(self.rules, self.clock()))
        return d.addCallback(lambda state: otp.required(self.otp, state, key))

    def standing(self, dn: str) -> Deferred[Standing]:
        """An account's standing for PAM's account management, without a password."""
        key = canonical_dn(dn)
        now = self.clock()

        def judge(state: AccountState) -> Standing:
            if lockout.is_locked(self.rules, state, now):
                return Standing(allowed=False, reason="locked")
            if pw.check_inactive(self.passwords, state, now)[1]:
                return Standing(allowed=False, reason="disabled")
            standing = pw.expiry(self.passwords, state, key, now)
            return Standing(must_change=standing.expired or pw.must_change(self.passwords,
                                                                            state),
                            warn_seconds=standing.warn_seconds)

        return self.runner.submit(key, transitions.read(self.rules, now)).addCallback(judge)

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

    def abandon(self, attempt: Attempt) -> Deferred[None]:
        """An admitted attempt that will not go to the directory after all (a password change
        its rules refused): its place is freed; nothing is counted or audited as a login (the
        refusal itself is, as password.rejected)."""
        d = self.runner.submit(attempt.dn, transitions.release(self.rules, self.clock(),
                                                               attempt.lease))
        return d.addBoth(self._woken, attempt.dn)

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
            change: Change[Any] = transitions.failure(self.rules, now, attempt.lease)
        else:
            change = transitions.release(self.rules, now, attempt.lease)
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
            change: Change[Any] = transitions.success(
                self.rules, rules, now, attempt.lease, directory.changed_at, directory.reset)
            self._audit(attempt, "auth.success", "password_change")
        elif standing.expired:
            verdict = BindVerdict(allowed=False)
            change = transitions.success(self.rules, rules, now, attempt.lease,
                                         directory.changed_at, directory.reset, expired=True)
            self._audit(attempt, "auth.failure", "password_expired")
        else:
            restricted = pw.must_change(rules, state)
            verdict = BindVerdict(restricted=restricted, warn_seconds=standing.warn_seconds)
            change = transitions.success(self.rules, rules, now, attempt.lease,
                                         directory.changed_at, directory.reset)
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
        d = self.runner.submit(request.dn, transitions.read(self.rules, now))

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
        d = self.runner.submit(request.dn, transitions.password_changed(
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

def _offload_to_pool(reactor: Any) -> Offload:
    from twisted.internet.threads import deferToThreadPool

    def offload(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)

    return offload
