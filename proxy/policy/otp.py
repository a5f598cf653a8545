"""The TOTP second factor: who must give one, splitting it from the password, checking it.

Pure functions of (rules, account state, ``now``). A TOTP code (RFC 6238: 6 digits, 30 s steps)
is accepted within one step either side of ``now`` and only once: the last accepted step is
kept, and a code of that step or an earlier one is a replay. Backup codes are argon2id hashes;
the caller verifies a code against its hash off the reactor thread, and the code is consumed
here, in the same transaction that admits the attempt, only if that hash is still unused.
"""
from __future__ import annotations

import enum
import hmac
import re
from dataclasses import dataclass, field, replace

import pyotp

from proxy.config import Config
from proxy.identity import UserSet
from proxy.policy.account import AccountState

STEP_SECONDS = 30
WINDOW = 1  # steps accepted either side of the current one
DIGITS = 6
BACKUP_COUNT = 10
USED = "-"  # a consumed backup code's place in the list

_TOTP = re.compile(r"[0-9]{6}\Z")
# A backup code names its own place in the list, so one argon2 verification is enough:
# "3-k7mq-x2rd" is code number 3.
_BACKUP = re.compile(r"([0-9])-([a-z2-9]{4})-([a-z2-9]{4})\Z")


@dataclass(frozen=True)
class OtpRules:
    """The second-factor settings of ``[security_compliance]``."""

    enforce: bool = False  # enforce_2fa
    exempt: UserSet = UserSet(subtrees=True)  # 2fa_exempt: names, DNs, subtrees

    @classmethod
    def from_config(cls, whole: Config) -> OtpRules:
        """The rules of the configuration."""
        config = whole.compliance
        return cls(config.enforce_2fa,
                   UserSet.from_items(whole, config.twofa_exempt, subtrees=True))


def enrolled(state: AccountState) -> bool:
    """Whether the account has a TOTP secret."""
    return state.otp_secret is not None


def required(rules: OtpRules, state: AccountState, dn: str) -> bool:
    """Whether a login of ``dn`` must carry a second factor: an enrolled user always does."""
    return enrolled(state) or (rules.enforce and dn not in rules.exempt)


class Kind(enum.Enum):
    """What follows the password in what the user typed."""

    NONE = "none"  # no code: a missing second factor
    TOTP = "totp"
    BACKUP = "backup"


@dataclass(frozen=True)
class Split:
    """A bind password split into the password and the second factor. Never shows either."""

    password: str = field(repr=False)
    kind: Kind = Kind.NONE
    code: str = field(default="", repr=False)  # the TOTP code, or the whole backup code
    backup_index: int | None = None


def split(given: str) -> Split:
    """The password followed by a 6-digit code or a backup code (``N-xxxx-xxxx``)."""
    if len(given) > DIGITS and _TOTP.search(given):
        return Split(given[:-DIGITS], Kind.TOTP, given[-DIGITS:])
    match = _BACKUP.search(given)
    if match is not None and match.start() > 0:
        return Split(given[:match.start()], Kind.BACKUP, match.group(0), int(match.group(1)))
    return Split(given)


class CodeCheck(enum.Enum):
    """The outcome of checking a second factor."""

    OK = "ok"
    INVALID = "otp.invalid"  # wrong, too old or too new, or an unknown or used backup code
    REPLAYED = "otp.replayed"  # right, but its time step was already used
    MISSING = "otp.missing"  # no code after the password


def check_totp(secret: str, code: str, last_step: int | None,
               now: float) -> tuple[CodeCheck, int | None]:
    """Check a TOTP code against ``secret`` (base32) at ``now``; (outcome, its time step)."""
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int(now // STEP_SECONDS)
    for step in range(current - WINDOW, current + WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            if last_step is not None and step <= last_step:
                return CodeCheck.REPLAYED, None
            return CodeCheck.OK, step
    return CodeCheck.INVALID, None


def backup_hash(state: AccountState, index: int) -> str | None:
    """The unused hash at ``index`` of the account's backup codes, or None."""
    if index >= len(state.otp_backup) or state.otp_backup[index] == USED:
        return None
    return state.otp_backup[index]


def accept_totp(state: AccountState, step: int) -> AccountState:
    """Remember the step of an accepted code: it cannot be used again."""
    return replace(state, otp_last_step=step)


def consume_backup(state: AccountState, index: int, hashed: str) -> AccountState | None:
    """Use up the backup code at ``index`` if its hash is still ``hashed``; None if not."""
    if backup_hash(state, index) != hashed:
        return None
    codes = list(state.otp_backup)
    codes[index] = USED
    return replace(state, otp_backup=tuple(codes))


def enrol(state: AccountState, sealed_secret: str, now: float) -> AccountState:
    """A new secret (sealed by the caller); earlier codes and backup codes are void."""
    return replace(state, otp_secret=sealed_secret, otp_last_step=None, otp_backup=(),
                   otp_enrolled_at=now)


def set_backup_codes(state: AccountState, hashes: tuple[str, ...]) -> AccountState | None:
    """New backup codes (their hashes) replace the old; None when not enrolled."""
    if not enrolled(state):
        return None
    return replace(state, otp_backup=hashes)


def remove(state: AccountState) -> AccountState:
    """No second factor any more."""
    return replace(state, otp_secret=None, otp_last_step=None, otp_backup=(),
                   otp_enrolled_at=None)


def backup_left(state: AccountState) -> int:
    """How many backup codes are still unused."""
    return sum(1 for h in state.otp_backup if h != USED)
