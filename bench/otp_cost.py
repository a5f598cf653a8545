"""CPU added to one bind by the TOTP second factor, measured in-process.

A code cannot be replayed, so a load test cannot reuse one; instead this times what the second
factor adds to a bind, on the thread that does it: the admission change (open the sealed
secret with AES-GCM, compute up to three TOTP codes, remember the step), against the same change
for a user without a second factor, and the rewrite of the BindRequest without the code. A
backup code costs one argon2id verification on the thread pool (also timed).
"""
from __future__ import annotations

import os
import sys
import timeit

import pyotp

from proxy.config import parse_config
from proxy.ldap import messages as m
from proxy.passwords import Hasher
from proxy.policy import otp
from proxy.policy.account import AccountState
from proxy.policy.lockout import LockoutRules
from proxy.policy.password import PasswordRules
from proxy.sealed import SecretBox
from proxy.transitions import admit

DN = "uid=alice,ou=people,dc=example,dc=org"
CONFIG = """
[proxy]
upstream = ldap://127.0.0.1
[security_compliance]
lockout_failure_attempts = 5
"""


def main() -> int:
    config = parse_config(CONFIG)
    rules = LockoutRules.from_config(config.compliance)
    passwords = PasswordRules.from_config(config)
    otp_rules = otp.OtpRules.from_config(config)
    box = SecretBox(os.urandom(32))
    secret = pyotp.random_base32(32)
    enrolled = otp.enrol(AccountState(first_seen_at=0.0), box.seal(DN, secret), 0.0)
    plain = AccountState(first_seen_at=0.0)
    now = 1_800_000_000.0
    code = pyotp.TOTP(secret).at(now)
    given = otp.split("alice-pass-1" + code)
    without = otp.split("alice-pass-1")
    runs = 20_000

    def timed(statement: object) -> float:
        return min(timeit.repeat(statement, number=runs, repeat=5)) / runs * 1e6  # type: ignore

    base = timed(lambda: admit(rules, passwords, otp_rules, box, DN, without, None, now,
                               now + 20)(plain))
    with_code = timed(lambda: admit(rules, passwords, otp_rules, box, DN, given, None, now,
                                    now + 20)(enrolled))
    bind = m.simple_bind_request(1, DN, "alice-pass-1" + code)
    rewrite = timed(lambda: m.with_bind_password(bind, b"alice-pass-1"))
    hasher = Hasher()
    hashed = hasher.hash("3-abcd-efgh")
    argon = min(timeit.repeat(lambda: hasher.matches(hashed, "3-abcd-efgh"), number=3,
                              repeat=3)) / 3 * 1e3
    print(f"admission change, no second factor : {base:7.1f} µs")
    print(f"admission change, TOTP code        : {with_code:7.1f} µs "
          f"(+{with_code - base:.1f} µs: AES-GCM open, up to 3 HMAC-SHA1 codes)")
    print(f"BindRequest rewritten without code : {rewrite:7.1f} µs")
    print(f"backup code (argon2id verify)      : {argon:7.1f} ms on the thread pool")
    return 0


if __name__ == "__main__":
    sys.exit(main())
