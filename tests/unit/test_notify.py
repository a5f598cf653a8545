"""proxy.notify: sd_notify datagrams to a real socket, and sockets passed by socket activation
(found in a child process that gets real descriptors and LISTEN_* variables, as from PID 1)."""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy import notify

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="bg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


# -- notify -----------------------------------------------------------------------------------

def test_notify_without_notify_socket_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.notify(notify.READY) is False


def test_notify_sends_one_datagram_to_a_path(short_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(short_dir / "notify.sock")
    with receiver(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify.notify(notify.READY) is True
        assert notify.notify("STATUS=serving\nSTOPPING=1") is True
        assert sock.recv(4096) == b"READY=1"
        assert sock.recv(4096) == b"STATUS=serving\nSTOPPING=1"


def test_notify_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"bindguard-test-{secrets.token_hex(8)}"
    with receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify(notify.STOPPING) is True
        assert sock.recv(4096) == b"STOPPING=1"


def test_reloading_carries_the_monotonic_time(short_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(short_dir / "notify.sock")
    with receiver(path) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        assert notify.notify(notify.reloading())
        message = sock.recv(4096).decode()
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", message)
    assert match, message
    assert int(match.group(1)) >= before // 1000


@pytest.mark.parametrize("address", ["/nonexistent/bindguard/notify.sock", "@bindguard-none-x",
                                     "vsock:2:1234", "relative/path"])
def test_notify_failure_is_reported_not_raised(address: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    assert notify.notify(notify.READY) is False


# -- inherited sockets ------------------------------------------------------------------------

# Runs in the child: moves the passed descriptors to 3, 4, ... (as PID 1 does), sets LISTEN_PID
# to its own pid (unless given) and LISTEN_FDS, then execs the probe in the same process.
WRAPPER = """
import fcntl, json, os, sys
fds = json.loads(sys.argv[1])
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ.setdefault("LISTEN_PID", str(os.getpid()))
os.environ.setdefault("LISTEN_FDS", str(len(fds)))
os.execv(sys.executable, [sys.executable, "-c", sys.argv[2], *sys.argv[3:]])
"""

PROBE = """
import fcntl, json, os, socket, sys
from proxy.notify import inherited_unix_socket
name = sys.argv[2] if len(sys.argv) > 2 else None
fd = inherited_unix_socket(sys.argv[1], name)
result = {"fd": fd}
if fd is not None:
    result["cloexec"] = bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
    sock = socket.socket(fileno=fd)
    conn, _ = sock.accept()  # the test connected before starting us
    conn.sendall(b"served")
    conn.close()
print(json.dumps(result))
"""


def run_probe(fds: list[int], path: str, name: str | None = None,
              env: dict[str, str] | None = None) -> dict[str, object]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    child_env["PYTHONPATH"] = str(REPO)
    child_env.update(env or {})
    args = [sys.executable, "-c", WRAPPER, json.dumps(fds), PROBE, path]
    if name is not None:
        args.append(name)
    result = subprocess.run(args, pass_fds=fds, env=child_env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def unix_listener(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(8)
    return sock


def test_inherited_socket_found_by_path_and_served(short_dir: Path) -> None:
    path = str(short_dir / "pam.sock")
    with unix_listener(path) as listener:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        client.connect(path)  # waits in the backlog, as a login during a restart would
        result = run_probe([listener.fileno()], path, env={"LISTEN_FDNAMES": "pam"})
        assert result == {"fd": 3, "cloexec": True}
        assert client.recv(100) == b"served"
        client.close()
        assert oct(os.lstat(path).st_mode & 0o777) == oct(0o600)


def test_inherited_socket_among_others(short_dir: Path) -> None:
    """systemd may pass several sockets: the right one is found by its address."""
    path = str(short_dir / "pam.sock")
    other_path = str(short_dir / "other.sock")
    tcp = socket.create_server(("127.0.0.1", 0))
    datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagram.bind(str(short_dir / "dgram.sock"))
    with tcp, datagram, unix_listener(other_path) as other, unix_listener(path) as listener:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(10)
        conn.connect(path)
        fds = [tcp.fileno(), datagram.fileno(), other.fileno(), listener.fileno()]
        assert run_probe(fds, path)["fd"] == 6
        assert conn.recv(100) == b"served"
        conn.close()


def test_inherited_socket_through_a_symlinked_directory(short_dir: Path) -> None:
    real = short_dir / "run"
    real.mkdir()
    (short_dir / "var-run").symlink_to(real)
    path = str(real / "pam.sock")
    with unix_listener(path) as listener:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        assert run_probe([listener.fileno()], str(short_dir / "var-run" / "pam.sock"))["fd"] == 3
        conn.close()


def test_inherited_socket_by_name(short_dir: Path) -> None:
    """A socket whose address is not the path is taken only when its FileDescriptorName
    is the name asked for."""
    path = str(short_dir / "pam.sock")
    with unix_listener(path) as listener:
        env = {"LISTEN_FDNAMES": "pam"}
        assert run_probe([listener.fileno()], "/run/elsewhere.sock", env=env) == {"fd": None}
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        assert run_probe([listener.fileno()], "/run/elsewhere.sock", "pam", env=env)["fd"] == 3
        conn.close()
        assert run_probe([listener.fileno()], "/run/elsewhere.sock", "ldap",
                         env=env) == {"fd": None}


@pytest.mark.parametrize("env", [
    {"LISTEN_PID": "1"},  # meant for another process
    {"LISTEN_FDS": "0"},
    {"LISTEN_FDS": "x"},
    {"LISTEN_PID": "not-a-pid"},
])
def test_inherited_socket_not_for_us(short_dir: Path, env: dict[str, str]) -> None:
    path = str(short_dir / "pam.sock")
    with unix_listener(path) as listener:
        assert run_probe([listener.fileno()], path, env=env) == {"fd": None}


def test_no_inherited_socket_without_listen_variables(short_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    assert notify.listen_fds() == []
    assert notify.inherited_unix_socket(str(short_dir / "pam.sock")) is None


def test_a_socket_that_does_not_listen_is_not_taken(short_dir: Path) -> None:
    path = str(short_dir / "pam.sock")
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(path)  # bound, never listen()ed
    with bound:
        assert run_probe([bound.fileno()], path) == {"fd": None}


def test_listen_fds_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "3")
    monkeypatch.setenv("LISTEN_FDNAMES", "pam:ldap")
    assert notify.listen_fds() == [(3, "pam"), (4, "ldap"), (5, "")]
    monkeypatch.delenv("LISTEN_FDNAMES")
    assert notify.listen_fds() == [(3, ""), (4, ""), (5, "")]


# Twisted's endpoints module deletes LISTEN_PID and LISTEN_FDS from os.environ when imported
# (twisted.python.systemd.ListenFDs); bindguard's config checks and daemon import it.
AFTER_TWISTED = """
import json, os, sys
{first}
import twisted.internet.endpoints
assert "LISTEN_FDS" not in os.environ, "Twisted kept LISTEN_FDS: this test is moot"
from proxy.notify import inherited_unix_socket
print(json.dumps({{"fd": inherited_unix_socket(sys.argv[1])}}))
"""


@pytest.mark.parametrize("first", ["import proxy.notify", "import proxy.config"])
def test_inherited_socket_found_after_twisted_took_the_variables(short_dir: Path,
                                                                 first: str) -> None:
    """proxy.notify keeps the variables it was imported with; importing any part of the
    ``proxy`` package (the CLI's way in) imports it first."""
    path = str(short_dir / "pam.sock")
    with unix_listener(path) as listener:
        args = [sys.executable, "-c", WRAPPER, json.dumps([listener.fileno()]),
                AFTER_TWISTED.format(first=first), path]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env["PYTHONPATH"] = str(REPO)
        result = subprocess.run(args, pass_fds=[listener.fileno()], env=env,
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"fd": 3}
