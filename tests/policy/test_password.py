"""Password lifecycle and inactivity as pure functions with an explicit ``now``."""
from __future__ import annotations

from dataclasses import replace

import pytest

from proxy.config import parse_config
from proxy.identity import UserSet, canonical_dn
from proxy.policy import password as pw
from proxy.policy.account import AccountState
from proxy.policy.password import DAY, PasswordRules, PPolicy

NOW = 1_800_000_000.0
ALICE = "uid=alice,ou=people,dc=example,dc=org"


def seen(days_ago: float, **fields: object) -> AccountState:
    """An account bindguard first saw ``days_ago`` days before NOW."""
    return AccountState(first_seen_at=NOW - days_ago * DAY, **fields)  # type: ignore[arg-type]


# -- quality ----------------------------------------------------------------------------------


@pytest.mark.parametrize("password, rule, ppolicy", [
    ("Short1!", "password_min_length", PPolicy.TOO_SHORT),
    ("alllowercaseletters", "password_min_character_classes", PPolicy.INSUFFICIENT_QUALITY),
    ("lower-and-UPPER-only", "password_regex", PPolicy.INSUFFICIENT_QUALITY),
    ("Good-password-1", None, None),
])
def test_quality_rules(password: str, rule: str | None, ppolicy: int | None) -> None:
    rules = PasswordRules(min_length=12, min_classes=3, regex=r"\d",
                          regex_description="at least one digit")
    violation = pw.check_quality(rules, password)
    assert (violation.rule if violation else None) == rule
    assert (violation.ppolicy if violation else None) == ppolicy


def test_regex_refusal_says_the_description() -> None:
    rules = PasswordRules(regex=r"^(?=.*\d)(?=.*[a-zA-Z]).{7,}$",
                          regex_description="at least one letter, one digit and 7 characters")
    violation = pw.check_quality(rules, "letters")
    assert violation is not None
    assert violation.message == "at least one letter, one digit and 7 characters"
    assert pw.check_quality(rules, "letters1") is None


def test_regex_without_description_names_the_rule() -> None:
    violation = pw.check_quality(PasswordRules(regex=r"\d"), "none")
    assert violation is not None and violation.message.startswith("password_regex:")


@pytest.mark.parametrize("password, classes", [
    ("abc", 1), ("aB", 2), ("aB3", 3), ("aB3 ", 4), ("ÄÖü1", 3), ("", 0),
])
def test_character_classes(password: str, classes: int) -> None:
    assert pw.character_classes(password) == classes


def test_no_quality_rules_accept_anything() -> None:
    assert pw.check_quality(PasswordRules(), "x") is None


# -- minimum age ------------------------------------------------------------------------------


@pytest.mark.parametrize("changed_days_ago, by_self, refused", [
    (0.5, True, True),
    (0.5, False, False),  # an administrator's change is exempt (Keystone)
    (1.0, True, False),
    (None, True, False),  # no change known: nothing to wait for
])
def test_minimum_age(changed_days_ago: float | None, by_self: bool, refused: bool) -> None:
    rules = PasswordRules(min_age_days=1)
    changed = None if changed_days_ago is None else NOW - changed_days_ago * DAY
    state = seen(30, password_changed_at=changed)
    violation = pw.check_age(rules, state, NOW, by_self)
    assert (violation is not None) == refused
    if violation:
        assert violation.ppolicy == PPolicy.TOO_YOUNG and violation.rule == "minimum_password_age"


def test_minimum_age_counts_from_the_directory_record_too() -> None:
    rules = PasswordRules(min_age_days=2)
    state = seen(30, directory_changed_at=NOW - DAY)
    assert pw.check_age(rules, state, NOW, True) is not None


@pytest.mark.parametrize("changed_by, must_change, first_use, refused", [
    ("self", None, False, True),
    ("admin", None, False, False),  # a password the administrator set may be changed at once
    ("admin", "admin_reset", True, False),
    ("self", "expire", False, False),  # `bindguard expire` right after an own change
    ("self", "directory_reset", True, False),
    ("self", "directory_reset", False, True),  # a reset flag that does not count
])
def test_minimum_age_only_binds_a_password_its_owner_chose(
        changed_by: str, must_change: str | None, first_use: bool, refused: bool) -> None:
    """As in Keystone, the minimum age applies to a password its owner set; a password set
    by an administrator, or one that must change now, can be changed at once."""
    rules = PasswordRules(min_age_days=1, change_on_first_use=first_use)
    state = seen(30, password_changed_at=NOW - 60, password_changed_by=changed_by,
                 must_change=must_change)
    assert (pw.check_age(rules, state, NOW, True) is not None) == refused


def test_minimum_age_zero_is_off() -> None:
    state = seen(30, password_changed_at=NOW - 1)
    assert pw.check_age(PasswordRules(), state, NOW, True) is None


# -- history ----------------------------------------------------------------------------------


@pytest.mark.parametrize("count, expected", [
    (0, ()),
    (1, ("h3",)),  # the current password only
    (3, ("h3", "h2", "h1")),
    (5, ("h3", "h2", "h1")),
])
def test_history_to_check_includes_the_current_password(count: int,
                                                        expected: tuple[str, ...]) -> None:
    state = seen(10, history=("h3", "h2", "h1"))
    assert pw.history_to_check(PasswordRules(history_count=count), state) == expected


@pytest.mark.parametrize("count, history, current_hash, expected", [
    (0, (), "cur", ()),
    (1, ("h1",), None, ("new",)),
    (3, ("h2", "h1"), None, ("new", "h2", "h1")),
    (3, ("h3", "h2", "h1"), None, ("new", "h3", "h2")),
    (3, (), "cur", ("new", "cur")),  # first change seen: the replaced password joins
    (3, ("h1",), "cur", ("new", "h1")),  # only when the history is empty
])
def test_record_change_keeps_the_last_n(count: int, history: tuple[str, ...],
                                        current_hash: str | None,
                                        expected: tuple[str, ...]) -> None:
    rules = PasswordRules(history_count=count)
    state = pw.record_change(rules, seen(10, history=history), NOW, True,
                             "new" if count else None, current_hash)
    assert state.history == expected
    assert state.password_changed_at == NOW and state.password_changed_by == "self"


def test_history_never_appears_in_a_repr() -> None:
    assert "argon2" not in repr(seen(1, history=("$argon2id$v=19$secret",)))


# -- must change ------------------------------------------------------------------------------


@pytest.mark.parametrize("first_use, by_self, must", [
    (True, False, True),
    (True, True, False),
    (False, False, False),
])
def test_first_use_after_an_administrator_sets_the_password(first_use: bool, by_self: bool,
                                                            must: bool) -> None:
    rules = PasswordRules(change_on_first_use=first_use)
    state = pw.record_change(rules, seen(1), NOW, by_self, None, None)
    assert pw.must_change(rules, state) is must


def test_own_change_clears_must_change() -> None:
    rules = PasswordRules(change_on_first_use=True)
    state = seen(1, must_change="admin_reset")
    assert pw.must_change(rules, state)
    assert not pw.must_change(rules, pw.record_change(rules, state, NOW, True, None, None))


def test_expire_by_hand_counts_even_without_first_use() -> None:
    rules = PasswordRules()
    assert pw.must_change(rules, pw.expire_now(seen(1)))


@pytest.mark.parametrize("first_use, reset, must", [(True, True, True), (False, True, False),
                                                     (True, False, False)])
def test_directory_reset_flag(first_use: bool, reset: bool, must: bool) -> None:
    rules = PasswordRules(change_on_first_use=first_use)
    state = pw.with_directory_record(rules, seen(1), None, reset)
    assert pw.must_change(rules, state) is must


def test_directory_reset_cleared_when_the_directory_clears_it() -> None:
    rules = PasswordRules(change_on_first_use=True)
    state = pw.with_directory_record(rules, seen(1), None, True)
    state = pw.with_directory_record(rules, state, NOW, False)
    assert not pw.must_change(rules, state) and state.directory_changed_at == NOW


# -- expiry -----------------------------------------------------------------------------------


def test_expiry_off() -> None:
    standing = pw.expiry(PasswordRules(), seen(1000), ALICE, NOW)
    assert standing == pw.Expiry(None, False, None)


@pytest.mark.parametrize("state, expired, warn", [
    (seen(100, password_changed_at=NOW - 91 * DAY), True, None),
    (seen(100, password_changed_at=NOW - 89 * DAY), False, int(DAY)),
    (seen(100, password_changed_at=NOW - 10 * DAY), False, None),
    (seen(100, directory_changed_at=NOW - 95 * DAY), True, None),
    # both known: the later change counts
    (seen(100, password_changed_at=NOW - 95 * DAY, directory_changed_at=NOW - DAY), False,
     None),
    # nothing known: counted from first sight, never expired at once on rollout
    (seen(0), False, None),
    (seen(80), False, int(10 * DAY)),
    (seen(90), True, None),
    (AccountState(), False, None),
])
def test_expiry(state: AccountState, expired: bool, warn: int | None) -> None:
    rules = PasswordRules(expires_days=90, warning_days=14)
    standing = pw.expiry(rules, state, ALICE, NOW)
    assert standing.expired is expired
    assert standing.warn_seconds == warn


def test_warning_window_zero_never_warns() -> None:
    rules = PasswordRules(expires_days=90, warning_days=0)
    assert pw.expiry(rules, seen(89.9), ALICE, NOW).warn_seconds is None


def test_ignore_list_by_name_and_dn() -> None:
    config = parse_config("""
[proxy]
upstream = ldap://127.0.0.1
[directory]
user_dn_template = uid={user},ou=people,dc=example,dc=org
[security_compliance]
password_expires_days = 90
password_expires_ignore_user_ids = svc-backup, svc-monitor
    UID=svc-app, OU=services,dc=example,dc=org
""")
    rules = PasswordRules.from_config(config)
    old = seen(1000)
    for dn in ("uid=svc-backup,ou=people,dc=example,dc=org",
               "uid=svc-app,ou=services,dc=example,dc=org"):
        assert not pw.expiry(rules, old, canonical_dn(dn), NOW).expired
    assert pw.expiry(rules, old, ALICE, NOW).expired


def test_ignore_list_names_without_template_match_the_first_rdn() -> None:
    users = UserSet(names=frozenset({"svc-backup"}))
    assert "uid=svc-backup,ou=services,dc=example,dc=org" in users
    assert "uid=alice,ou=people,dc=example,dc=org" not in users


# -- inactivity -------------------------------------------------------------------------------


@pytest.mark.parametrize("state, disabled", [
    (seen(0), False),  # never seen before: starts counting now (Keystone's lesson)
    (seen(200, last_success_at=NOW - 89 * DAY), False),
    (seen(200, last_success_at=NOW - 91 * DAY), True),
    (seen(91), True),  # seen but never a success since
    (seen(200, last_success_at=NOW - 95 * DAY, enabled_at=NOW - DAY), False),
    (seen(200, last_success_at=NOW - 95 * DAY, enabled_at=NOW - 91 * DAY), True),
])
def test_inactivity(state: AccountState, disabled: bool) -> None:
    rules = PasswordRules(inactive_days=90)
    new, is_disabled, newly = pw.check_inactive(rules, state, NOW)
    assert is_disabled is disabled and newly is disabled
    assert (new.disabled_at == NOW) is disabled


def test_inactivity_off() -> None:
    assert pw.check_inactive(PasswordRules(), seen(1000), NOW)[1] is False


def test_disabled_stays_disabled_until_enabled() -> None:
    rules = PasswordRules(inactive_days=90)
    state, _, newly = pw.check_inactive(rules, seen(100), NOW)
    assert newly
    _, disabled, newly = pw.check_inactive(rules, state, NOW + 1)
    assert disabled and not newly
    enabled = pw.enable(state, NOW + 2)
    assert pw.check_inactive(rules, enabled, NOW + 3)[1] is False
    assert pw.check_inactive(rules, enabled, NOW + 2 + 90 * DAY)[1] is True


def test_coalesced_success_never_disables_early() -> None:
    """The recorded last success may be an hour old: the disable waits for that hour."""
    rules = PasswordRules(inactive_days=90)
    state = seen(200, last_success_at=NOW - 90 * DAY)
    assert not pw.check_inactive(rules, state, NOW)[1]
    assert pw.check_inactive(rules, state, NOW + pw.COALESCE_SECONDS)[1]


def test_success_written_at_most_once_an_hour() -> None:
    assert pw.success_is_news(seen(1), NOW)
    assert not pw.success_is_news(seen(1, last_success_at=NOW - 60), NOW)
    assert pw.success_is_news(seen(1, last_success_at=NOW - 3600), NOW)


def test_state_fields_survive_replace() -> None:
    state = replace(seen(1), must_change="expire", history=("a",))
    assert state.must_change == "expire" and state.history == ("a",)
