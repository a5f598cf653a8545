"""Linux logins through bindguard: python-pam → pam_exec → bindguard-pam → daemon → slapd.

Runs as root (it writes a service file in /etc/pam.d, removed on exit). Against the same PAM
stack it times, one login after another: a floor helper that only reads the password (/bin/sh),
the same for a Python started as bindguard-pam is (``-I -S``), bindguard-pam itself, and the
installed console script; then the daemon's own share (a request over its socket in-process).
Prints authentications per second and p50/p99 latency for each.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pam
from bind_bench import Bindguard

from pam_module import client
from proxy.demo.slapd import DEMO_USERS, Slapd

ROOT = Path(__file__).resolve().parents[1]
SERVICE = f"bindguard-bench-{os.getpid()}"


def stack(command: str) -> str:
    return (f"auth required pam_exec.so expose_authtok quiet {command}\n"
            "auth optional pam_permit.so\naccount required pam_permit.so\n")


def logins(count: int) -> list[float]:
    """Seconds per python-pam authentication of demo users with their right passwords."""
    checker = pam.pam()
    took = []
    for i in range(count):
        user = f"user{i % 30:02d}"
        started = time.perf_counter()
        ok = checker.authenticate(user, DEMO_USERS[user], service=SERVICE, resetcreds=False)
        took.append(time.perf_counter() - started)
        if not ok:
            raise SystemExit(f"login of {user} failed: {checker.reason} ({SERVICE}: "
                             f"{Path('/etc/pam.d', SERVICE).read_text()})")
    return took


def daemon_share(path: str, count: int) -> list[float]:
    """Seconds per request over the daemon's socket, from this process."""
    took = []
    for i in range(count):
        user = f"user{i % 30:02d}"
        started = time.perf_counter()
        with client.Connection(path) as connection:
            reply = connection.ask({"type": "authenticate", "user": user,
                                    "password": DEMO_USERS[user]})
        took.append(time.perf_counter() - started)
        assert reply["result"] == "success", reply
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=100, help="logins per helper")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark writes a service file in /etc/pam.d")
    workdir = Path(tempfile.mkdtemp(prefix="bg-pam-bench-", dir="/tmp"))
    slapd = Slapd(workdir / "slapd", log_stats=False)
    bindguard = Bindguard(workdir, slapd.port, None)
    floor = workdir / "floor.sh"
    floor.write_text("cat >/dev/null\n")
    floor_py = workdir / "floor.py"
    floor_py.write_text("import sys\nsys.stdin.buffer.read()\n")
    config = bindguard.config
    helpers = {
        "floor: /bin/sh reading the password": f"/bin/sh {floor}",
        "floor: python3 -I -S reading it": f"{sys.executable} -I -S {floor_py}",
        "bindguard-pam (python3 -I -S helper.py)":
            f"{sys.executable} -I -S {ROOT / 'pam_module' / 'helper.py'} -c {config}",
        "bindguard-pam (console script)":
            f"{Path(sys.executable).parent / 'bindguard-pam'} -c {config}",
    }
    results: dict[str, list[float]] = {}
    service_file = Path("/etc/pam.d") / SERVICE
    try:
        slapd.start()
        bindguard.start()
        for name, command in helpers.items():
            service_file.write_text(stack(command))
            logins(5)  # warm-up
            results[name] = logins(args.logins)
        socket_path = client.socket_path(str(config))
        results["daemon only (socket request in-process)"] = daemon_share(socket_path,
                                                                          args.logins)
    finally:
        service_file.unlink(missing_ok=True)
        bindguard.stop()
        slapd.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.logins} logins each (python-pam, one after another), "
          f"{os.cpu_count()} cores, slapd {_slapd_version()}")
    print(f"{'helper':<42} | {'logins/s':>8} | {'p50 ms':>7} | {'p99 ms':>7}")
    for name, took in results.items():
        took.sort()
        p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
        print(f"{name:<42} | {len(took) / sum(took):8.0f} | "
              f"{statistics.median(took) * 1e3:7.1f} | {p99 * 1e3:7.1f}")
    return 0


def _slapd_version() -> str:
    result = subprocess.run(["/usr/sbin/slapd", "-VV"], capture_output=True, text=True)
    line = (result.stderr or result.stdout).splitlines()[0] if (result.stderr or
                                                                  result.stdout) else ""
    return line.split("slapd", 1)[-1].split("(")[0].strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
