"""The ``bindguard`` command in-process: config lookup, exit codes, status, unlock and help.

(tests/integration/test_cli.py runs the real process against a daemon and slapd; these call
``main()`` directly with a config in tmp_path, and touch neither the network nor a directory.)
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from proxy.config import ConfigError, load_config
from proxy.policy.lockout import LockoutRules, record_failure
from proxy.store.sqlite import SqliteStore

TEMPLATE = "uid={user},ou=people,dc=example,dc=org"
ALICE = "uid=alice,ou=people,dc=example,dc=org"
INVALID = """\
[proxy]
upstream = ldaps://dir.example.org
require_tls = true
colour = blue
max_pdu_size = 10
[mystery]
[security_compliance]
lockout_failure_attempts = six
"""
INVALID_PROBLEMS = [
    "mystery: unknown section",
    "proxy.colour: unknown option",
    "proxy.max_pdu_size: must be at least 1024, got 10",
    "proxy.require_tls: no client could comply: set tls_certificate and tls_private_key "
    "(StartTLS, ssl: listeners)",
    "security_compliance.lockout_failure_attempts: a whole number expected, got 'six'",
]
SUBCOMMANDS = ["serve", "check-config", "status", "unlock", "enable", "expire", "demo"]

WriteConfig = Callable[..., Path]


@pytest.fixture(autouse=True)
def no_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the caller's $BINDGUARD_CONFIG (or, by accident, /etc/bindguard)."""
    monkeypatch.delenv("BINDGUARD_CONFIG", raising=False)


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write a valid config whose state and audit log live in tmp_path; return its path."""

    def write(directory: str = f"user_dn_template = {TEMPLATE}",
              compliance: str = "lockout_failure_attempts = 3",
              name: str = "bindguard.ini") -> Path:
        path = tmp_path / name
        path.write_text(
            "[proxy]\n"
            "listen = tcp:3389:interface=127.0.0.1\n"
            "upstream = ldap://127.0.0.1:1\n"
            f"state = {tmp_path / 'state' / 'state.sqlite'}\n"
            f"audit_log = {tmp_path / 'log' / 'audit.jsonl'}\n"
            f"[directory]\n{directory}\n"
            f"[security_compliance]\n{compliance}\n")
        return path

    return write


@pytest.fixture
def config_file(write_config: WriteConfig) -> Path:
    """The default valid config: names map through a template; lock after 3 failures, until
    an administrator unlocks."""
    return write_config()


def audit_events(config_file: Path) -> list[dict[str, Any]]:
    """The audit log's lines, parsed."""
    path = Path(load_config(str(config_file)).proxy.audit_log)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def lock(config_file: Path, dn: str, failures: int = 3) -> None:
    """Record ``failures`` failed binds of ``dn`` straight into the configured store."""
    config = load_config(str(config_file))
    rules = LockoutRules.from_config(config.compliance)
    store = SqliteStore(config.proxy.state)
    try:
        for i in range(failures):
            now = 1_800_000_000.0 + i
            store.apply([(dn, lambda state, now=now: record_failure(rules, state, now, 0.0))])
    finally:
        store.close()


def status_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    """Run ``status ... --json`` and return the parsed object."""
    capsys.readouterr()
    assert main(["status", *argv, "--json"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    report: dict[str, Any] = json.loads(out)
    return report


# --- check-config and where the config comes from -----------------------------------------------

def test_check_config_valid(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file: exit 0, `PATH: valid` on stdout, nothing on stderr."""
    assert main(["check-config", "-c", str(config_file)]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.out == f"{config_file}: valid\n"
    assert captured.err == ""


def test_check_config_example_file(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped example passes check-config."""
    example = Path(__file__).resolve().parents[2] / "conf" / "bindguard.ini"
    assert main(["check-config", "-c", str(example)]) == EXIT_OK


def test_check_config_invalid_prints_every_problem(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid file: exit 2, every problem on stderr, one a line, nothing on stdout."""
    path = tmp_path / "bad.ini"
    path.write_text(INVALID)
    assert main(["check-config", "-c", str(path)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert sorted(captured.err.splitlines()) == sorted(INVALID_PROBLEMS)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert captured.err == "".join(problem + "\n" for problem in caught.value.problems)


def test_check_config_prints_warnings_but_passes(
        write_config: WriteConfig, capsys: pytest.CaptureFixture[str]) -> None:
    """Valid but unwise (a regex without a description): exit 0, the warning on stderr."""
    path = write_config(compliance="password_regex = ^.{12,}$")
    assert main(["check-config", "-c", str(path)]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.out == f"{path}: valid\n"
    assert captured.err.startswith("security_compliance.password_regex: warning:")


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that is not there is a config error: exit 2 with one clear line."""
    path = tmp_path / "absent.ini"
    assert main(["check-config", "-c", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"config: cannot read {path}: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("argv", [["serve"], ["status", "alice"], ["unlock", "alice"],
                                  ["enable", "alice"], ["expire", "alice"]])
def test_every_command_refuses_an_invalid_config(argv: list[str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Not only check-config: each command exits 2 with the same lines (serve never starts)."""
    path = tmp_path / "bad.ini"
    path.write_text(INVALID)
    assert main([*argv, "-c", str(path)]) == EXIT_USAGE
    assert sorted(capsys.readouterr().err.splitlines()) == sorted(INVALID_PROBLEMS)


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_option_before_or_after_the_command(where: str, config_file: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`bindguard -c F check-config` and `bindguard check-config -c F` are the same."""
    option = ["-c", str(config_file)]
    argv = [*option, "check-config"] if where == "before" else ["check-config", *option]
    assert main(argv) == EXIT_OK
    assert capsys.readouterr().out == f"{config_file}: valid\n"


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_option_around_user_argument(where: str, config_file: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """-c also goes before the command or after its own arguments (`status alice -c F`)."""
    option = ["-c", str(config_file)]
    argv = ([*option, "status", "alice", "--json"] if where == "before"
            else ["status", "alice", "--json", *option])
    assert main(argv) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["user"] == ALICE


def test_config_option_after_the_command_wins(write_config: WriteConfig, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Given twice, the -c after the command is the one used."""
    good = write_config()
    assert main(["-c", str(tmp_path / "absent.ini"), "check-config", "-c", str(good)]) == EXIT_OK
    assert capsys.readouterr().out == f"{good}: valid\n"


def test_environment_variable_when_no_option(config_file: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Without -c, $BINDGUARD_CONFIG names the file."""
    monkeypatch.setenv("BINDGUARD_CONFIG", str(config_file))
    assert main(["check-config"]) == EXIT_OK
    assert capsys.readouterr().out == f"{config_file}: valid\n"


def test_option_beats_environment_variable(config_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """-c wins over $BINDGUARD_CONFIG."""
    monkeypatch.setenv("BINDGUARD_CONFIG", str(tmp_path / "absent.ini"))
    assert main(["check-config", "-c", str(config_file)]) == EXIT_OK
    assert capsys.readouterr().out == f"{config_file}: valid\n"


def test_environment_variable_pointing_nowhere(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A $BINDGUARD_CONFIG that does not exist is a config error naming that path."""
    path = tmp_path / "absent.ini"
    monkeypatch.setenv("BINDGUARD_CONFIG", str(path))
    assert main(["check-config"]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith(f"config: cannot read {path}: ")


# --- status -----------------------------------------------------------------------------------

def test_status_json_for_an_unknown_but_mappable_user(config_file: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A name the template maps, never seen by bindguard: one JSON object, nothing locked."""
    report = status_json(capsys, "alice", "-c", str(config_file))
    assert report["user"] == ALICE
    assert report["known"] is False
    assert report["failures"] == 0
    assert report["locked"] is False
    assert report["locked_since"] is None and report["locked_until"] is None
    assert report["last_success"] is None and report["first_seen"] is None
    assert report["disabled"] is False
    assert report["must_change_password"] is False


def test_status_canonicalises_a_dn(config_file: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A DN argument is used as it is, in canonical form (lower case, no spaces)."""
    report = status_json(capsys, "UID=Alice, OU=People, DC=Example, DC=Org",
                         "-c", str(config_file))
    assert report["user"] == ALICE


def test_status_escapes_the_name_in_the_template(config_file: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A name with DN special characters cannot reach another account through the template."""
    report = status_json(capsys, "eve+x", "-c", str(config_file))
    assert report["user"] != "uid=eve+x,ou=people,dc=example,dc=org"
    assert report["user"].startswith("uid=eve\\+x,")


def test_status_does_not_record_the_account(config_file: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Looking is not touching: status of an unseen account leaves it unseen."""
    status_json(capsys, "alice", "-c", str(config_file))
    assert status_json(capsys, "alice", "-c", str(config_file))["known"] is False


def test_status_human_output(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --json: `label: value` lines, the lockout threshold and the mapped DN."""
    assert main(["status", "alice", "-c", str(config_file)]) == EXIT_OK
    out = capsys.readouterr().out
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["user"].strip() == ALICE
    assert lines["failures"].strip() == "0 of 3"
    assert lines["locked"].strip() == "no"
    assert lines["last success"].strip() == "never"


def test_status_of_a_locked_account(config_file: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Locked without lockout_duration: locked, no end time, until `bindguard unlock`."""
    lock(config_file, ALICE)
    report = status_json(capsys, "alice", "-c", str(config_file))
    assert report["known"] is True
    assert report["locked"] is True
    assert report["locked_since"] == "2027-01-15T08:00:02.000Z"
    assert report["locked_until"] is None
    assert main(["status", "alice", "-c", str(config_file)]) == EXIT_OK
    assert "until `bindguard unlock`" in capsys.readouterr().out


def test_status_of_a_name_without_mapping_exits_1(write_config: WriteConfig,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """No user_dn_template and no search_base: a plain name cannot become a DN. Exit 1 with a
    message that says how to fix it; nothing on stdout."""
    path = write_config(directory="")
    assert main(["status", "alice", "--json", "-c", str(path)]) == EXIT_FAILED
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("bindguard: alice: give a DN, or set [directory] user_dn_template "
                            "or search_base to map names to DNs\n")


def test_dn_works_without_mapping(write_config: WriteConfig,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A full DN needs no [directory] mapping."""
    path = write_config(directory="")
    assert status_json(capsys, ALICE, "-c", str(path))["user"] == ALICE


def test_unopenable_state_store_exits_1(write_config: WriteConfig, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A state path that cannot be opened is a run-time failure: exit 1, one message."""
    path = write_config()
    state = Path(load_config(str(path)).proxy.state)
    state.mkdir(parents=True)  # a directory where the SQLite file should be
    assert main(["status", "alice", "-c", str(path)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith(f"bindguard: cannot open the state store {state}: ")
    assert err.count("\n") == 1


# --- unlock, enable, expire -----------------------------------------------------------------------

def test_unlock_writes_account_unlocked_to_the_audit_log(
        config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`unlock NAME` audits account.unlocked for the mapped DN, from the cli front end."""
    assert main(["unlock", "alice", "-c", str(config_file)]) == EXIT_OK
    assert capsys.readouterr().out == f"{ALICE}: was not locked; failure count cleared\n"
    events = audit_events(config_file)
    assert len(events) == 1
    event = events[0]
    assert event["event"] == "account.unlocked"
    assert event["user"] == ALICE
    assert event["front"] == "cli"
    assert event["reason"] == "admin"
    assert event["ts"].endswith("Z")
    assert set(event) <= {"ts", "event", "user", "front", "client", "reason"}


def test_unlock_opens_a_locked_account(config_file: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A locked account is unlocked with its failure count cleared, as status then shows."""
    lock(config_file, ALICE)
    assert status_json(capsys, "alice", "-c", str(config_file))["locked"] is True
    assert main(["unlock", ALICE, "-c", str(config_file)]) == EXIT_OK
    assert capsys.readouterr().out == f"{ALICE}: unlocked\n"
    report = status_json(capsys, "alice", "-c", str(config_file))
    assert report["locked"] is False and report["failures"] == 0
    assert [e["event"] for e in audit_events(config_file)] == ["account.unlocked"]


def test_unlock_appends_to_an_existing_audit_log(config_file: Path) -> None:
    """Each unlock adds one line; earlier lines stay."""
    for _ in range(2):
        assert main(["unlock", "alice", "-c", str(config_file)]) == EXIT_OK
    assert [e["event"] for e in audit_events(config_file)] == ["account.unlocked"] * 2


@pytest.mark.parametrize("command,event", [("unlock", "account.unlocked"),
                                           ("enable", "account.enabled"),
                                           ("expire", "password.expired")])
def test_admin_commands_audit_their_event(command: str, event: str, config_file: Path) -> None:
    """Each administrative change leaves exactly one audit line with its event."""
    assert main([command, "bob", "-c", str(config_file)]) == EXIT_OK
    events = audit_events(config_file)
    assert [(e["event"], e["user"], e["front"]) for e in events] == [
        (event, "uid=bob,ou=people,dc=example,dc=org", "cli")]


@pytest.mark.parametrize("command", ["unlock", "enable", "expire"])
def test_admin_commands_need_a_mapping_for_names(command: str, write_config: WriteConfig,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Without a mapping a name is refused (exit 1) and nothing is audited."""
    path = write_config(directory="")
    assert main([command, "alice", "-c", str(path)]) == EXIT_FAILED
    assert "give a DN, or set [directory] user_dn_template" in capsys.readouterr().err
    assert audit_events(path) == []


# --- usage --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_each_command_exits_0(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`bindguard COMMAND --help` prints that command's usage and exits 0."""
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: bindguard {command}")
    assert "-c CONFIG, --config CONFIG" in out


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """`bindguard --help` exits 0 and names every command."""
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for command in SUBCOMMANDS:
        assert command in out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["status"], ["unlock"],
                                  ["status", "alice", "--yaml"], ["demo", "--port", "x"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A missing or unknown command or argument is a usage error: exit 2, usage on stderr."""
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == EXIT_USAGE
    assert capsys.readouterr().err.startswith("usage: bindguard")


def test_exit_codes_are_the_contract() -> None:
    """0 done, 1 failed at run time, 2 usage or config error."""
    assert (EXIT_OK, EXIT_FAILED, EXIT_USAGE) == (0, 1, 2)

