"""The TOTP second factor as pure functions with an explicit ``now``: splitting the code off the
password, the time window, replay, backup codes, who must give a code, and the admission
change that puts them in order (locked, disabled, second factor, reservation)."""
from __future__ import annotations

import os
from dataclasses import replace

import pyotp
import pytest

from proxy.config import parse_config
from proxy.identity import canonical_dn
from proxy.policy import otp
from proxy.policy.account import AccountState
from proxy.policy.lockout import Admission, LockoutRules
from proxy.policy.otp import USED, CodeCheck, Kind, OtpRules
from proxy.policy.password import PasswordRules
from proxy.sealed import SecretBox
from proxy.transitions import Admitted, Backup, Refusal, admit

T0 = 1_800_000_000.0  # a multiple of 30: a step boundary
NOW = T0 + 10.0  # inside step T0 / 30
STEP = int(NOW // 30)
LEASE = NOW + 30.0
SECRET = pyotp.random_base32()
ALICE = "uid=alice,ou=people,dc=example,dc=org"
BOB = "uid=bob,ou=people,dc=example,dc=org"


def code_at(step: int, secret: str = SECRET) -> str:
    """The TOTP code of ``secret`` for time step ``step``."""
    return pyotp.TOTP(secret).generate_otp(step)


def wrong_code(*steps: int) -> str:
    """A 6-digit code that is none of the codes of ``steps`` and their neighbours."""
    taken = {code_at(s + d) for s in steps for d in (-1, 0, 1)}
    return next(c for c in (f"{n:06d}" for n in range(0, 1_000_000, 7919)) if c not in taken)


# -- split ------------------------------------------------------------------------------------


@pytest.mark.parametrize("given,password,kind,code,index", [
    ("alicepw123456", "alicepw", Kind.TOTP, "123456", None),
    ("alice2024123456", "alice2024", Kind.TOTP, "123456", None),  # a password ending in digits
    ("pw1234567", "pw1", Kind.TOTP, "234567", None),  # exactly the last 6 digits are the code
    ("pw 000000", "pw ", Kind.TOTP, "000000", None),
    ("alicepw3-k7mq-x2rd", "alicepw", Kind.BACKUP, "3-k7mq-x2rd", 3),
    ("alicepw0-abcd-efgh", "alicepw", Kind.BACKUP, "0-abcd-efgh", 0),
    ("pw13-abcd-ef29", "pw1", Kind.BACKUP, "3-abcd-ef29", 3),  # the password ends in a digit
    ("alicepw12345", "alicepw12345", Kind.NONE, "", None),  # 5 digits: no code
    ("alicepw", "alicepw", Kind.NONE, "", None),
    ("", "", Kind.NONE, "", None),
    ("123456", "123456", Kind.NONE, "", None),  # only a code: no password part
    ("3-k7mq-x2rd", "3-k7mq-x2rd", Kind.NONE, "", None),  # only a backup code
    ("pw123456\n", "pw123456\n", Kind.NONE, "", None),  # nothing may follow the code
    ("pw\u0661\u0662\u0663\u0664\u0665\u0666", "pw\u0661\u0662\u0663\u0664\u0665\u0666",
     Kind.NONE, "", None),  # Arabic-Indic digits are not a code
    ("pw\uff11\uff12\uff13\uff14\uff15\uff16", "pw\uff11\uff12\uff13\uff14\uff15\uff16",
     Kind.NONE, "", None),  # nor are full-width digits
    ("pw3-K7MQ-X2RD", "pw3-K7MQ-X2RD", Kind.NONE, "", None),  # backup codes are lower case
    ("pw3-k1mq-x2rd", "pw3-k1mq-x2rd", Kind.NONE, "", None),  # no look-alike 1 in a code
    ("pw3-k7mq-x2r", "pw3-k7mq-x2r", Kind.NONE, "", None),  # too short
])
def test_split(given: str, password: str, kind: Kind, code: str, index: int | None) -> None:
    """Exactly 6 trailing ASCII digits are a TOTP code and ``N-xxxx-xxxx`` a backup code with
    its index, each only after a non-empty password; anything else is no code at all."""
    split = otp.split(given)
    assert (split.password, split.kind, split.code, split.backup_index) == (
        password, kind, code, index)


def test_split_repr_shows_neither_password_nor_code() -> None:
    """A Split's repr never shows the password or the code."""
    text = repr(otp.split("Secret-Pass987654")) + repr(otp.split("Secret-Pass3-k7mq-x2rd"))
    assert "Secret-Pass" not in text and "987654" not in text and "k7mq" not in text


# -- check_totp -------------------------------------------------------------------------------


@pytest.mark.parametrize("offset,accepted", [
    (-3, False), (-2, False), (-1, True), (0, True), (1, True), (2, False), (3, False),
])
def test_window_is_one_step_either_side(offset: int, accepted: bool) -> None:
    """The current, previous and next step's codes are accepted; further ones are refused."""
    checked, step = otp.check_totp(SECRET, code_at(STEP + offset), None, NOW)
    if accepted:
        assert (checked, step) == (CodeCheck.OK, STEP + offset)
    else:
        assert (checked, step) == (CodeCheck.INVALID, None)


@pytest.mark.parametrize("now,step,accepted", [
    (T0 - 0.001, int(T0 // 30), True),  # just before a boundary the next step is accepted
    (T0 - 0.001, int(T0 // 30) + 1, False),
    (T0, int(T0 // 30) - 1, True),  # at the boundary the previous step still is
    (T0, int(T0 // 30) - 2, False),
])
def test_window_at_a_step_boundary(now: float, step: int, accepted: bool) -> None:
    """Steps are counted from ``now``, not read from a clock."""
    checked, _ = otp.check_totp(SECRET, code_at(step), None, now)
    assert (checked is CodeCheck.OK) is accepted


def test_wrong_code_is_invalid() -> None:
    """A code of no step in the window is invalid."""
    assert otp.check_totp(SECRET, wrong_code(STEP), None, NOW) == (CodeCheck.INVALID, None)


def test_another_secrets_code_is_invalid() -> None:
    """The current code of another secret is invalid."""
    other = pyotp.random_base32()
    code = code_at(STEP, other)
    if code in {code_at(STEP + d) for d in (-1, 0, 1)}:
        pytest.skip("the two secrets agree by chance")
    assert otp.check_totp(SECRET, code, None, NOW) == (CodeCheck.INVALID, None)


def test_replay_of_the_same_step_is_refused() -> None:
    """A code whose step was already accepted is a replay."""
    checked, step = otp.check_totp(SECRET, code_at(STEP), None, NOW)
    assert checked is CodeCheck.OK
    assert otp.check_totp(SECRET, code_at(STEP), step, NOW + 5) == (CodeCheck.REPLAYED, None)


def test_earlier_step_after_a_later_one_is_refused() -> None:
    """Once the next step's code was accepted, the current step's code is a replay too."""
    _, later = otp.check_totp(SECRET, code_at(STEP + 1), None, NOW)
    assert later == STEP + 1
    assert otp.check_totp(SECRET, code_at(STEP), later, NOW) == (CodeCheck.REPLAYED, None)
    assert otp.check_totp(SECRET, code_at(STEP - 1), later, NOW) == (CodeCheck.REPLAYED, None)


def test_later_step_after_an_earlier_one_is_accepted() -> None:
    """A code of a step after the last accepted one is accepted."""
    assert otp.check_totp(SECRET, code_at(STEP + 1), STEP, NOW) == (CodeCheck.OK, STEP + 1)
    assert otp.check_totp(SECRET, code_at(STEP), STEP - 1, NOW) == (CodeCheck.OK, STEP)


def test_accept_totp_remembers_the_step() -> None:
    """An accepted code's step is kept in the state."""
    assert otp.accept_totp(AccountState(), STEP).otp_last_step == STEP


# -- backup codes and enrolment ----------------------------------------------------------------

HASHES = tuple(f"$argon2id$hash-{i}" for i in range(10))


def enrolled(sealed: str = "v1:sealed", backup: tuple[str, ...] = HASHES) -> AccountState:
    state = otp.enrol(AccountState(), sealed, T0)
    result = otp.set_backup_codes(state, backup)
    assert result is not None
    return result


def test_backup_code_is_used_once() -> None:
    """A backup code is consumed once; the same code again finds no unused hash."""
    state = enrolled()
    assert otp.backup_hash(state, 3) == HASHES[3]
    used = otp.consume_backup(state, 3, HASHES[3])
    assert used is not None
    assert used.otp_backup[3] == USED
    assert used.otp_backup[:3] + used.otp_backup[4:] == HASHES[:3] + HASHES[4:]
    assert otp.backup_hash(used, 3) is None
    assert otp.consume_backup(used, 3, HASHES[3]) is None
    assert (otp.backup_left(state), otp.backup_left(used)) == (10, 9)


def test_backup_code_replaced_meanwhile_is_not_consumed() -> None:
    """A code checked against a hash that new backup codes replaced does not count."""
    state = enrolled()
    renewed = otp.set_backup_codes(state, tuple(f"new-{i}" for i in range(10)))
    assert renewed is not None
    assert otp.consume_backup(renewed, 3, HASHES[3]) is None


@pytest.mark.parametrize("index", [10, 11, 99])
def test_backup_index_beyond_the_list_has_no_hash(index: int) -> None:
    """An index past the list has no hash (and no exception)."""
    assert otp.backup_hash(enrolled(), index) is None
    assert otp.consume_backup(enrolled(), index, "x") is None


def test_no_backup_codes_without_enrolment() -> None:
    """Backup codes need an enrolled secret."""
    assert otp.set_backup_codes(AccountState(), HASHES) is None
    assert otp.backup_hash(AccountState(), 0) is None


def test_enrol_voids_earlier_codes_and_remove_forgets_everything() -> None:
    """A new secret forgets the last step and the backup codes; removal forgets the secret."""
    state = replace(enrolled(), otp_last_step=STEP)
    again = otp.enrol(state, "v1:other", NOW)
    assert (again.otp_secret, again.otp_last_step, again.otp_backup, again.otp_enrolled_at) == (
        "v1:other", None, (), NOW)
    gone = otp.remove(state)
    assert (gone.otp_secret, gone.otp_last_step, gone.otp_backup, gone.otp_enrolled_at) == (
        None, None, (), None)
    assert not otp.enrolled(gone) and otp.enrolled(again)


# -- who must give a second factor --------------------------------------------------------------

BASE = "[proxy]\nupstream = ldap://dir.example.org\nallow_sasl = false\n"
TEMPLATE = "[directory]\nuser_dn_template = uid={user},ou=people,dc=example,dc=org\n"
EXEMPT = """[security_compliance]
enforce_2fa = true
2fa_exempt = svc-backup, Svc-Monitor
    cn=Reporter, dc=Example,dc=org
    OU=Services,DC=example,DC=org
"""


def rules_of(text: str) -> OtpRules:
    return OtpRules.from_config(parse_config(text))


def test_enrolled_user_must_give_a_code_without_enforcement() -> None:
    """Without enforce_2fa, exactly the enrolled users must give a code."""
    rules = rules_of(BASE)
    assert rules.enforce is False
    assert otp.required(rules, enrolled(), ALICE)
    assert not otp.required(rules, AccountState(), ALICE)


@pytest.mark.parametrize("dn,exempt", [
    ("uid=svc-backup,ou=people,dc=example,dc=org", True),  # a name, through the template
    ("uid=svc-monitor,ou=people,dc=example,dc=org", True),  # names are matched lower case
    ("uid=svc-backup,ou=other,dc=example,dc=org", False),  # the template names one DN
    ("uid=alice,ou=people,dc=example,dc=org", False),
    ("cn=reporter,dc=example,dc=org", True),  # a DN, however it was spelled
    ("ou=services,dc=example,dc=org", True),  # a subtree covers its base
    ("uid=app,ou=services,dc=example,dc=org", True),  # ... and everything below
    ("cn=job,uid=app,ou=services,dc=example,dc=org", True),
    ("dc=example,dc=org", False),  # not the subtree's parent
    ("uid=app,ou=services2,dc=example,dc=org", False),  # nor a sibling with a longer name
    ("uid=app,ou=xservices,dc=example,dc=org", False),  # nor one ending with the same text
    ("uid=app,ou=services,dc=example,dc=net", False),
    # An RDN value holding an escaped comma: this entry lies in dc=example,dc=org, not below
    # ou=services, although its DN ends with the text ",ou=services,dc=example,dc=org".
    (r"uid=app,cn=x\,ou=services,dc=example,dc=org", False),
])
def test_exempt_names_dns_and_subtrees(dn: str, exempt: bool) -> None:
    """Under enforce_2fa, 2fa_exempt names (mapped by user_dn_template), DNs and subtrees
    need no code; an exempt user who enrolled anyway still gives one."""
    rules = rules_of(BASE + TEMPLATE + EXEMPT)
    key = canonical_dn(dn)
    assert otp.required(rules, AccountState(), key) is not exempt
    assert otp.required(rules, enrolled(), key)


def test_exempt_names_without_a_template_match_the_first_rdn() -> None:
    """Without user_dn_template a name matches the first RDN's value, wherever the entry is."""
    rules = rules_of(BASE + EXEMPT)
    assert not otp.required(rules, AccountState(), "uid=svc-backup,ou=other,dc=example,dc=org")
    assert otp.required(rules, AccountState(), ALICE)


def test_enforcement_requires_a_code_of_everyone_not_exempt() -> None:
    """enforce_2fa without exemptions: every account needs a second factor."""
    rules = rules_of(BASE + "[security_compliance]\nenforce_2fa = true\n")
    assert otp.required(rules, AccountState(), ALICE)
    assert otp.required(rules, AccountState(), "cn=admin,dc=example,dc=org")


# -- admission: locked, disabled, second factor, reservation ------------------------------------

LOCKOUT = LockoutRules(attempts=3, duration=600, window=0)
PASSWORDS = PasswordRules()
OFF = OtpRules()
ENFORCE = OtpRules(enforce=True)
BOX = SecretBox(os.urandom(32))


def alice(box: SecretBox = BOX, dn: str = ALICE, **changes: object) -> AccountState:
    """Alice enrolled with SECRET sealed by ``box`` for ``dn``, with backup codes."""
    return replace(enrolled(box.seal(dn, SECRET)), first_seen_at=T0, **changes)  # type: ignore


def run(state: AccountState, given: str | None, backup: Backup | None = None,
        rules: OtpRules = OFF, box: SecretBox | None = BOX, now: float = NOW,
        passwords: PasswordRules = PASSWORDS) -> tuple[AccountState, Admitted]:
    change = admit(LOCKOUT, passwords, rules, box, ALICE,
                   otp.split(given) if given is not None else None, backup, now, now + 30)
    return change(state)


def test_right_code_is_admitted_with_a_reservation() -> None:
    """The right code: ALLOW, the attempt's lease reserved, the code's step remembered."""
    state, outcome = run(alice(), "pw" + code_at(STEP))
    assert outcome.admission is Admission.ALLOW
    assert state.pending == (LEASE,) and state.otp_last_step == STEP
    assert state.failures == () and outcome.state == state and outcome.backup_left is None


def test_the_same_code_again_is_a_replay_and_counts() -> None:
    """The same code a second time is refused as a replay and counts as a failure."""
    state, _ = run(alice(), "pw" + code_at(STEP))
    state, outcome = run(state, "pw" + code_at(STEP), now=NOW + 1)
    assert outcome.admission is Refusal.OTP_REPLAYED
    assert state.failures == (NOW + 1,) and state.pending == (LEASE,)


def test_wrong_code_counts_a_failure() -> None:
    """A wrong code: OTP_INVALID, one failure counted, no reservation, no step used."""
    state, outcome = run(alice(), "pw" + wrong_code(STEP))
    assert outcome.admission is Refusal.OTP_INVALID and not outcome.locked
    assert state.failures == (NOW,) and state.pending == () and state.otp_last_step is None
    assert outcome.state == state


def test_wrong_codes_lock_at_the_threshold() -> None:
    """The wrong code that reaches lockout_failure_attempts locks the account."""
    state, outcome = run(alice(failures=(NOW - 2, NOW - 1)), "pw" + wrong_code(STEP))
    assert outcome.admission is Refusal.OTP_INVALID and outcome.locked is True
    assert state.locked_at == NOW and state.failures == ()
    state, outcome = run(state, "pw" + code_at(STEP), now=NOW + 1)
    assert outcome.admission is Refusal.LOCKED
    assert state.otp_last_step is None  # the right code is not used up by a locked attempt


def test_missing_code_is_refused_and_counts() -> None:
    """An enrolled user's password without a code: OTP_MISSING, counted like a wrong code."""
    state, outcome = run(alice(), "alicepw")
    assert outcome.admission is Refusal.OTP_MISSING
    assert state.failures == (NOW,) and state.pending == ()


def test_only_a_code_is_a_missing_code() -> None:
    """Six digits and nothing else have no password part: no code was given."""
    _, outcome = run(alice(), code_at(STEP))
    assert outcome.admission is Refusal.OTP_MISSING


def test_not_enrolled_under_enforcement_is_refused_without_counting() -> None:
    """enforce_2fa and no secret: OTP_NOT_ENROLLED; nothing counted, nothing reserved."""
    start = AccountState(first_seen_at=T0)
    state, outcome = run(start, "pw" + code_at(STEP), rules=ENFORCE)
    assert outcome.admission is Refusal.OTP_NOT_ENROLLED
    assert (state.failures, state.pending) == ((), ())


def test_exempt_user_under_enforcement_is_admitted_without_a_code() -> None:
    """An exempt, unenrolled account under enforcement is admitted on its password alone."""
    rules = OtpRules(enforce=True, exempt=rules_of(BASE + TEMPLATE + EXEMPT).exempt)
    change = admit(LOCKOUT, PASSWORDS, rules, BOX, "uid=app,ou=services,dc=example,dc=org",
                   otp.split("app-password"), None, NOW, LEASE)
    state, outcome = change(AccountState())
    assert outcome.admission is Admission.ALLOW and state.pending == (LEASE,)


def test_unenrolled_user_without_enforcement_keeps_trailing_digits() -> None:
    """Not enrolled, not enforced: admitted, and nothing is taken for a code."""
    state, outcome = run(AccountState(), "pw" + code_at(STEP))
    assert outcome.admission is Admission.ALLOW and state.otp_last_step is None


@pytest.mark.parametrize("failures,pending", [(0, 3), (2, 1), (1, 2)])
def test_busy_keeps_the_code_for_the_retry(failures: int, pending: int) -> None:
    """When failures and attempts in flight fill every place, the attempt waits (BUSY)
    without using up its code or counting anything; the retry with it is admitted."""
    start = alice(failures=(NOW - 5,) * failures, pending=(NOW + 20,) * pending)
    state, outcome = run(start, "pw" + code_at(STEP))
    assert outcome.admission is Admission.BUSY
    assert state.otp_last_step is None and state.failures == start.failures
    assert state.pending == start.pending
    freed = replace(state, pending=state.pending[1:])  # one attempt in flight finished
    state, outcome = run(freed, "pw" + code_at(STEP), now=NOW + 1)
    assert outcome.admission is Admission.ALLOW and state.otp_last_step == STEP


def test_busy_keeps_a_backup_code_for_the_retry() -> None:
    """A backup code is not consumed by an attempt that must wait."""
    state, outcome = run(alice(pending=(NOW + 20,) * 3), "pw3-abcd-efgh",
                         Backup(3, HASHES[3], True))
    assert outcome.admission is Admission.BUSY and state.otp_backup == HASHES


@pytest.mark.parametrize("sealed_by,sealed_for,opened_by", [
    (SecretBox(os.urandom(32)), ALICE, BOX),  # another key file
    (BOX, BOB, BOX),  # sealed for another account and copied onto alice
    (BOX, ALICE, None),  # no key file at all
])
def test_unreadable_secret_is_refused_without_counting(
        sealed_by: SecretBox, sealed_for: str, opened_by: SecretBox | None) -> None:
    """A secret that does not open: OTP_UNREADABLE, nothing counted (not the user's fault)."""
    state, outcome = run(alice(sealed_by, sealed_for), "pw" + code_at(STEP), box=opened_by)
    assert outcome.admission is Refusal.OTP_UNREADABLE and not outcome.locked
    assert (state.failures, state.pending, state.otp_last_step) == ((), (), None)


def test_backup_code_is_admitted_once() -> None:
    """A verified backup code admits the attempt and is used up; the same code again is
    refused and counted."""
    state, outcome = run(alice(), "pw3-abcd-efgh", Backup(3, HASHES[3], True))
    assert outcome.admission is Admission.ALLOW and outcome.backup_left == 9
    assert state.otp_backup[3] == USED and state.pending == (LEASE,)
    state, outcome = run(state, "pw3-abcd-efgh", Backup(3, HASHES[3], True), now=NOW + 1)
    assert outcome.admission is Refusal.OTP_INVALID
    assert state.failures == (NOW + 1,)


def test_backup_code_checked_against_a_replaced_hash_is_refused() -> None:
    """A code verified against a hash that new backup codes replaced meanwhile is refused."""
    start = alice()
    start = replace(start, otp_backup=tuple(f"new-{i}" for i in range(10)))
    state, outcome = run(start, "pw3-abcd-efgh", Backup(3, HASHES[3], True))
    assert outcome.admission is Refusal.OTP_INVALID
    assert state.otp_backup == start.otp_backup and state.failures == (NOW,)


@pytest.mark.parametrize("backup", [Backup(3, HASHES[3], False), Backup(3, None, False), None])
def test_wrong_backup_code_is_refused_and_counts(backup: Backup | None) -> None:
    """A backup code that did not verify (or had no unused hash) is a wrong code."""
    state, outcome = run(alice(), "pw3-abcd-efgh", backup)
    assert outcome.admission is Refusal.OTP_INVALID
    assert state.failures == (NOW,) and state.otp_backup == HASHES


def test_locked_account_is_refused_before_the_code() -> None:
    """A locked account is refused LOCKED, whatever the code; nothing of it is used."""
    state, outcome = run(alice(locked_at=NOW - 10), "pw" + code_at(STEP))
    assert outcome.admission is Refusal.LOCKED
    assert state.otp_last_step is None and state.failures == ()


def test_disabled_account_is_refused_before_the_code() -> None:
    """An account disabled for inactivity is refused DISABLED; its code is not used."""
    state, outcome = run(alice(disabled_at=T0), "pw" + code_at(STEP),
                         passwords=PasswordRules(inactive_days=30))
    assert outcome.admission is Refusal.DISABLED
    assert state.otp_last_step is None and state.failures == ()
