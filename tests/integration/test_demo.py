"""`bindguard demo`: the README's first command starts something that answers as printed."""
from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from procs import BINDGUARD, wait_for_port

from proxy.demo.slapd import free_port

pytestmark = pytest.mark.integration


def test_demo_runs_and_its_printed_commands_work() -> None:
    """The demo prints ldapwhoami lines that work as described, and cleans up on SIGTERM."""
    port = free_port()
    demo = subprocess.Popen([BINDGUARD, "demo", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port)
        lines: list[str] = []
        assert demo.stdout is not None
        while not any(line.startswith("Ctrl-C") for line in lines):
            lines.append(demo.stdout.readline().strip())
        commands = [line for line in lines if line.startswith("ldapwhoami")]
        right, wrong, locked = commands[0], commands[1], commands[2]
        assert subprocess.run(shlex.split(right), capture_output=True).returncode == 0
        for _ in range(3):
            assert subprocess.run(shlex.split(wrong), capture_output=True).returncode == 49
        result = subprocess.run(shlex.split(locked), capture_output=True, text=True)
        assert result.returncode == 49 and "Account locked" in result.stderr
        weak, good, reuse, *dave = [line for line in lines if line.startswith("ldappasswd")]
        result = subprocess.run(shlex.split(weak), capture_output=True, text=True)
        assert "Constraint violation (19)" in result.stdout
        assert "password_min_length" in result.stdout
        assert subprocess.run(shlex.split(good), capture_output=True).returncode == 0
        result = subprocess.run(shlex.split(reuse), capture_output=True, text=True)
        assert "unique_last_password_count" in result.stdout
        expire = next(line for line in lines if line.startswith("bindguard expire"))
        assert subprocess.run([BINDGUARD, *shlex.split(expire)[1:]]).returncode == 0
        search = next(line for line in lines if line.startswith("ldapsearch") and "-E" not in line)
        assert subprocess.run(shlex.split(search), capture_output=True).returncode == 50
        assert subprocess.run(shlex.split(dave[0]), capture_output=True).returncode == 0
        workdir = Path(next(line for line in lines if line.startswith("configuration:"))
                       .split()[-1]).parent
    finally:
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(15)
    assert code == 0
    time.sleep(0.1)
    assert not workdir.exists()
