"""Password lifecycle and inactivity: quality, history, minimum age, expiry, must-change, idle.

Keystone's ``[security_compliance]`` meanings, plus bindguard's own length, character-class and
warning options. Pure functions of (rules, account state, ``now``); hashing for the history is
done by the caller (``proxy.passwords``) and only its results come in here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from proxy.config import Config
from proxy.identity import UserSet
from proxy.policy.account import AccountState

DAY = 86400.0

# Recording the last success is coalesced: at most one write per account this often. An account
# whose recorded last success is older than the inactivity limit is disabled only once this much
# more has passed, so the coalescing can delay a disable by up to an hour, never bring it early.
COALESCE_SECONDS = 3600.0


class PPolicy:
    """Error values of the password policy response control (draft-behera) bindguard sends."""

    PASSWORD_EXPIRED = 0
    ACCOUNT_LOCKED = 1
    CHANGE_AFTER_RESET = 2
    INSUFFICIENT_QUALITY = 5
    TOO_SHORT = 6
    TOO_YOUNG = 7
    IN_HISTORY = 8


@dataclass(frozen=True)
class PasswordRules:
    """The password and inactivity settings of ``[security_compliance]``."""

    expires_days: int | None = None
    expires_ignore: UserSet = UserSet()
    warning_days: int = 14
    regex: str | None = None
    regex_description: str | None = None
    min_length: int = 0
    min_classes: int = 0
    history_count: int = 0
    min_age_days: int = 0
    change_on_first_use: bool = False
    inactive_days: int | None = None

    @classmethod
    def from_config(cls, whole: Config) -> PasswordRules:
        """The rules of the configuration's ``[security_compliance]`` section."""
        config = whole.compliance
        return cls(
            expires_days=config.password_expires_days,
            expires_ignore=UserSet.from_items(whole, config.password_expires_ignore_user_ids),
            warning_days=config.password_expiry_warning_days,
            regex=config.password_regex,
            regex_description=config.password_regex_description,
            min_length=config.password_min_length,
            min_classes=config.password_min_character_classes,
            history_count=config.unique_last_password_count,
            min_age_days=config.minimum_password_age,
            change_on_first_use=config.change_password_upon_first_use,
            inactive_days=config.disable_user_account_days_inactive,
        )


@dataclass(frozen=True)
class Violation:
    """Why a new password is refused: the rule (its option name) and what to tell the user."""

    rule: str
    message: str
    ppolicy: int


# -- quality ----------------------------------------------------------------------------------


def character_classes(password: str) -> int:
    """How many of lower case, upper case, digit and other the password uses."""
    return (any(c.islower() for c in password) + any(c.isupper() for c in password)
            + any(c.isdigit() for c in password)
            + any(not (c.islower() or c.isupper() or c.isdigit()) for c in password))


def check_quality(rules: PasswordRules, password: str) -> Violation | None:
    """The first quality rule the password breaks, or None."""
    if len(password) < rules.min_length:
        return Violation("password_min_length",
                         f"password_min_length: at least {rules.min_length} characters",
                         PPolicy.TOO_SHORT)
    if character_classes(password) < rules.min_classes:
        return Violation("password_min_character_classes",
                         f"password_min_character_classes: at least {rules.min_classes} of "
                         "lower case, upper case, digits and other characters",
                         PPolicy.INSUFFICIENT_QUALITY)
    if rules.regex is not None and re.search(rules.regex, password) is None:
        return Violation("password_regex",
                         rules.regex_description or "password_regex: the password does not "
                         "have the required form", PPolicy.INSUFFICIENT_QUALITY)
    return None


# -- age, history, recording a change ----------------------------------------------------------


def last_change(state: AccountState) -> float | None:
    """When the password last changed, as far as anyone recorded it."""
    known = [t for t in (state.password_changed_at, state.directory_changed_at) if t is not None]
    return max(known) if known else None


def check_age(rules: PasswordRules, state: AccountState, now: float,
              by_self: bool) -> Violation | None:
    """Keystone's minimum_password_age: users wait; an administrator's change is exempt.

    As in Keystone, only a password its owner chose has a minimum age: one an administrator
    set, or one that must be changed now, may be changed at once.
    """
    changed = last_change(state)
    if not by_self or not rules.min_age_days or changed is None:
        return None
    if must_change(rules, state):
        return None
    if state.password_changed_by == "admin" and state.password_changed_at == changed:
        return None
    if now - changed < rules.min_age_days * DAY:
        days = rules.min_age_days
        return Violation("minimum_password_age",
                         f"minimum_password_age: the password can be changed {days} "
                         f"day{'s' if days != 1 else ''} after its last change",
                         PPolicy.TOO_YOUNG)
    return None


HISTORY_VIOLATION = Violation("unique_last_password_count",
                              "unique_last_password_count: the password was used recently",
                              PPolicy.IN_HISTORY)


def history_to_check(rules: PasswordRules, state: AccountState) -> tuple[str, ...]:
    """The hashes a new password must not match: the last N passwords, the current included."""
    return state.history[:rules.history_count]


def record_change(rules: PasswordRules, state: AccountState, now: float, by_self: bool,
                  new_hash: str | None, current_hash: str | None) -> AccountState:
    """A change the directory accepted.

    ``new_hash`` is the new password's argon2id hash (None when history is off);
    ``current_hash`` the replaced password's, added first when the history does not have it.
    An administrator's change must be changed at next use when change_password_upon_first_use.
    """
    history = state.history
    if current_hash is not None and not history:
        history = (current_hash,)
    if new_hash is not None:
        history = (new_hash,) + history
    must_change = "admin_reset" if (not by_self and rules.change_on_first_use) else None
    return replace(state, history=history[:rules.history_count], password_changed_at=now,
                   password_changed_by="self" if by_self else "admin", must_change=must_change)


def expire_now(state: AccountState) -> AccountState:
    """``bindguard expire``: the password must be changed at the next login."""
    return replace(state, must_change="expire")


# -- expiry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expiry:
    """A password's standing at one moment."""

    expires_at: float | None  # None: never
    expired: bool
    warn_seconds: int | None  # seconds left when within the warning window


def expiry(rules: PasswordRules, state: AccountState, dn: str, now: float) -> Expiry:
    """When the password expires: from its last recorded change, else first sight, never 0."""
    if rules.expires_days is None or dn in rules.expires_ignore:
        return Expiry(None, False, None)
    base = last_change(state)
    if base is None:
        base = state.first_seen_at if state.first_seen_at is not None else now
    ends = base + rules.expires_days * DAY
    if now >= ends:
        return Expiry(ends, True, None)
    left = ends - now
    warn = int(left) if left <= rules.warning_days * DAY else None
    return Expiry(ends, False, warn)


def must_change(rules: PasswordRules, state: AccountState) -> bool:
    """Whether a successful login may only change the password."""
    if state.must_change is None:
        return False
    # An administrator's reset counts only while change_password_upon_first_use is on;
    # `bindguard expire` always counts.
    return state.must_change == "expire" or rules.change_on_first_use


def with_directory_record(rules: PasswordRules, state: AccountState,
                          changed_at: float | None, reset: bool) -> AccountState:
    """Fold in what the directory says: its last password change and its reset flag."""
    if changed_at is not None and changed_at != state.directory_changed_at:
        state = replace(state, directory_changed_at=changed_at)
    if reset and rules.change_on_first_use and state.must_change is None:
        state = replace(state, must_change="directory_reset")
    elif not reset and state.must_change == "directory_reset":
        state = replace(state, must_change=None)  # changed directly in the directory
    return state


# -- inactivity -------------------------------------------------------------------------------


def active_since(state: AccountState) -> float | None:
    """The start of the current inactivity count: last success, re-enable or first sight."""
    known = [t for t in (state.last_success_at, state.enabled_at, state.first_seen_at)
             if t is not None]
    return max(known) if known else None


def check_inactive(rules: PasswordRules, state: AccountState,
                   now: float) -> tuple[AccountState, bool, bool]:
    """Keystone's disable_user_account_days_inactive: (state, disabled, newly disabled).

    Accounts never seen before start counting now (the caller has set first_seen_at), so
    turning the option on disables nobody at once. The decision is kept in ``disabled_at``
    until ``bindguard enable``.
    """
    if rules.inactive_days is None:
        return state, False, False
    if state.disabled_at is not None:
        return state, True, False
    since = active_since(state)
    if since is None:
        return state, False, False
    slack = COALESCE_SECONDS if since == state.last_success_at else 0.0
    if now >= since + rules.inactive_days * DAY + slack:
        return replace(state, disabled_at=now), True, True
    return state, False, False


def enable(state: AccountState, now: float) -> AccountState:
    """``bindguard enable``: not disabled, and the inactivity count starts again now."""
    return replace(state, disabled_at=None, enabled_at=now)


def success_is_news(state: AccountState, now: float) -> bool:
    """Whether a success must be written: coalesced to once per account per COALESCE_SECONDS."""
    return state.last_success_at is None or now - state.last_success_at >= COALESCE_SECONDS
