"""Throughput of bindguard against the same slapd reached directly, with python-ldap clients.

Run from the project root (bindguard installed, slapd at /usr/sbin/slapd)::

    python3 bench/bind_bench.py [--seconds N]

One run starts a throwaway slapd (``proxy.demo.slapd``) and ``bindguard serve`` in front of it,
then runs each workload for N seconds (default 5, after a short warm-up) against slapd directly
and through bindguard:

  cbu1     connect+bind+unbind, 1 client process
  cbu8     connect+bind+unbind, 8 client processes
  bind8    simple_bind_s repeated on one open connection, 8 processes
  search8  bind once, then a one-entry search repeated on the open connection, 8 processes

Each client process uses its own demo user (user00, user01, ...) with the right password, so
lockout never interferes. The table gives ops/s for both targets and the ratio
bindguard/direct, then the p50 latency of the 1-process case, the CPU used by the clients, slapd
and bindguard during each measured window, and every client error (there should be none).
Exit status: 0 if no errors, 1 otherwise.

Other options: ``--warmup S`` (default 1), ``--only cbu8,search8`` (a subset of workloads),
``--targets bindguard`` (a subset of targets), ``--bindguard-cprofile FILE`` (run bindguard
under cProfile and write its stats to FILE at the end), ``--keep`` (keep the temp directory).
The bindguard pid is printed at start-up, e.g. for ``py-spy record --pid PID``.
Processes and the temp directory are cleaned up on exit, Ctrl-C and SIGTERM included.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap  # type: ignore[import-untyped]

from proxy.demo.slapd import DEMO_USERS, PEOPLE, Slapd, free_port, user_dn

WORKLOADS: dict[str, tuple[str, str, int]] = {
    # key: (label, kind, processes)
    "cbu1": ("connect+bind+unbind, 1 process", "cbu", 1),
    "cbu8": ("connect+bind+unbind, 8 processes", "cbu", 8),
    "bind8": ("binds on an open connection, 8 processes", "bind", 8),
    "search8": ("searches after one bind, 8 processes", "search", 8),
}
TARGETS = ("direct", "bindguard")
# Ratio bindguard/direct the proxy should reach (bench/README.md).
GOALS = {"cbu8": 0.6, "search8": 0.8}
STARTUP_SLACK = 0.3  # seconds for forked clients to get going before the warm-up counts
OP_TIMEOUT = 10.0

CONFIG = """\
[proxy]
listen = tcp:{port}:interface=127.0.0.1
upstream = ldap://127.0.0.1:{upstream_port}
state = {dir}/state.sqlite
audit_log = {dir}/audit.jsonl
pam_socket = {dir}/pam.sock

[directory]
user_dn_template = uid={{user}},ou=people,dc=example,dc=org

[security_compliance]
lockout_failure_attempts = 5
lockout_duration = 600
{rules}"""

# --rules all: every password and inactivity rule on. change_password_upon_first_use makes each
# successful bind read the user's entry (pwdReset & co.) before it is answered.
ALL_RULES = """disable_user_account_days_inactive = 90
password_expires_days = 90
password_expiry_warning_days = 14
password_regex = ^(?=.*\\d)(?=.*[a-zA-Z]).{7,}$
password_regex_description = at least one letter, one digit and 7 characters
password_min_length = 8
password_min_character_classes = 2
unique_last_password_count = 5
minimum_password_age = 0
change_password_upon_first_use = true
"""


# -- clients -------------------------------------------------------------------------------------

def _connect(uri: str) -> Any:
    conn = ldap.initialize(uri)
    conn.protocol_version = ldap.VERSION3
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, OP_TIMEOUT)
    conn.set_option(ldap.OPT_REFERRALS, 0)
    conn.timeout = OP_TIMEOUT
    return conn


def _close(conn: Any) -> None:
    try:
        conn.unbind_s()
    except ldap.LDAPError:
        pass


def client(kind: str, uri: str, uid: str, warm_end: float, end: float, results: Any) -> None:
    """One client process: loop the workload until ``end``; count what completes after warm-up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent cleans up on Ctrl-C
    dn, password = user_dn(uid), DEMO_USERS[uid]
    search_filter = f"(uid={uid})"
    ops = binds = 0
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    conn = None
    cpu0 = cpu1 = None
    clock = time.monotonic
    while True:
        now = clock()
        if now >= end:
            break
        if cpu0 is None and now >= warm_end:
            cpu0 = time.process_time()
        try:
            if kind == "cbu":
                t0 = time.perf_counter()
                c = _connect(uri)
                binds += 1
                c.simple_bind_s(dn, password)
                c.unbind_s()
                t1 = time.perf_counter()
            else:
                if conn is None:
                    conn = _connect(uri)
                    binds += 1
                    conn.simple_bind_s(dn, password)
                t0 = time.perf_counter()
                if kind == "bind":
                    binds += 1
                    conn.simple_bind_s(dn, password)
                else:
                    found = conn.search_s(PEOPLE, ldap.SCOPE_SUBTREE, search_filter,
                                          ["uid", "cn", "sn"])
                    if len(found) != 1:
                        raise RuntimeError(f"search returned {len(found)} entries, not 1")
                t1 = time.perf_counter()
        except (ldap.LDAPError, RuntimeError) as exc:
            errors[f"{type(exc).__name__}: {exc}"] += 1
            if conn is not None:
                _close(conn)
                conn = None
            time.sleep(0.01)
            continue
        done = clock()
        if warm_end <= done < end:
            ops += 1
            latencies.append(t1 - t0)
    cpu1 = time.process_time()
    if conn is not None:
        _close(conn)
    cpu = (cpu1 - cpu0) if cpu0 is not None else 0.0
    results.put((uid, ops, binds, dict(errors), latencies, cpu))


# -- servers -------------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all threads) in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"bindguard exited with {proc.returncode}:\n{_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"bindguard not listening on port {port} after {timeout}s:\n"
                               f"{_tail(log)}")
        time.sleep(0.05)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Bindguard:
    """``bindguard serve`` as a subprocess in its own session."""

    def __init__(self, workdir: Path, upstream_port: int, cprofile: str | None,
                 rules: str = "") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "bindguard.ini"
        self.config.write_text(CONFIG.format(port=self.port, upstream_port=upstream_port,
                                             dir=workdir, rules=rules))
        self.log_path = workdir / "bindguard.log"
        self.audit_path = workdir / "audit.jsonl"
        self.cprofile = cprofile
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.cprofile:
            cmd = [sys.executable, "-m", "cProfile", "-o", self.cprofile, "-m", "proxy.cli",
                   "serve", "-c", str(self.config)]
        else:
            cmd = [shutil.which("bindguard") or str(Path(sys.executable).parent / "bindguard"),
                   "serve", "-c", str(self.config)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        _wait_for_port(self.port, self.proc, self.log_path, timeout=20)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)

    def successes(self) -> int:
        try:
            text = self.audit_path.read_text(errors="replace")
        except OSError:
            return 0
        return text.count('"event":"auth.success"')


# -- running -------------------------------------------------------------------------------------

@dataclass
class Run:
    ops: int = 0
    binds: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    client_cpu: float = 0.0
    slapd_cpu: float = 0.0
    bindguard_cpu: float = 0.0
    seconds: float = 1.0

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))]


def run_workload(kind: str, processes: int, uri: str, seconds: float, warmup: float,
                 pids: dict[str, int], live: list[Any]) -> Run:
    """Run one workload against ``uri`` with ``processes`` forked clients."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    start = time.monotonic()
    warm_end = start + STARTUP_SLACK + warmup
    end = warm_end + seconds
    users = [f"user{i:02d}" for i in range(processes)]
    procs = [ctx.Process(target=client, args=(kind, uri, uid, warm_end, end, results),
                         daemon=True) for uid in users]
    live.extend(procs)
    for p in procs:
        p.start()
    run = Run(seconds=seconds)
    time.sleep(max(0.0, warm_end - time.monotonic()))
    cpu0 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    time.sleep(max(0.0, end - time.monotonic()))
    cpu1 = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    run.slapd_cpu = cpu1["slapd"] - cpu0["slapd"]
    run.bindguard_cpu = cpu1.get("bindguard", 0.0) - cpu0.get("bindguard", 0.0)
    for _ in procs:
        _uid, ops, binds, errors, latencies, cpu = results.get(timeout=OP_TIMEOUT * 3)
        run.ops += ops
        run.binds += binds
        run.errors.update(errors)
        run.latencies.extend(latencies)
        run.client_cpu += cpu
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()
        live.remove(p)
    return run


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def report(results: dict[str, dict[str, Run]], seconds: float) -> int:
    """Print the tables; return the number of client errors."""
    label_width = max(len(WORKLOADS[k][0]) for k in results)
    head = (f"{'workload':<{label_width}} | {'direct ops/s':>12} | {'bindguard ops/s':>15} | "
            f"{'ratio bg/direct':>15} | target")
    print()
    print(head)
    print("-" * len(head))
    for key, runs in results.items():
        label = WORKLOADS[key][0]
        direct, proxied = runs.get("direct"), runs.get("bindguard")
        d = _fmt_rate(direct.rate) if direct else "-"
        b = _fmt_rate(proxied.rate) if proxied else "-"
        ratio, goal = "-", ""
        if direct and proxied and direct.ops:
            value = proxied.rate / direct.rate
            ratio = f"{value:.2f}"
            if key in GOALS:
                goal = f">= {GOALS[key]:.1f} " + ("met" if value >= GOALS[key] else "MISSED")
        print(f"{label:<{label_width}} | {d:>12} | {b:>15} | {ratio:>15} | {goal}")
    if "cbu1" in results:
        print()
        for target, run in results["cbu1"].items():
            print(f"p50 latency, connect+bind+unbind, 1 process, {target:<9}: "
                  f"{_fmt_ms(run.percentile(0.5))}  (p99 {_fmt_ms(run.percentile(0.99))})")
    print()
    print(f"CPU seconds used during each {seconds:g} s window (2 cores = {2 * seconds:g} s "
          "available):")
    print(f"{'workload':<{label_width}} | {'target':<9} | {'clients':>7} | {'slapd':>6} | "
          f"{'bindguard':>9}")
    for key, runs in results.items():
        for target, run in runs.items():
            bg = f"{run.bindguard_cpu:.2f}" if target == "bindguard" else "-"
            print(f"{WORKLOADS[key][0]:<{label_width}} | {target:<9} | {run.client_cpu:7.2f} | "
                  f"{run.slapd_cpu:6.2f} | {bg:>9}")
    print()
    total = 0
    for key, runs in results.items():
        for target, run in runs.items():
            for message, count in run.errors.items():
                total += count
                print(f"ERROR {key} {target}: {count} x {message}")
    print(f"client errors: {total}")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="measured seconds per workload and target (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="warm-up seconds before each measurement (default 1)")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help=f"comma-separated workloads (default all: {','.join(WORKLOADS)})")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help="comma-separated targets (default: direct,bindguard)")
    parser.add_argument("--bindguard-cprofile", metavar="FILE", default=None,
                        help="run bindguard under cProfile, writing its stats to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    parser.add_argument("--rules", choices=("lockout", "all"), default="lockout",
                        help="lockout only (default), or every password and inactivity rule")
    args = parser.parse_args(argv)
    workloads = [w for w in args.only.split(",") if w]
    targets = [t for t in args.targets.split(",") if t]
    unknown = [w for w in workloads if w not in WORKLOADS] + [t for t in targets
                                                              if t not in TARGETS]
    if unknown:
        parser.error(f"unknown workload or target: {', '.join(unknown)}")
    cprofile = os.path.abspath(args.bindguard_cprofile) if args.bindguard_cprofile else None

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    workdir = Path(tempfile.mkdtemp(prefix="bindguard-bench-"))
    slapd = Slapd(workdir / "slapd", log_stats=False)  # as a production directory runs
    bindguard = Bindguard(workdir, slapd.port, cprofile,
                          ALL_RULES if args.rules == "all" else "")
    live: list[Any] = []
    try:
        slapd.start()
        pids = {"slapd": int((slapd.workdir / "slapd.pid").read_text().split()[0])
                if (slapd.workdir / "slapd.pid").exists() else slapd._proc.pid}  # type: ignore
        if "bindguard" in targets:
            bindguard.start()
            assert bindguard.proc is not None
            pids["bindguard"] = bindguard.proc.pid
        print(f"slapd {slapd.uri} (pid {pids['slapd']}), bindguard {bindguard.uri} "
              f"(pid {pids.get('bindguard', '-')}), workdir {workdir}", flush=True)
        print(f"{args.seconds:g} s per workload and target after {args.warmup:g} s warm-up; "
              f"rules: {args.rules}", flush=True)
        uris = {"direct": slapd.uri, "bindguard": bindguard.uri}
        results: dict[str, dict[str, Run]] = {}
        bindguard_binds = 0
        for key in workloads:
            label, kind, processes = WORKLOADS[key]
            results[key] = {}
            for target in targets:
                run = run_workload(kind, processes, uris[target], args.seconds, args.warmup,
                                   pids, live)
                results[key][target] = run
                if target == "bindguard":
                    bindguard_binds += run.binds
                print(f"  {label:<45} {target:<9} {_fmt_rate(run.rate):>8} ops/s"
                      f"{'  errors: ' + str(sum(run.errors.values())) if run.errors else ''}",
                      flush=True)
        errors = report(results, args.seconds)
        if "bindguard" in targets:
            print(f"audit log: {bindguard.successes()} auth.success events for "
                  f"{bindguard_binds} binds sent through bindguard")
        slapd_log = slapd.log_path.stat().st_size if slapd.log_path.exists() else 0
        print(f"slapd stats log: {slapd_log / 1e6:.1f} MB written")
        return 1 if errors else 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for p in live:
            if p.is_alive():
                p.terminate()
        for p in live:
            p.join(timeout=5)
        bindguard.stop()
        slapd.stop()
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
