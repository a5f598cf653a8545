"""Helpers for the integration tier: the real ``bindguard serve`` process and real clients."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proxy.demo.slapd import ADMIN_DN, ADMIN_PASSWORD, Slapd, free_port

BINDGUARD = shutil.which("bindguard") or str(Path(sys.executable).parent / "bindguard")

BASE_CONFIG = """
[proxy]
listen = tcp:{port}:interface=127.0.0.1
upstream = {upstream}
upstream_timeout = {timeout}
state = {state}
audit_log = {audit}
pam_socket = {pam_socket}
{proxy}

[directory]
user_dn_template = uid={{user}},ou=people,dc=example,dc=org

[security_compliance]
lockout_failure_attempts = {attempts}
{compliance}
"""


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Block until 127.0.0.1:port accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


class Daemon:
    """One ``bindguard serve`` process with its own config, state and audit files."""

    def __init__(self, workdir: Path, upstream: str, attempts: int = 5, timeout: float = 2.0,
                 compliance: str = "lockout_duration = 600", state: Path | None = None,
                 name: str = "bindguard", env: dict[str, str] | None = None,
                 proxy: str = "") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / f"{name}.ini"
        self.state = state or workdir / "state.sqlite"
        self.audit_path = workdir / f"{name}-audit.jsonl"
        self.log_path = workdir / f"{name}.log"
        # A short path: a Unix socket's path must fit in 108 bytes.
        self.pam_socket = Path(tempfile.mkdtemp(prefix="bg-", dir="/tmp")) / "pam.sock"
        self.config.write_text(BASE_CONFIG.format(
            port=self.port, upstream=upstream, timeout=timeout, state=self.state,
            audit=self.audit_path, attempts=attempts, compliance=compliance, proxy=proxy,
            pam_socket=self.pam_socket))
        self.env = env  # extra environment of the daemon (e.g. libfaketime's)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")
        env = {**os.environ, **self.env} if self.env else None
        self.process = subprocess.Popen([BINDGUARD, "serve", "-c", str(self.config)],
                                        stdout=log, stderr=log, env=env)
        log.close()
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"bindguard did not start:\n{self.log_path.read_text()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the daemon and wait for it; return its exit code."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        shutil.rmtree(self.pam_socket.parent, ignore_errors=True)
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``bindguard ARGS -c CONFIG``."""
        return subprocess.run([BINDGUARD, *args, "-c", str(self.config)], capture_output=True,
                              text=True, timeout=30)

    def status(self, user: str) -> dict[str, Any]:
        result = self.cli("status", user, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def audit(self) -> list[dict[str, str]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def log_text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def whoami(uri: str, dn: str, password: str, *extra: str,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the real ``ldapwhoami`` (simple bind)."""
    return subprocess.run(["ldapwhoami", "-x", "-H", uri, "-D", dn, "-w", password, *extra],
                           capture_output=True, text=True, timeout=timeout)


def modify(uri: str, as_dn: str, password: str, ldif: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``ldapmodify`` with ``ldif`` on standard input."""
    return subprocess.run(["ldapmodify", "-x", "-H", uri, "-D", as_dn, "-w", password],
                          input=ldif, capture_output=True, text=True, timeout=30)


def shadow_last_change(directory: Slapd, dn: str, days_ago: int) -> None:
    """Set the account's shadowLastChange ``days_ago`` days back, straight in slapd."""
    today = int(time.time() // 86400)
    result = modify(directory.uri, ADMIN_DN, ADMIN_PASSWORD,
                    f"dn: {dn}\nchangetype: modify\nadd: objectClass\nobjectClass: "
                    f"shadowAccount\n-\nreplace: shadowLastChange\nshadowLastChange: "
                    f"{today - days_ago}\n-\n")
    assert result.returncode == 0, result.stderr


def hup(daemon: Daemon, expect: str, timeout: float = 10.0) -> None:
    """Send SIGHUP and wait for the daemon to log ``expect`` once more."""
    before = daemon.log_text().count(expect)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while daemon.log_text().count(expect) == before:
        assert time.monotonic() < deadline, daemon.log_text()[-2000:]
        time.sleep(0.05)


def enrol(daemon: Daemon, user: str) -> Any:
    """`bindguard otp enroll USER`: the authenticator an app would make of the printed URI."""
    import pyotp

    result = daemon.cli("otp", "enroll", user)
    assert result.returncode == 0, result.stderr
    uris = [line for line in result.stdout.splitlines() if line.startswith("otpauth://")]
    assert len(uris) == 1, result.stdout
    totp = pyotp.parse_uri(uris[0])
    assert isinstance(totp, pyotp.TOTP)
    assert totp.digits == 6 and totp.interval == 30
    assert uris[0].startswith(f"otpauth://totp/bindguard:{user}?")
    return totp
