"""The systemd service: the unit files pass ``systemd-analyze verify``, the service's exposure
under ``systemd-analyze security`` stays "OK" or better, the sysusers.d and tmpfiles.d entries
apply, and the real ``bindguard serve`` speaks systemd's protocols — Type=notify (READY=1 once
listening, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM) and the PAM socket passed
by socket activation (served as it is: root's, mode 0600, never unlinked) — with this test
standing in for PID 1."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pam_module.client import Connection
from proxy.config import parse_config
from proxy.demo.slapd import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
SERVICE = UNITS / "bindguard.service"
SOCKET = UNITS / "bindguard-pam.socket"
INSTALLED = "/usr/local/bin/bindguard"  # ExecStart's path in the unit
BINDGUARD = str(Path(sys.executable).parent / "bindguard")  # the real script, not a shim
MAX_EXPOSURE = 2.0  # systemd-analyze security's score (0 best, 10 worst); "OK" is below 4.0

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chowns files to a new user")


def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as section → key → values (a key may be repeated)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text[0] in "#;":
            continue
        if text.startswith("[") and text.endswith("]"):
            current = sections.setdefault(text[1:-1], {})
            continue
        key, _, value = text.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def defaults() -> object:
    """The configuration's defaults (paths the unit must match)."""
    return parse_config("[proxy]\nupstream = ldap://127.0.0.1\n").proxy


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="bg-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- the unit files ---------------------------------------------------------------------------

@needs_analyze
def test_units_verify(tmp_path: Path) -> None:
    """No error and no warning, with ExecStart pointing at the bindguard installed here."""
    assert Path(BINDGUARD).exists()
    (tmp_path / SERVICE.name).write_text(SERVICE.read_text().replace(INSTALLED, BINDGUARD))
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / SERVICE.name), str(tmp_path / SOCKET.name)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


@needs_analyze
def test_security_exposure_is_ok() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(SERVICE)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for bindguard\.service: (\d+\.\d) (\w+)",
                      result.stdout)
    assert match, result.stdout
    score, level = float(match.group(1)), match.group(2)
    print(f"systemd-analyze security: {score} {level}")
    assert level in ("SAFE", "OK"), result.stdout
    assert score <= MAX_EXPOSURE, result.stdout


def test_service_directives() -> None:
    service = unit(SERVICE)
    s = {key: values[-1] for key, values in service["Service"].items()}
    assert s["Type"] == "notify"
    assert s["User"] == s["Group"] == "bindguard"
    assert s["ExecStart"] == f"{INSTALLED} serve -c /etc/bindguard/bindguard.ini"
    assert s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["Restart"] == "always" and s["RestartSec"] == "2"
    assert s["TimeoutStopSec"] == "10"
    assert s["StateDirectory"] == "bindguard" and s["StateDirectoryMode"] == "0700"
    assert s["LogsDirectory"] == "bindguard"
    assert s["AmbientCapabilities"] == s["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
                       "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
                       "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
                       "ProtectClock": "yes", "ProtectHostname": "yes",
                       "RestrictNamespaces": "yes", "RestrictRealtime": "yes",
                       "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
                       "MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native"
                       }.items():
        assert s.get(key) == value, key
    assert set(s["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "@system-service" in service["Service"]["SystemCallFilter"]
    # /run/bindguard is the socket unit's: a RuntimeDirectory of that name would be chowned to
    # bindguard at start (the socket with it: the PAM helper would refuse it) and removed at stop.
    assert "bindguard" not in service["Service"].get("RuntimeDirectory", [])
    assert "bindguard-pam.socket" in service["Unit"]["Requires"][0].split()
    assert "bindguard-pam.socket" in service["Unit"]["After"][0].split()
    assert service["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_paths_match_the_configuration_defaults() -> None:
    """The daemon writes only where the unit lets it: StateDirectory, LogsDirectory."""
    proxy = defaults()
    s = unit(SERVICE)["Service"]
    assert os.path.dirname(proxy.state) == "/var/lib/" + s["StateDirectory"][0]  # type: ignore
    assert os.path.dirname(proxy.key_file) == "/var/lib/" + s["StateDirectory"][0]  # type: ignore
    assert os.path.dirname(proxy.audit_log) == "/var/log/" + s["LogsDirectory"][0]  # type: ignore
    assert unit(SOCKET)["Socket"]["ListenStream"] == [proxy.pam_socket]  # type: ignore


def test_socket_unit() -> None:
    sock = {key: values[-1] for key, values in unit(SOCKET)["Socket"].items()}
    assert sock["ListenStream"] == "/run/bindguard/pam.sock"
    assert sock["SocketUser"] == "root" and sock["SocketMode"] == "0600"
    assert sock["Service"] == "bindguard.service"
    assert unit(SOCKET)["Install"]["WantedBy"] == ["sockets.target"]


@needs_root
@pytest.mark.skipif(shutil.which("systemd-sysusers") is None or
                    shutil.which("systemd-tmpfiles") is None, reason="systemd is not installed")
def test_sysusers_and_tmpfiles(tmp_path: Path) -> None:
    """Applied to an empty root: the user and group, /etc/bindguard root:bindguard 0750."""
    root = tmp_path / "root"
    for sub in ("etc", "var/lib", "var/log"):
        (root / sub).mkdir(parents=True)
    for tool, source, extra in (("systemd-sysusers", "bindguard.sysusers", []),
                                ("systemd-tmpfiles", "bindguard.tmpfiles", ["--create"])):
        result = subprocess.run([tool, f"--root={root}", *extra, "-"],
                                input=(UNITS / source).read_text(), capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "ignoring" not in result.stderr.lower(), result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in
              (root / "etc/passwd").read_text().splitlines()}
    group = {line.split(":")[0]: line.split(":") for line in
             (root / "etc/group").read_text().splitlines()}
    user = passwd["bindguard"]
    assert int(user[2]) < 1000, "a system user"
    assert user[3] == group["bindguard"][2]
    assert user[6] in ("/usr/sbin/nologin", "/sbin/nologin")
    gid = int(group["bindguard"][2])
    etc = (root / "etc/bindguard").stat()
    assert (etc.st_uid, etc.st_gid, oct(etc.st_mode & 0o777)) == (0, gid, oct(0o750))
    state = (root / "var/lib/bindguard").stat()
    assert (state.st_uid, oct(state.st_mode & 0o777)) == (int(user[2]), oct(0o700))


# -- the daemon under systemd's protocols ------------------------------------------------------

CONFIG = """
[proxy]
listen = tcp:{port}:interface=127.0.0.1
upstream = ldap://127.0.0.1:{dead}
state = {dir}/state.sqlite
audit_log = {dir}/audit.jsonl
pam_socket = {pam_socket}

[directory]
user_dn_template = uid={{user}},ou=people,dc=example,dc=org

[security_compliance]
lockout_failure_attempts = 5
"""

# Stands in for PID 1: moves the passed descriptor to 3, sets LISTEN_PID to its own pid and
# LISTEN_FDS, then execs the daemon in the same process.
ACTIVATE = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="pam")
os.execv(sys.argv[2], sys.argv[2:])
"""


class Notifications:
    """The datagram socket a Type=notify service reports to (systemd's NOTIFY_SOCKET)."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen: list[str] = []

    def wait_for(self, state: str, timeout: float = 20.0) -> list[str]:
        """Messages up to the first that holds ``state`` as one of its lines."""
        deadline = time.monotonic() + timeout
        got: list[str] = []
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            got.append(message)
            self.seen.append(message)
            if state in message.splitlines():
                return got
        raise AssertionError(f"no {state} within {timeout} s; got {got}")

    def pending(self) -> list[str]:
        self.sock.settimeout(0.3)
        got = []
        try:
            while True:
                got.append(self.sock.recv(4096).decode())
        except TimeoutError:
            return got

    def close(self) -> None:
        self.sock.close()


class Served:
    """``bindguard serve`` with NOTIFY_SOCKET, optionally with a PAM socket passed as fd 3."""

    def __init__(self, directory: Path, pam_socket: str = "") -> None:
        self.directory = directory
        self.port = free_port()
        self.config = directory / "bindguard.ini"
        self.config.write_text(CONFIG.format(port=self.port, dead=free_port(), dir=directory,
                                             pam_socket=pam_socket))
        self.notifications = Notifications(directory)
        self.log = directory / "bindguard.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, listener: socket.socket | None = None) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env["NOTIFY_SOCKET"] = self.notifications.path
        args = [BINDGUARD, "serve", "-c", str(self.config)]
        fds: list[int] = []
        if listener is not None:
            fds = [listener.fileno()]
            args = [sys.executable, "-c", ACTIVATE, str(listener.fileno()), *args]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, env=env, pass_fds=fds, stdout=log, stderr=log)
        return self.process

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        assert self.process is not None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.notifications.close()


@pytest.fixture
def served(short_dir: Path) -> Iterator[Served]:
    daemon = Served(short_dir)
    yield daemon
    daemon.close()


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_ready_once_listening_and_stopping_on_sigterm(served: Served) -> None:
    process = served.start()
    served.notifications.wait_for("READY=1")
    assert connectable(served.port), "READY=1 before the LDAP listener was up"
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    served.notifications.wait_for("STOPPING=1")
    assert process.wait(15) == 0, served.log_text()
    served.process = None
    assert not any("READY=1" in m.splitlines() for m in served.notifications.pending())


def test_reload_on_sighup(served: Served) -> None:
    """``systemctl reload`` (ExecReload=kill -HUP): RELOADING=1 then READY=1, and the daemon
    goes on serving (SIGHUP's default action would kill it)."""
    process = served.start()
    served.notifications.wait_for("READY=1")
    process.send_signal(signal.SIGHUP)
    messages = served.notifications.wait_for("RELOADING=1")
    assert re.search(r"^MONOTONIC_USEC=\d+$", messages[-1], re.M), messages
    served.notifications.wait_for("READY=1")
    time.sleep(0.2)
    assert process.poll() is None, served.log_text()
    assert connectable(served.port)
    assert served.stop() == 0, served.log_text()


def test_no_ready_when_a_listener_fails(served: Served) -> None:
    with socket.create_server(("127.0.0.1", served.port)):  # the port is taken
        process = served.start()
        assert process.wait(30) == 1, served.log_text()
    served.process = None
    assert not any("READY=1" in m.splitlines() for m in served.notifications.pending())


def ask_account(path: str) -> dict[str, object]:
    with Connection(path, owner=os.getuid(), timeout=20) as conn:
        return conn.ask({"type": "account", "user": "alice"})


def test_pam_socket_passed_by_systemd(short_dir: Path) -> None:
    """The daemon serves the socket it is given, as it is: the file stays the socket unit's
    (owner, mode 0600), survives the daemon's exit and keeps listening for the next start;
    a login waiting in the backlog while the daemon starts is answered."""
    path = str(short_dir / "run" / "pam.sock")
    os.mkdir(short_dir / "run", 0o755)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(16)
    before = os.lstat(path)
    daemon = Served(short_dir, pam_socket=path)
    try:
        for _ in range(2):  # a restart: the same socket, passed again
            waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            waiting.settimeout(20)
            waiting.connect(path)  # before the daemon runs: queued by the kernel
            daemon.start(listener)
            daemon.notifications.wait_for("READY=1")
            assert ask_account(path)["result"] == "success", daemon.log_text()
            waiting.close()
            now = os.lstat(path)
            assert (now.st_uid, oct(now.st_mode & 0o7777)) == (before.st_uid, oct(0o600))
            assert not os.path.exists(path + ".lock")
            assert daemon.stop() == 0, daemon.log_text()
            assert os.path.exists(path), "the daemon unlinked the socket unit's socket"
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.connect(path)  # still listening: not shut down by the daemon
            probe.close()
        assert "cannot serve the PAM socket" not in daemon.log_text()
    finally:
        daemon.close()
        listener.close()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed")
def test_started_by_a_connection_to_the_pam_socket(short_dir: Path) -> None:
    """systemd-socket-activate plays bindguard-pam.socket: it listens, and starts the daemon
    with the socket (LISTEN_FDS, LISTEN_FDNAMES) when a login connects."""
    path = str(short_dir / "pam.sock")
    daemon = Served(short_dir, pam_socket=path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    # It passes on only the variables named with -E.
    passed = [f"-E{name}" for name in ("PYTHONPATH", "PATH") if name in env]
    with open(daemon.log, "ab") as log:
        daemon.process = subprocess.Popen(
            ["systemd-socket-activate", "-l", path, "--fdname=pam", *passed,
             f"-ENOTIFY_SOCKET={daemon.notifications.path}", "--",
             BINDGUARD, "serve", "-c", str(daemon.config)],
            env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ask_account(path)["result"] == "success", daemon.log_text()
        daemon.notifications.wait_for("READY=1")
        assert daemon.stop() == 0, daemon.log_text()
    finally:
        daemon.close()


def test_config_of_the_e2e_daemon_is_valid(short_dir: Path) -> None:
    """Guards the tests above: their configuration passes check-config."""
    daemon = Served(short_dir, pam_socket=str(short_dir / "pam.sock"))
    try:
        result = subprocess.run([BINDGUARD, "check-config", "-c", str(daemon.config)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        daemon.close()
