"""``bindguard demo``: a throwaway slapd with demo users and bindguard in front of it."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from proxy.config import parse_config
from proxy.demo.slapd import DEMO_USERS, PEOPLE, Slapd, user_dn

DEMO_CONFIG = """\
[proxy]
listen = tcp:{port}:interface=127.0.0.1
upstream = {upstream}
upstream_timeout = 5
state = {workdir}/state.sqlite
audit_log = {workdir}/audit.jsonl
pam_socket = {workdir}/pam.sock

[directory]
user_dn_template = uid={{user}},ou=people,dc=example,dc=org

[security_compliance]
lockout_failure_attempts = 3
lockout_duration = 300
lockout_failure_window = 900
disable_user_account_days_inactive = 90
password_expires_days = 90
password_expiry_warning_days = 14
password_min_length = 12
password_min_character_classes = 3
unique_last_password_count = 5
; 0 so that the demo's changes can follow each other; production wants 1 or more
minimum_password_age = 0
change_password_upon_first_use = true
"""


def _instructions(uri: str, slapd_uri: str, config: Path, workdir: Path) -> str:
    alice, bob, carol, dave = (user_dn(u) for u in ("alice", "bob", "carol", "dave"))
    whoami = f"ldapwhoami -x -H {uri}"
    passwd = f"ldappasswd -x -H {uri}"
    return f"""
bindguard demo is running.
  directory (throwaway slapd): {slapd_uri}   users: alice, bob, carol, dave, user00..user29
  bindguard:                   {uri}
  configuration:               {config}
  audit log:                   {workdir}/audit.jsonl
  policy: 3 wrong passwords lock an account for 300 seconds; new passwords need 12
          characters and 3 of lower, upper, digit, other, and none of the last 5; passwords
          expire after 90 days, accounts after 90 idle days

Try, in another terminal:
  # the right password binds
  {whoami} -D {alice} -w {DEMO_USERS['alice']}
  # a wrong password is refused (49); run it three times and bob is locked
  {whoami} -D {bob} -w wrong
  # now even the right password is refused, exactly like a wrong one; -e ppolicy says why
  {whoami} -D {bob} -w {DEMO_USERS['bob']} -e ppolicy
  # what bindguard knows about bob, and the administrator's unlock
  bindguard status bob -c {config}
  bindguard unlock bob -c {config}
  {whoami} -D {bob} -w {DEMO_USERS['bob']}
  # anything else passes through untouched, e.g. a paged search
  ldapsearch -x -H {uri} -D {alice} -w {DEMO_USERS['alice']} -b {PEOPLE} -E pr=5/noprompt uid
  # a weak new password is refused (19), naming the rule; -e ppolicy adds the control
  {passwd} -D {carol} -w {DEMO_USERS['carol']} -s short-pw -e ppolicy
  # a good one is accepted and recorded; the old one may not come back (history)
  {passwd} -D {carol} -w {DEMO_USERS['carol']} -s Carol-New-Pass-1
  {passwd} -D {carol} -w Carol-New-Pass-1 -s {DEMO_USERS['carol']}
  # must change: after `bindguard expire` dave may only change his password
  bindguard expire dave -c {config}
  ldapsearch -x -H {uri} -D {dave} -w {DEMO_USERS['dave']} -b {PEOPLE} uid
  {passwd} -D {dave} -w {DEMO_USERS['dave']} -s Dave-New-Pass-1
  bindguard status dave -c {config}
  # a second factor: enrol user05 (scan the QR code), then log in with password + code
  bindguard otp enroll user05 -c {config}
  {whoami} -D {user_dn('user05')} -w {DEMO_USERS['user05']}CODE   # CODE: the app's 6 digits
  # every authentication and password change in the audit log
  cat {workdir}/audit.jsonl

Ctrl-C stops the demo and removes {workdir}.
"""


def run_demo(port: int) -> int:
    """Run the demo in the foreground until Ctrl-C; return the exit code."""
    from proxy.daemon import configure_logging, serve

    workdir = Path(tempfile.mkdtemp(prefix="bindguard-demo-"))
    slapd = Slapd(workdir / "slapd", ppolicy=True)
    try:
        slapd.start()
        config_path = workdir / "bindguard.ini"
        config_path.write_text(DEMO_CONFIG.format(port=port, upstream=slapd.uri,
                                                  workdir=workdir))
        config = parse_config(config_path.read_text(), str(config_path))
        print(_instructions(f"ldap://127.0.0.1:{port}", slapd.uri, config_path, workdir),
              flush=True)
        configure_logging()
        return serve(config)
    finally:
        slapd.stop()
        shutil.rmtree(workdir, ignore_errors=True)
