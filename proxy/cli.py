"""The ``bindguard`` command: serve, check-config, status, unlock, demo."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from proxy.config import Config, ConfigError, config_path, load_config

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    config_help = ("configuration file (default: $BINDGUARD_CONFIG, then "
                   "/etc/bindguard/bindguard.ini)")
    parser = argparse.ArgumentParser(
        prog="bindguard",
        description="Account-security rules (lockout, ...) in front of an LDAP directory.")
    parser.add_argument("-c", "--config", default=None, help=config_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        # -c is accepted after the command's own arguments too.
        sub.add_argument("-c", "--config", default=argparse.SUPPRESS, help=config_help)
        return sub

    command("serve", "run the daemon in the foreground")
    command("check-config", "check the configuration: exit 0 if valid, else 2 with one line "
                            "per problem")
    status = command("status", "show an account's lockout state")
    status.add_argument("user", metavar="USER", help="user name or DN")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    unlock = command("unlock", "unlock an account and clear its failure count")
    unlock.add_argument("user", metavar="USER", help="user name or DN")
    demo = command("demo", "start a throwaway slapd with demo users and bindguard in front "
                           "of it (ignores -c)")
    demo.add_argument("--port", type=int, default=3890, help="bindguard's port (default 3890)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bindguard`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from proxy.demo.run import run_demo

        return run_demo(args.port)
    path = config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    handlers: dict[str, Callable[[Config, Any], int]] = {
        "serve": _serve, "check-config": _check_config, "status": _status, "unlock": _unlock,
    }
    try:
        return handlers[args.command](config, args)
    except _Failed as exc:
        print(f"bindguard: {exc}", file=sys.stderr)
        return EXIT_FAILED


class _Failed(Exception):
    """A run-time failure to report on standard error (exit 1)."""


def _serve(config: Config, args: Any) -> int:
    from proxy.daemon import configure_logging, serve

    configure_logging()
    return serve(config)


def _check_config(config: Config, args: Any) -> int:
    print(f"{config_path(args.config)}: valid")
    return EXIT_OK


def _account(config: Config, user: str) -> str:
    from proxy.identity import UnknownUser, user_to_dn

    try:
        return user_to_dn(config, user)
    except UnknownUser as exc:
        raise _Failed(str(exc)) from None


def _open_store(config: Config) -> Any:
    from proxy.store import open_store

    try:
        return open_store(config.proxy.state)
    except Exception as exc:
        raise _Failed(f"cannot open the state store {config.proxy.state}: {exc}") from None


def _status(config: Config, args: Any) -> int:
    from proxy.audit import rfc3339
    from proxy.policy.lockout import AccountState, LockoutRules, current, is_locked, lock_ends_at

    dn = _account(config, args.user)
    rules = LockoutRules.from_config(config.compliance)
    store = _open_store(config)
    try:
        stored = store.get(dn)
    finally:
        store.close()
    now = time.time()
    state = current(rules, stored or AccountState(), now)
    locked = is_locked(rules, state, now)
    ends = lock_ends_at(rules, state) if locked else None

    def moment(seconds: float | None) -> str | None:
        return None if seconds is None else rfc3339(seconds)

    report = {
        "user": dn,
        "known": stored is not None,
        "failures": len(state.failures),
        "locked": locked,
        "locked_since": moment(state.locked_at) if locked else None,
        "locked_until": moment(ends),
        "last_success": moment(state.last_success_at),
        "first_seen": moment(stored.first_seen_at) if stored else None,
    }
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    lock_text = "no"
    if locked:
        lock_text = f"until {report['locked_until']}" if ends else "until `bindguard unlock`"
    lines = [
        ("user", dn),
        ("failures", f"{report['failures']}" + (
            f" of {rules.attempts}" if rules.attempts else " (lockout is off)")),
        ("locked", lock_text),
        ("last success", report["last_success"] or "never"),
        ("first seen", report["first_seen"] or "never (bindguard has not seen this account)"),
    ]
    for label, value in lines:
        print(f"{label + ':':14}{value}")
    return EXIT_OK


def _unlock(config: Config, args: Any) -> int:
    from proxy.audit import AuditLog
    from proxy.policy.lockout import AccountState, LockoutRules, current, is_locked, unlock

    dn = _account(config, args.user)
    rules = LockoutRules.from_config(config.compliance)
    now = time.time()

    def change(state: AccountState) -> tuple[AccountState, bool]:
        state = current(rules, state, now)
        return unlock(state), is_locked(rules, state, now)

    store = _open_store(config)
    try:
        was_locked = store.apply([(dn, change)])[0]
    finally:
        store.close()
    try:
        audit = AuditLog(config.proxy.audit_log, time.time)
    except OSError as exc:
        raise _Failed(f"unlocked {dn}, but cannot write the audit log: {exc}") from None
    audit.write("account.unlocked", dn, "cli", reason="admin")
    audit.close()
    print(f"{dn}: unlocked" if was_locked else f"{dn}: was not locked; failure count cleared")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
