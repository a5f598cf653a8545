"""The INI configuration: the contract's keys, types, defaults and every problem at once."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from proxy.config import (
    DEFAULT_PATH,
    ConfigError,
    config_path,
    load_config,
    parse_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "bindguard.ini"
MINIMAL = "[proxy]\nupstream = ldap://dir.example.org\n"
# `section.key: message`, or `section: message` for a whole section, or `config:` for syntax.
PROBLEM_LINE = re.compile(r"^(config|[a-z_]+|[a-z_]+\.[A-Za-z0-9_]+): \S")


def problems(text: str) -> list[str]:
    """The problems parse_config reports for ``text`` (it must refuse it)."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


def with_proxy(*lines: str) -> str:
    """The minimal config with more ``[proxy]`` lines."""
    return MINIMAL + "".join(line + "\n" for line in lines)


def with_compliance(*lines: str) -> str:
    """The minimal config with a ``[security_compliance]`` section of ``lines``."""
    return MINIMAL + "[security_compliance]\n" + "".join(line + "\n" for line in lines)


# --- the example and the defaults --------------------------------------------------------------

def test_example_config_parses() -> None:
    """conf/bindguard.ini, the file operators start from, is valid and means what it says."""
    config = load_config(str(EXAMPLE))
    assert config.proxy.listen == ("tcp:389",)
    assert [u.uri for u in config.proxy.upstream] == ["ldap://dc1.example.org:389",
                                                      "ldap://dc2.example.org:389"]
    assert [(u.host, u.port, u.tls) for u in config.proxy.upstream] == [
        ("dc1.example.org", 389, False), ("dc2.example.org", 389, False)]
    assert config.proxy.upstream_timeout == 5.0
    assert config.proxy.state == "/var/lib/bindguard/state.sqlite"
    assert config.proxy.audit_log == "/var/log/bindguard/audit.jsonl"
    assert config.proxy.max_pdu_size == 4194304
    assert config.proxy.allow_anonymous is True
    assert config.proxy.allow_sasl is False
    assert config.directory.user_dn_template == "uid={user},ou=people,dc=example,dc=org"
    assert config.directory.search_base is None
    assert config.compliance.lockout_failure_attempts == 6
    assert config.compliance.lockout_duration == 1800
    assert config.compliance.lockout_failure_window == 900
    compliance = config.compliance
    assert compliance.disable_user_account_days_inactive == 90
    assert compliance.password_expires_days == 90
    assert compliance.password_expires_ignore_user_ids == (
        "svc-backup", "svc-monitor", "uid=svc-app,ou=services,dc=example,dc=org")
    assert compliance.password_expiry_warning_days == 14
    assert compliance.password_regex == r"^(?=.*\d)(?=.*[a-zA-Z]).{7,}$"
    assert compliance.password_regex_description == ("at least one letter, one digit and 7 "
                                                     "characters")
    assert (compliance.password_min_length, compliance.password_min_character_classes) == (12, 3)
    assert (compliance.unique_last_password_count, compliance.minimum_password_age) == (5, 1)
    assert compliance.change_password_upon_first_use is True
    assert compliance.enforce_2fa is True
    assert compliance.twofa_exempt == ("svc-backup", "ou=services,dc=example,dc=org")
    assert config.proxy.key_file == "/var/lib/bindguard/otp.key"
    assert config.warnings == ()


def test_minimal_config_gets_the_documented_defaults() -> None:
    """Only upstream is required; everything else takes the default the contract documents."""
    config = parse_config(MINIMAL)
    proxy = config.proxy
    assert proxy.listen == ("tcp:389",)
    assert [(u.uri, u.host, u.port) for u in proxy.upstream] == [
        ("ldap://dir.example.org", "dir.example.org", 389)]
    assert proxy.upstream_timeout == 5.0
    assert proxy.state == "/var/lib/bindguard/state.sqlite"
    assert proxy.audit_log == "/var/log/bindguard/audit.jsonl"
    assert proxy.max_pdu_size == 4 * 1024 * 1024
    assert proxy.allow_anonymous is True and proxy.allow_sasl is True
    directory = config.directory
    assert directory.user_dn_template is None and directory.search_base is None
    assert directory.search_filter == "(uid={user})"
    assert directory.bind_dn is None and directory.bind_password_file is None
    compliance = config.compliance
    assert compliance.lockout_failure_attempts is None  # lockout off
    assert compliance.lockout_duration is None
    assert compliance.lockout_failure_window == 0  # Keystone: failures never forgotten
    assert compliance.disable_user_account_days_inactive is None
    assert compliance.password_expires_days is None
    assert compliance.password_expires_ignore_user_ids == ()
    assert compliance.password_expiry_warning_days == 14
    assert compliance.password_regex is None and compliance.password_regex_description is None
    assert compliance.password_min_length == 0
    assert compliance.password_min_character_classes == 0
    assert compliance.unique_last_password_count == 0
    assert compliance.minimum_password_age == 0
    assert compliance.change_password_upon_first_use is False
    assert config.warnings == ()


def test_empty_sections_are_allowed() -> None:
    """An empty [directory] or [security_compliance] section changes nothing."""
    config = parse_config(MINIMAL + "[directory]\n[security_compliance]\n")
    assert config == parse_config(MINIMAL)


def test_proxy_section_is_required() -> None:
    """Without [proxy] there is no directory to forward to."""
    assert problems("[directory]\nuser_dn_template = uid={user},dc=example\n") == [
        "proxy: section missing (it needs at least upstream)"]
    assert problems("") == ["proxy: section missing (it needs at least upstream)"]


@pytest.mark.parametrize("text", ["[proxy]\n", "[proxy]\nupstream =\n",
                                  "[proxy]\nlisten = tcp:1\n"])
def test_upstream_is_required(text: str) -> None:
    """A [proxy] section without an upstream URI is refused, naming proxy.upstream."""
    assert problems(text) == ["proxy.upstream: required: at least one ldap:// URI of the directory"]


# --- every problem at once --------------------------------------------------------------------

def test_every_problem_is_reported_at_once() -> None:
    """Unknown key, unknown section, wrong type and out-of-range value in one file: all reported,
    each on its own line, the key ones prefixed `section.key:`."""
    text = (
        "[proxy]\n"
        "upstream = ldap://dir.example.org\n"
        "colour = blue\n"                       # unknown key
        "allow_sasl = maybe\n"                  # wrong type
        "max_pdu_size = 10\n"                   # out of range
        "[mystery]\n"                           # unknown section
        "x = 1\n"
        "[security_compliance]\n"
        "lockout_failure_attempts = six\n"      # wrong type
        "password_min_length = -1\n"            # out of range
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    found = caught.value.problems
    assert "mystery: unknown section" in found
    assert "proxy.colour: unknown option" in found
    assert "proxy.allow_sasl: true or false expected, got 'maybe'" in found
    assert "proxy.max_pdu_size: must be at least 1024, got 10" in found
    assert ("security_compliance.lockout_failure_attempts: a whole number expected, got 'six'"
            in found)
    assert "security_compliance.password_min_length: must be at least 0, got -1" in found
    assert len(found) == 6
    assert str(caught.value) == "\n".join(found)
    assert all("\n" not in problem for problem in found)


def test_problems_name_section_and_key() -> None:
    """Every problem line starts with `section.key:` (or `section:` for a whole section)."""
    text = with_proxy(
        "listen = nonsense:1", "upstream_timeout = soon", "state = postgresql://u@db/bg",
        "require_tls = true",
        "[directory]", "user_dn_template = cn=nobody", "bind_dn = cn=admin",
        "[security_compliance]", "lockout_duration = 60", "password_min_character_classes = 5",
        "[pam_backend]", "service = login",
    )
    found = problems(text)
    assert len(found) == 9
    for problem in found:
        assert PROBLEM_LINE.match(problem), problem
    prefixes = {problem.split(":", 1)[0] for problem in found}
    assert prefixes == {
        "proxy.listen", "proxy.upstream_timeout", "proxy.state", "proxy.require_tls",
        "directory.user_dn_template", "directory.bind_dn",
        "security_compliance.lockout_duration",
        "security_compliance.password_min_character_classes", "pam_backend.users",
    }


@pytest.mark.parametrize("text,expected", [
    ("upstream = ldap://x\n", "config: File contains no section headers."),
    (MINIMAL + "upstream = ldap://other\n", "config: While reading from '<config>' [line 3]: "
                                            "option 'upstream' in section 'proxy' already exists"),
    (MINIMAL + "[proxy]\n", "config: While reading from '<config>' [line 3]: "
                            "section 'proxy' already exists"),
])
def test_ini_syntax_errors_are_one_problem_line(text: str, expected: str) -> None:
    """A file configparser cannot read is one `config:` problem on one line, not a traceback."""
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith(expected)
    assert "\n" not in found[0]


def test_keys_are_case_sensitive() -> None:
    """`Upstream` is not `upstream`: an unknown key is an error, never silently ignored."""
    found = problems("[proxy]\nUpstream = ldap://dir.example.org\n")
    assert "proxy.Upstream: unknown option" in found


# --- [security_compliance]: Keystone's lockout options -----------------------------------------

def test_keystone_lockout_options() -> None:
    """lockout_failure_attempts, lockout_duration and bindguard's lockout_failure_window."""
    compliance = parse_config(with_compliance(
        "lockout_failure_attempts = 3", "lockout_duration = 600",
        "lockout_failure_window = 120")).compliance
    assert compliance.lockout_failure_attempts == 3
    assert compliance.lockout_duration == 600
    assert compliance.lockout_failure_window == 120


def test_unset_lockout_duration_means_locked_until_unlocked() -> None:
    """Keystone's meaning: without lockout_duration a lock lasts until an admin unlocks."""
    compliance = parse_config(with_compliance("lockout_failure_attempts = 6")).compliance
    assert compliance.lockout_failure_attempts == 6
    assert compliance.lockout_duration is None
    assert compliance.lockout_failure_window == 0


def test_empty_lockout_duration_is_unset() -> None:
    """`lockout_duration =` with no value is the same as leaving it out."""
    compliance = parse_config(with_compliance("lockout_failure_attempts = 6",
                                              "lockout_duration =")).compliance
    assert compliance.lockout_duration is None


@pytest.mark.parametrize("line,expected", [
    ("lockout_failure_attempts = 0", "must be at least 1, got 0"),
    ("lockout_failure_attempts = -3", "must be at least 1, got -3"),
    ("lockout_failure_attempts = 2.5", "a whole number expected, got '2.5'"),
    ("lockout_duration = 0", "must be at least 1, got 0"),
    ("lockout_duration = 30m", "a whole number expected, got '30m'"),
    ("lockout_failure_window = -1", "must be at least 0, got -1"),
])
def test_lockout_values_out_of_range_or_wrong_type(line: str, expected: str) -> None:
    """Each bad lockout value is refused, naming the key."""
    key = line.split(" = ")[0]
    lines = [line] if key == "lockout_failure_attempts" else ["lockout_failure_attempts = 5", line]
    found = problems(with_compliance(*lines))
    assert f"security_compliance.{key}: {expected}" in found


@pytest.mark.parametrize("key", ["lockout_duration", "lockout_failure_window"])
def test_lockout_refinements_need_attempts(key: str) -> None:
    """A duration or window without lockout_failure_attempts would have no effect: an error."""
    assert problems(with_compliance(f"{key} = 60")) == [
        f"security_compliance.{key}: has no effect without lockout_failure_attempts"]


@pytest.mark.parametrize("lines,expected", [
    (["password_expires_days = 30", "minimum_password_age = 30"],
     "security_compliance.minimum_password_age: must be less than password_expires_days "
     "(30 >= 30)"),
    (["password_regex = ([a-z"], "security_compliance.password_regex: does not compile"),
    (["password_regex_description = letters"],
     "security_compliance.password_regex_description: has no effect without password_regex"),
    (["password_expiry_warning_days = 7"],
     "security_compliance.password_expiry_warning_days: has no effect without "
     "password_expires_days"),
])
def test_contradictions_are_errors(lines: list[str], expected: str) -> None:
    """Contradictions (minimum age >= expiry, a regex that does not compile) fail the load."""
    assert any(problem.startswith(expected) for problem in problems(with_compliance(*lines)))


def test_regex_without_description_is_a_warning_not_an_error() -> None:
    """password_regex alone is valid but users are not told the rule: a warning."""
    config = parse_config(with_compliance(r"password_regex = ^.{8,}$"))
    assert config.compliance.password_regex == "^.{8,}$"
    assert len(config.warnings) == 1
    assert config.warnings[0].startswith("security_compliance.password_regex: warning:")


# --- value forms: booleans, lists, comments ---------------------------------------------------

@pytest.mark.parametrize("word", ["true", "yes", "on", "1", "True", "YES", "On"])
def test_true_booleans(word: str) -> None:
    """configparser's true forms, in any case."""
    config = parse_config(with_proxy(f"allow_anonymous = {word}", f"allow_sasl = {word}") +
                          f"[security_compliance]\nchange_password_upon_first_use = {word}\n")
    assert config.proxy.allow_anonymous is True
    assert config.proxy.allow_sasl is True
    assert config.compliance.change_password_upon_first_use is True


@pytest.mark.parametrize("word", ["false", "no", "off", "0", "False", "NO", "Off"])
def test_false_booleans(word: str) -> None:
    """configparser's false forms, in any case."""
    config = parse_config(with_proxy(f"allow_anonymous = {word}", f"allow_sasl = {word}") +
                          f"[security_compliance]\nchange_password_upon_first_use = {word}\n")
    assert config.proxy.allow_anonymous is False
    assert config.proxy.allow_sasl is False
    assert config.compliance.change_password_upon_first_use is False


@pytest.mark.parametrize("word", ["maybe", "2", "enabled", "t"])
def test_other_words_are_not_booleans(word: str) -> None:
    """Anything else is a type error naming the key."""
    assert problems(with_proxy(f"allow_anonymous = {word}")) == [
        f"proxy.allow_anonymous: true or false expected, got {word!r}"]


@pytest.mark.parametrize("value", [
    "ldap://a ldap://b:1389 ldap://c",
    "ldap://a, ldap://b:1389, ldap://c",
    "ldap://a,ldap://b:1389,ldap://c",
    "ldap://a\n    ldap://b:1389\n    ldap://c",
    "ldap://a, ldap://b:1389\n    ldap://c",
    "\n    ldap://a\n\n    ldap://b:1389\n    ldap://c",
])
def test_upstream_list_forms(value: str) -> None:
    """Several upstream URIs: separated by spaces, commas or continuation lines, order kept."""
    config = parse_config(f"[proxy]\nupstream = {value}\n")
    assert [(u.host, u.port) for u in config.proxy.upstream] == [
        ("a", 389), ("b", 1389), ("c", 389)]
    assert [u.uri for u in config.proxy.upstream] == ["ldap://a", "ldap://b:1389", "ldap://c"]


def test_several_listeners() -> None:
    """listen is a list too: one Twisted endpoint string per item."""
    config = parse_config(with_proxy("listen = tcp:389:interface=127.0.0.1",
                                     "    tcp:1389, unix:/run/bindguard/ldap.sock"))
    assert config.proxy.listen == ("tcp:389:interface=127.0.0.1", "tcp:1389",
                                   "unix:/run/bindguard/ldap.sock")


def test_list_line_with_equals_is_one_item() -> None:
    """A line holding `=` is one item (so DNs keep their commas): an endpoint with options
    must stand on its own line, else the whole line is refused as one bad endpoint."""
    found = problems(with_proxy("listen = tcp:1389 tcp:389:interface=127.0.0.1"))
    assert found[0].startswith(
        "proxy.listen: tcp:1389 tcp:389:interface=127.0.0.1: not a valid endpoint (")


def test_dn_list_items_stand_on_their_own_line() -> None:
    """Names may share a line; a DN (with commas) on its own line is kept whole."""
    config = parse_config(with_compliance(
        "password_expires_days = 90",
        "password_expires_ignore_user_ids = svc-backup, svc-monitor",
        "    uid=svc-app,ou=services,dc=example,dc=org"))
    assert config.compliance.password_expires_ignore_user_ids == (
        "svc-backup", "svc-monitor", "uid=svc-app,ou=services,dc=example,dc=org")


def test_comments() -> None:
    """`;` and `#` start comments at the start of a line, after whitespace at its end, and on
    indented lines inside a list."""
    config = parse_config(
        "; leading comment\n"
        "# another\n"
        "[proxy]  ; section comment\n"
        "upstream = ldap://a   ; the first\n"
        "    ; not an item\n"
        "    # nor this\n"
        "    ldap://b # the second\n"
        "allow_anonymous = off # refused with 53\n"
        "state = /tmp/state.sqlite ; file\n"
    )
    assert [u.uri for u in config.proxy.upstream] == ["ldap://a", "ldap://b"]
    assert config.proxy.allow_anonymous is False
    assert config.proxy.state == "/tmp/state.sqlite"


def test_comment_prefix_needs_whitespace_before_it() -> None:
    """A `;` or `#` inside a value (no space before it) is part of the value."""
    config = parse_config(with_proxy("state = /srv/a;b#c.sqlite"))
    assert config.proxy.state == "/srv/a;b#c.sqlite"


# --- options and features of later releases ------------------------------------------------------

def test_second_factor_options() -> None:
    """enforce_2fa and 2fa_exempt (names, DNs, subtrees) parse; key_file defaults to otp.key
    beside the state file."""
    config = parse_config(with_proxy("allow_sasl = false") + (
        "[security_compliance]\nenforce_2fa = true\n2fa_exempt = svc-backup, svc-monitor\n"
        "    ou=services,dc=example,dc=org\n"))
    assert config.compliance.enforce_2fa is True
    assert config.compliance.twofa_exempt == ("svc-backup", "svc-monitor",
                                              "ou=services,dc=example,dc=org")
    assert config.proxy.key_file == "/var/lib/bindguard/otp.key"
    assert parse_config(with_proxy("key_file = /etc/bindguard/otp.key")).proxy.key_file == \
        "/etc/bindguard/otp.key"


def test_enforcement_with_sasl_allowed_is_an_error() -> None:
    """SASL binds pass through unchecked: enforce_2fa with allow_sasl on would let them in
    without a second factor, so the configuration is refused."""
    assert problems(with_compliance("enforce_2fa = true")) == [
        "security_compliance.enforce_2fa: SASL binds pass through unchecked and would log in "
        "without a second factor: set [proxy] allow_sasl = false"]


def test_exemption_without_enforcement_is_an_error() -> None:
    """2fa_exempt means nothing unless enforce_2fa is on: the line is refused."""
    assert problems(with_compliance("2fa_exempt = svc-backup")) == [
        "security_compliance.2fa_exempt: has no effect without enforce_2fa = true (an enrolled "
        "user always gives a code)"]


def test_pam_backend_section() -> None:
    """[pam_backend] names a PAM service and the users it checks; both are required."""
    config = parse_config(MINIMAL + "[pam_backend]\nservice = bindguard-local\nusers = root, ops\n")
    assert config.pam_backend is not None
    assert (config.pam_backend.service, config.pam_backend.users) == ("bindguard-local",
                                                                      ("root", "ops"))
    assert parse_config(MINIMAL).pam_backend is None
    assert problems(MINIMAL + "[pam_backend]\nservice = /etc/pam.d/x\n") == [
        "pam_backend.service: a service name, not a path: '/etc/pam.d/x'",
        "pam_backend.users: required: the user names the PAM backend checks (everyone else "
        "goes to the directory)"]


def test_pam_socket() -> None:
    """pam_socket defaults to /run/bindguard/pam.sock; empty turns the PAM front off; a
    relative path is refused."""
    assert parse_config(MINIMAL).proxy.pam_socket == "/run/bindguard/pam.sock"
    assert parse_config(with_proxy("pam_socket =")).proxy.pam_socket == ""
    assert problems(with_proxy("pam_socket = pam.sock")) == [
        "proxy.pam_socket: must be an absolute path, got 'pam.sock'"]


def test_ldaps_upstream() -> None:
    """ldaps:// upstreams are TLS from the first byte; their port defaults to 636."""
    config = parse_config("[proxy]\nupstream = ldap://a ldaps://b\n")
    assert [(u.host, u.port, u.tls) for u in config.proxy.upstream] == [("a", 389, False),
                                                                      ("b", 636, True)]


def test_tls_options_are_checked(tmp_path: Path) -> None:
    """TLS files must be readable and come in pairs; require_tls needs a way to comply; a CA
    file needs a TLS upstream."""
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    assert problems(with_proxy(f"tls_certificate = {cert}")) == [
        "proxy.tls_private_key: required with the other of tls_certificate, tls_private_key"]
    assert problems(with_proxy("tls_certificate = /nonexistent.pem",
                               f"tls_private_key = {cert}")) == [
        "proxy.tls_certificate: cannot read /nonexistent.pem"]
    assert problems(with_proxy(f"upstream_ca_file = {cert}")) == [
        "proxy.upstream_ca_file: has no effect without ldaps:// upstreams or "
        "upstream_starttls = true"]
    config = parse_config(with_proxy(f"upstream_ca_file = {cert}", "upstream_starttls = true",
                                     f"tls_certificate = {cert}", f"tls_private_key = {cert}",
                                     "require_tls = true"))
    assert (config.proxy.upstream_starttls, config.proxy.require_tls) == (True, True)


@pytest.mark.parametrize("state", ["postgresql://bindguard@db/bindguard",
                                   "postgres://bindguard@db/bindguard"])
def test_postgresql_state_is_refused(state: str) -> None:
    """Only the SQLite store exists in this release."""
    assert problems(with_proxy(f"state = {state}")) == [
        "proxy.state: PostgreSQL is not supported yet in this release; give the path of an "
        "SQLite file"]


# --- [proxy] values ---------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["ssl:636", "tls:636", "ssl:636:privateKey=k.pem:certKey=c.pem"])
def test_ldaps_listeners_need_a_certificate(spec: str) -> None:
    """ssl: and tls: listeners take their certificate from tls_certificate/tls_private_key."""
    found = problems(with_proxy("listen = tcp:389", f"    {spec}"))
    assert found == [f"proxy.listen: {spec}: a TLS listener needs tls_certificate and "
                     "tls_private_key"]


@pytest.mark.parametrize("spec,detail", [
    ("nonsense:1", "Unknown endpoint type: 'nonsense'"),
    ("tcp:notaport", "invalid literal for int()"),
    ("389", ""),
])
def test_bad_listen_endpoints_are_refused(spec: str, detail: str) -> None:
    """A listen item that is not a Twisted server endpoint fails at load, not at serve."""
    found = problems(with_proxy(f"listen = {spec}"))
    assert len(found) == 1
    assert found[0].startswith(f"proxy.listen: {spec}: not a valid endpoint (")
    assert detail in found[0]


@pytest.mark.parametrize("uri,expected", [
    ("http://a", "expected ldap://HOST[:PORT] or ldaps://HOST[:PORT], got 'http://a'"),
    ("ldap://", "expected ldap://HOST[:PORT] or ldaps://HOST[:PORT], got 'ldap://'"),
    ("ldap://a/dc=example,dc=org",
     "expected ldap://HOST[:PORT] or ldaps://HOST[:PORT], got 'ldap://a/dc=example,dc=org'"),
    ("ldap://a:0", "expected ldap://HOST[:PORT] or ldaps://HOST[:PORT], got 'ldap://a:0'"),
    ("ldap://a:70000", "not a valid URI: 'ldap://a:70000'"),
    ("ldap://a:port", "not a valid URI: 'ldap://a:port'"),
    ("dir.example.org",
     "expected ldap://HOST[:PORT] or ldaps://HOST[:PORT], got 'dir.example.org'"),
])
def test_bad_upstream_uris_are_refused(uri: str, expected: str) -> None:
    """Each upstream item must be ldap://HOST[:PORT]."""
    assert problems(f"[proxy]\nupstream = {uri}\n") == [f"proxy.upstream: {expected}"]


def test_upstream_trailing_slash_and_port() -> None:
    """ldap://HOST:PORT/ is accepted; the port defaults to 389."""
    config = parse_config("[proxy]\nupstream = ldap://a:10389/ ldap://b/\n")
    assert [(u.host, u.port) for u in config.proxy.upstream] == [("a", 10389), ("b", 389)]


@pytest.mark.parametrize("value,expected", [("1024", 1024), ("65536", 65536),
                                            ("16777216", 16777216)])
def test_max_pdu_size(value: str, expected: int) -> None:
    """max_pdu_size is a whole number of bytes, at least 1024."""
    assert parse_config(with_proxy(f"max_pdu_size = {value}")).proxy.max_pdu_size == expected


@pytest.mark.parametrize("value,expected", [
    ("1023", "must be at least 1024, got 1023"),
    ("0", "must be at least 1024, got 0"),
    ("4MB", "a whole number expected, got '4MB'"),
])
def test_bad_max_pdu_size(value: str, expected: str) -> None:
    """Too small or not a number: refused, naming proxy.max_pdu_size."""
    assert problems(with_proxy(f"max_pdu_size = {value}")) == [f"proxy.max_pdu_size: {expected}"]


def test_allow_anonymous_and_allow_sasl() -> None:
    """The two pass-through switches parse independently."""
    config = parse_config(with_proxy("allow_anonymous = false", "allow_sasl = true"))
    assert (config.proxy.allow_anonymous, config.proxy.allow_sasl) == (False, True)
    config = parse_config(with_proxy("allow_anonymous = yes", "allow_sasl = no"))
    assert (config.proxy.allow_anonymous, config.proxy.allow_sasl) == (True, False)


@pytest.mark.parametrize("value,expected", [("0.25", 0.25), ("5", 5.0), ("30", 30.0)])
def test_upstream_timeout(value: str, expected: float) -> None:
    """upstream_timeout is seconds, fractions allowed."""
    assert parse_config(with_proxy(f"upstream_timeout = {value}")).proxy.upstream_timeout == \
        expected


@pytest.mark.parametrize("value,expected", [
    ("0", "must be greater than 0, got 0"),
    ("-1", "must be greater than 0, got -1"),
    ("soon", "a number expected, got 'soon'"),
    ("inf", "a number expected, got 'inf'"),
    ("nan", "a number expected, got 'nan'"),
])
def test_bad_upstream_timeout(value: str, expected: str) -> None:
    """Zero, negative, infinite or not a number: refused (an infinite wait would hang)."""
    assert problems(with_proxy(f"upstream_timeout = {value}")) == [
        f"proxy.upstream_timeout: {expected}"]


def test_audit_log_to_standard_output() -> None:
    """`audit_log = -` is kept as is: standard output."""
    assert parse_config(with_proxy("audit_log = -")).proxy.audit_log == "-"


# --- [directory] ------------------------------------------------------------------------------

def test_directory_search_mapping(tmp_path: Path) -> None:
    """search_base with a service account instead of a template."""
    password_file = tmp_path / "search.password"
    password_file.write_text("s3cret\n")
    config = parse_config(MINIMAL + "[directory]\n"
                          "search_base = ou=people,dc=example,dc=org\n"
                          "search_filter = (mail={user})\n"
                          "bind_dn = cn=bindguard,dc=example,dc=org\n"
                          f"bind_password_file = {password_file}\n")
    directory = config.directory
    assert directory.user_dn_template is None
    assert directory.search_base == "ou=people,dc=example,dc=org"
    assert directory.search_filter == "(mail={user})"
    assert directory.bind_dn == "cn=bindguard,dc=example,dc=org"
    assert directory.bind_password_file == str(password_file)


@pytest.mark.parametrize("lines,expected", [
    (["user_dn_template = uid=alice,dc=example"],
     "directory.user_dn_template: must contain {user}"),
    (["user_dn_template = uid={user},dc=example", "search_base = dc=example"],
     "directory.search_base: set either user_dn_template or search_base, not both"),
    (["search_base = dc=example", "search_filter = (uid=alice)"],
     "directory.search_filter: must contain {user}"),
    (["user_dn_template = uid={user},dc=example", "bind_dn = cn=admin"],
     "directory.bind_dn: only used with search_base"),
    (["search_base = dc=example", "bind_password_file = /nonexistent/bindguard.password"],
     "directory.bind_password_file: cannot read /nonexistent/bindguard.password"),
])
def test_bad_directory_mapping(lines: list[str], expected: str) -> None:
    """Each mistake in [directory] is refused, naming the key."""
    assert expected in problems(MINIMAL + "[directory]\n" + "\n".join(lines) + "\n")


# --- load_config and config_path ----------------------------------------------------------------

def test_load_config_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    """A file that is not there is one clear problem naming the path."""
    path = tmp_path / "absent.ini"
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(f"config: cannot read {path}: ")
    assert "No such file or directory" in caught.value.problems[0]


def test_load_config_directory_is_a_problem(tmp_path: Path) -> None:
    """A directory given as the config file is refused the same way."""
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path))
    assert caught.value.problems[0].startswith(f"config: cannot read {tmp_path}: ")


def test_load_config_binary_file_is_a_problem(tmp_path: Path) -> None:
    """A file that is not UTF-8 is a clear problem too."""
    path = tmp_path / "bindguard.ini"
    path.write_bytes(b"[proxy]\nupstream = ldap://\xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.problems[0].startswith(f"config: cannot read {path}: ")


def test_load_config_names_the_file_in_syntax_errors(tmp_path: Path) -> None:
    """configparser's message names the file that was read."""
    path = tmp_path / "bindguard.ini"
    path.write_text("no section\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(path) in caught.value.problems[0]


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    """-c, else $BINDGUARD_CONFIG, else /etc/bindguard/bindguard.ini."""
    monkeypatch.delenv("BINDGUARD_CONFIG", raising=False)
    assert DEFAULT_PATH == "/etc/bindguard/bindguard.ini"
    assert config_path(None) == DEFAULT_PATH
    monkeypatch.setenv("BINDGUARD_CONFIG", "/srv/env.ini")
    assert config_path(None) == "/srv/env.ini"
    assert config_path("/srv/explicit.ini") == "/srv/explicit.ini"
    monkeypatch.setenv("BINDGUARD_CONFIG", "")
    assert config_path(None) == DEFAULT_PATH


# --- the dataclasses --------------------------------------------------------------------------

@pytest.mark.parametrize("part,field", [
    ("config", "proxy"), ("proxy", "upstream_timeout"), ("upstream", "port"),
    ("directory", "user_dn_template"), ("compliance", "lockout_failure_attempts"),
])
def test_config_is_frozen(part: str, field: str) -> None:
    """No part of a loaded configuration can be changed in place."""
    config = load_config(str(EXAMPLE))
    objects = {"config": config, "proxy": config.proxy, "upstream": config.proxy.upstream[0],
               "directory": config.directory, "compliance": config.compliance}
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(objects[part], field, None)


def test_config_lists_are_tuples() -> None:
    """List options are tuples, so a frozen config holds no mutable list either."""
    config = load_config(str(EXAMPLE))
    assert isinstance(config.proxy.listen, tuple)
    assert isinstance(config.proxy.upstream, tuple)
    assert isinstance(config.compliance.password_expires_ignore_user_ids, tuple)
    assert isinstance(config.warnings, tuple)


def test_no_password_in_repr(tmp_path: Path) -> None:
    """The service account's password is read from its file only when needed, never held in
    the config: it appears in no repr or str."""
    secret = "Tr0ub4dor&3-not-in-repr"
    password_file = tmp_path / "search.password"
    password_file.write_text(secret + "\n")
    config = parse_config(MINIMAL + "[directory]\n"
                          "search_base = ou=people,dc=example,dc=org\n"
                          "bind_dn = cn=bindguard,dc=example,dc=org\n"
                          f"bind_password_file = {password_file}\n")
    for text in (repr(config), str(config), repr(config.directory), str(config.directory)):
        assert secret not in text
    assert all(secret not in repr(getattr(config.directory, f.name))
               for f in dataclasses.fields(config.directory))
