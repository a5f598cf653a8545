"""The ``bindguard`` command: serve, check-config, status, unlock, enable, expire, otp, demo."""
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
        description="Account-security rules (lockout, password lifecycle, inactivity, second "
                    "factor) in front of an LDAP directory.")
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
    status = command("status", "show an account's lockout, password, inactivity and second-factor "
                               "state")
    status.add_argument("user", metavar="USER", help="user name or DN")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    unlock = command("unlock", "unlock an account and clear its failure count")
    unlock.add_argument("user", metavar="USER", help="user name or DN")
    enable = command("enable", "re-enable an account disabled for inactivity; its inactivity "
                               "count starts again")
    enable.add_argument("user", metavar="USER", help="user name or DN")
    expire = command("expire", "require a password change at the account's next login")
    expire.add_argument("user", metavar="USER", help="user name or DN")
    otp = command("otp", "manage an account's TOTP second factor")
    actions = otp.add_subparsers(dest="otp_command", required=True, metavar="ACTION")
    for name, help_text in (
            ("enroll", "create a new TOTP secret, active at once (replacing any earlier one and "
                       "its backup codes), and print its otpauth:// URI and a QR code"),
            ("remove", "remove the account's second factor and its backup codes"),
            ("backup-codes", "print 10 new single-use backup codes, one a line; earlier ones "
                             "stop working")):
        action = actions.add_parser(name, help=help_text, description=help_text)
        action.add_argument("-c", "--config", default=argparse.SUPPRESS, help=config_help)
        action.add_argument("user", metavar="USER", help="user name or DN")
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
        "enable": _enable, "expire": _expire, "otp": _otp,
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
    return serve(config, config_path(args.config))


def _check_config(config: Config, args: Any) -> int:
    for warning in config.warnings:
        print(warning, file=sys.stderr)
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
    from proxy.policy import otp
    from proxy.policy import password as pw
    from proxy.policy.account import AccountState
    from proxy.policy.lockout import LockoutRules, current, is_locked, lock_ends_at

    dn = _account(config, args.user)
    rules = LockoutRules.from_config(config.compliance)
    passwords = pw.PasswordRules.from_config(config)
    otp_rules = otp.OtpRules.from_config(config)
    store = _open_store(config)
    try:
        stored = store.get(dn)
    finally:
        store.close()
    now = time.time()
    state = current(rules, stored or AccountState(), now)
    locked = is_locked(rules, state, now)
    ends = lock_ends_at(rules, state) if locked else None
    standing = pw.expiry(passwords, state, dn, now)
    _, disabled, _ = pw.check_inactive(passwords, state, now)

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
        "password_changed": moment(pw.last_change(state)),
        "password_changed_by": state.password_changed_by,
        "password_expires": moment(standing.expires_at) if stored else None,
        "password_expired": standing.expired if stored else False,
        "must_change_password": pw.must_change(passwords, state),
        "disabled": disabled,
        "disabled_since": moment(state.disabled_at) if disabled else None,
        "second_factor": otp.enrolled(state),
        "second_factor_enrolled": moment(state.otp_enrolled_at),
        "second_factor_required": otp.required(otp_rules, state, dn),
        "backup_codes_left": otp.backup_left(state),
    }
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    lock_text = "no"
    if locked:
        lock_text = f"until {report['locked_until']}" if ends else "until `bindguard unlock`"
    if passwords.expires_days is None:
        expires_text = "never (password_expires_days is not set)"
    elif dn in passwords.expires_ignore:
        expires_text = "never (in password_expires_ignore_user_ids)"
    elif not stored:
        expires_text = f"{passwords.expires_days} days after bindguard first sees the account"
    else:
        expires_text = f"{report['password_expires']}{' (expired)' if standing.expired else ''}"
    if passwords.inactive_days is None:
        disabled_text = "no (disable_user_account_days_inactive is not set)"
    else:
        disabled_text = f"since {report['disabled_since']}" if disabled else "no"
    changed_text = str(report["password_changed"] or "not known to bindguard")
    if state.password_changed_by:
        changed_text += f" (by {state.password_changed_by})"
    lines = [
        ("user", dn),
        ("failures", f"{report['failures']}" + (
            f" of {rules.attempts}" if rules.attempts else " (lockout is off)")),
        ("locked", lock_text),
        ("last success", report["last_success"] or "never"),
        ("first seen", report["first_seen"] or "never (bindguard has not seen this account)"),
        ("password changed", changed_text),
        ("password expires", expires_text),
        ("must change", "yes" if report["must_change_password"] else "no"),
        ("disabled", disabled_text),
        ("second factor", f"enrolled {report['second_factor_enrolled']}, "
                          f"{report['backup_codes_left']} backup codes left"
         if report["second_factor"] else
         "not enrolled" + (" (required: logins are refused)"
                           if report["second_factor_required"] else "")),
    ]
    for label, value in lines:
        print(f"{label + ':':18}{value}")
    return EXIT_OK


def _admin_change(config: Config, dn: str, event: str,
                  act: Callable[[Any, Any, float], tuple[Any, Any]]) -> Any:
    """An administrator's change of ``dn``'s state, audited as ``event`` (reason admin).

    ``act(state, rules, now)`` gets the state as of now (expired locks and forgotten failures
    dropped) and returns the new state and a result, which is returned.
    """
    from proxy.audit import AuditLog
    from proxy.policy.account import AccountState
    from proxy.policy.lockout import LockoutRules, current

    rules = LockoutRules.from_config(config.compliance)
    now = time.time()

    def change(state: AccountState) -> tuple[AccountState, Any]:
        return act(current(rules, state, now), rules, now)

    store = _open_store(config)
    try:
        result = store.apply([(dn, change)])[0]
    finally:
        store.close()
    try:
        audit = AuditLog(config.proxy.audit_log, time.time)
    except OSError as exc:
        raise _Failed(f"changed {dn}, but cannot write the audit log: {exc}") from None
    audit.write(event, dn, "cli", reason="admin")
    audit.close()
    return result


def _enable(config: Config, args: Any) -> int:
    from proxy.policy import password as pw

    dn = _account(config, args.user)
    was_disabled = _admin_change(config, dn, "account.enabled", lambda state, _, now: (
        pw.enable(state, now), state.disabled_at is not None))
    print(f"{dn}: enabled" if was_disabled else
          f"{dn}: was not disabled; inactivity count restarted")
    return EXIT_OK


def _expire(config: Config, args: Any) -> int:
    from proxy.policy import password as pw

    dn = _account(config, args.user)
    _admin_change(config, dn, "password.expired",
                          lambda state, _, now: (pw.expire_now(state), None))
    print(f"{dn}: must change the password at the next login")
    return EXIT_OK


def _unlock(config: Config, args: Any) -> int:
    from proxy.policy.lockout import is_locked, unlock

    dn = _account(config, args.user)
    was_locked = _admin_change(config, dn, "account.unlocked",
                                   lambda state, rules, now: (unlock(state),
                                                              is_locked(rules, state, now)))
    print(f"{dn}: unlocked" if was_locked else f"{dn}: was not locked; failure count cleared")
    return EXIT_OK


def _otp(config: Config, args: Any) -> int:
    from proxy.policy import otp

    dn = _account(config, args.user)
    if args.otp_command == "remove":
        had = _admin_change(config, dn, "otp.removed", lambda state, _, now: (
            otp.remove(state), otp.enrolled(state)))
        print(f"{dn}: second factor removed" if had else f"{dn}: had no second factor")
        return EXIT_OK
    if args.otp_command == "backup-codes":
        return _otp_backup_codes(config, dn)
    return _otp_enroll(config, dn, args.user)


def _otp_enroll(config: Config, dn: str, user: str) -> int:
    from proxy.enrolment import new_secret, provisioning_uri, qr_text
    from proxy.policy import otp

    box = _secret_box(config)
    secret = new_secret()
    _admin_change(config, dn, "otp.enrolled", lambda state, _, now: (
        otp.enrol(state, box.seal(dn, secret), now), None))
    uri = provisioning_uri(user, secret)
    unicode = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"
    print(f"{dn}: second factor enrolled, active now. Scan the QR code, or give the URI to "
          "an authenticator app:")
    print(uri)
    print(qr_text(uri, unicode=unicode), end="")
    print("The user logs in with the password immediately followed by the 6-digit code.")
    return EXIT_OK


def _otp_backup_codes(config: Config, dn: str) -> int:
    from proxy.enrolment import new_backup_codes
    from proxy.passwords import Hasher
    from proxy.policy import otp
    from proxy.policy.account import AccountState

    store = _open_store(config)
    try:
        stored = store.get(dn)
    finally:
        store.close()
    if stored is None or not otp.enrolled(stored):
        raise _Failed(f"{dn} has no second factor: run `bindguard otp enroll` first")
    codes = new_backup_codes()
    hasher = Hasher()
    hashes = tuple(hasher.hash(code) for code in codes)  # ~0.1 s each: before the transaction

    def act(state: AccountState, _: Any, now: float) -> tuple[AccountState, bool]:
        renewed = otp.set_backup_codes(state, hashes)
        return (state, False) if renewed is None else (renewed, True)  # False: removed meanwhile

    if not _admin_change(config, dn, "otp.backup_codes", act):
        raise _Failed(f"{dn} has no second factor: run `bindguard otp enroll` first")
    print("\n".join(codes))
    return EXIT_OK


def _secret_box(config: Config) -> Any:
    from proxy.sealed import KeyFileError, SecretBox

    try:
        return SecretBox.from_file(config.proxy.key_file)
    except KeyFileError as exc:
        raise _Failed(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
