"""Cost of one password change (Password Modify) direct to slapd and through bindguard.

bindguard checks the new password against every rule, hashes it with argon2id and verifies it
against the history (``unique_last_password_count``, default 5 here) before the directory sees
it. One client changes one user's password again and again, each time to a new value, and the
script prints the mean and p50 latency per change for each target and the difference.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ldap
from bind_bench import Bindguard

from proxy.demo.slapd import DEMO_USERS, Slapd, user_dn

RULES = """\
password_min_length = 12
password_min_character_classes = 3
unique_last_password_count = {history}
"""


def changes(uri: str, uid: str, count: int) -> list[float]:
    """Seconds taken by each of ``count`` self-service changes of ``uid``'s password."""
    dn, current = user_dn(uid), DEMO_USERS[uid]
    took = []
    for i in range(count):
        new = f"Bench-Change-{i:04d}"
        conn = ldap.initialize(uri)
        conn.protocol_version = 3
        conn.simple_bind_s(dn, current)
        started = time.perf_counter()
        conn.passwd_s(dn, None, new)
        took.append(time.perf_counter() - started)
        conn.unbind_s()
        current = new
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--changes", type=int, default=20, help="changes per target")
    parser.add_argument("--history", type=int, default=5,
                        help="unique_last_password_count (default 5)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bindguard-passwd-bench-"))
    slapd = Slapd(workdir / "slapd", log_stats=False)
    bindguard = Bindguard(workdir, slapd.port, None, RULES.format(history=args.history))
    try:
        slapd.start()
        bindguard.start()
        direct = changes(slapd.uri, "user01", args.changes)
        proxied = changes(bindguard.uri, "user02", args.changes)
    finally:
        bindguard.stop()
        slapd.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.changes} password changes each, unique_last_password_count = {args.history}")
    print(f"{'target':<10} | {'mean ms':>8} | {'p50 ms':>8} | {'max ms':>8}")
    for name, took in (("direct", direct), ("bindguard", proxied)):
        print(f"{name:<10} | {statistics.mean(took) * 1e3:8.1f} | "
              f"{statistics.median(took) * 1e3:8.1f} | {max(took) * 1e3:8.1f}")
    print(f"added by bindguard: {(statistics.mean(proxied) - statistics.mean(direct)) * 1e3:.1f} "
          "ms per change (mean)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
