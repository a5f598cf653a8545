"""bindguard behind pam_exec, end to end: a real PAM stack in /etc/pam.d runs the `bindguard-pam`
helper, which asks the real daemon over its Unix socket, which binds to the real slapd (or asks a
local PAM service for [pam_backend] users). Driven by python-pam (in this process) and by
pamtester (a C caller), with ONE state shared with LDAP binds through the same daemon.

Each test writes its own /etc/pam.d/bindguard-test-<random> file, removed at teardown. Needs
root (to write /etc/pam.d, create local users and own sockets as root)."""
from __future__ import annotations

import grp
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pam  # type: ignore[import-untyped]
import pytest
from procs import Daemon, enrol, whoami

from proxy.demo.slapd import DEMO_USERS, Slapd, user_dn

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="writes /etc/pam.d and needs a root peer"),
    pytest.mark.skipif(shutil.which("pamtester") is None, reason="pamtester is not installed"),
]

REPO = Path(__file__).resolve().parents[2]
HELPER_PY = REPO / "pam_module" / "helper.py"
# pam_exec has no PATH: absolute interpreter, and -I -S to skip the site imports on every login.
FAST_HELPER = f"{sys.executable} -I -S {HELPER_PY}"
# The installed console script, beside this interpreter (not a pyenv shim).
CONSOLE_HELPER = Path(sys.executable).parent / "bindguard-pam"
SYSTEM_PYTHON = "/usr/bin/python3"  # /root/.pyenv is not readable by nobody

ALICE, BOB = user_dn("alice"), user_dn("bob")
ALICE_PW, BOB_PW = DEMO_USERS["alice"], DEMO_USERS["bob"]


# -- helpers ----------------------------------------------------------------------------------

def exec_stack(config: Path, helper: str = FAST_HELPER, log: Path | None = None,
               account: bool = True) -> str:
    """The pam_exec stack of conf/pam.d/bindguard-exec, pointing at ``helper`` and ``config``
    (``log``: pam_exec keeps the helper's stderr there; ``account=False``: pam_permit for the
    account phase)."""
    extra = f" log={log}" if log else ""
    return (f"auth     required  pam_exec.so expose_authtok quiet{extra} {helper} -c {config}\n"
            "auth     optional  pam_permit.so\n"
            + (f"account  required  pam_exec.so quiet{extra} {helper} -c {config}\n" if account
               else "account  required  pam_permit.so\n"))


@pytest.fixture
def pam_service() -> Iterator[Callable[[str], str]]:
    """Write a /etc/pam.d/bindguard-test-<random> file with the given text; its service name.
    Every file is removed at teardown."""
    made: list[Path] = []

    def make(text: str) -> str:
        name = f"bindguard-test-{secrets.token_hex(4)}"
        path = Path("/etc/pam.d") / name
        path.write_text(text)
        made.append(path)
        return name

    yield make
    for path in made:
        path.unlink(missing_ok=True)


def wait_for_socket(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_socket():
            return
        time.sleep(0.02)
    raise TimeoutError(f"no PAM socket at {path}")


def start(make_daemon: Any, **options: Any) -> Daemon:
    """A running daemon whose PAM socket is up."""
    daemon: Daemon = make_daemon(**options)
    wait_for_socket(daemon.pam_socket)
    return daemon


def login(service: str, user: str, password: str) -> pam.PamAuthenticator:
    """python-pam's authenticate through ``service``; the authenticator (``.code``, ``.reason``).
    resetcreds=False skips pam_setcred; python-pam still runs pam_acct_mgmt after a successful
    pam_authenticate, so a success here went through both the auth and the account phase."""
    checker = pam.pam()
    checker.authenticate(user, password, service=service, resetcreds=False)
    return checker


def pamtester(service: str, user: str, *operations: str,
              password: str | None = None) -> subprocess.CompletedProcess[str]:
    """``pamtester SERVICE USER OPERATIONS`` (a C caller); the password on standard input."""
    return subprocess.run(["pamtester", service, user, *(operations or ("authenticate",))],
                          input=f"{password}\n" if password is not None else "",
                          capture_output=True, text=True, timeout=60)


def run_helper(config: Path | str, user: str = "alice", password: str = "x",
               pam_type: str = "auth") -> subprocess.CompletedProcess[bytes]:
    """The helper run as pam_exec runs it: PAM_* items only, password NUL-terminated on stdin."""
    env = {"PAM_USER": user, "PAM_TYPE": pam_type, "PAM_SERVICE": "bindguard-test",
           "PAM_RHOST": "", "PAM_TTY": ""}
    return subprocess.run([*FAST_HELPER.split(), "-c", str(config)], env=env,
                          input=password.encode() + b"\x00", capture_output=True, timeout=60)


def events(daemon: Daemon, dn: str, front: str | None = None) -> list[dict[str, str]]:
    return [e for e in daemon.audit()
            if e["user"] == dn.lower() and (front is None or e["front"] == front)]




class FakeDaemon:
    """A root-owned Unix socket standing in for the daemon: ``close`` reads the request and
    hangs up without a word; ``garbage`` answers a frame that is not JSON; ``version`` answers
    success in a version the helper does not speak; ``success`` answers a well-formed success.
    Records every connection and every byte received."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.dir = Path(tempfile.mkdtemp(prefix="bg-fake-", dir="/tmp"))
        self.path = self.dir / "pam.sock"
        self.config = self.dir / "bindguard.ini"
        self.config.write_text(f"[proxy]\npam_socket = {self.path}\n")
        self.connections = 0
        self.received = b""
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                try:
                    head = conn.recv(4)
                    self.received += head
                    if len(head) == 4:
                        (size,) = struct.unpack(">I", head)
                        while size > 0:
                            chunk = conn.recv(size)
                            if not chunk:
                                break
                            self.received += chunk
                            size -= len(chunk)
                except OSError:
                    continue
                if self.behaviour == "garbage":
                    conn.sendall(struct.pack(">I", 7) + b"garbage")
                elif self.behaviour in ("version", "success"):
                    version = 2 if self.behaviour == "version" else 1
                    body = json.dumps({"version": version, "result": "success"}).encode()
                    conn.sendall(struct.pack(">I", len(body)) + body)
                # "close": nothing at all

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def fake_daemon() -> Iterator[Callable[[str], FakeDaemon]]:
    made: list[FakeDaemon] = []

    def make(behaviour: str) -> FakeDaemon:
        made.append(FakeDaemon(behaviour))
        return made[-1]

    yield make
    for fake in made:
        fake.close()


# -- password, second factor, audit -----------------------------------------------------------

def test_right_password_succeeds_wrong_fails_and_audit_names_pam(make_daemon: Any,
                                                                  pam_service: Any) -> None:
    """Through the pam_exec stack, the right password logs in and a wrong one does not, for
    python-pam and pamtester alike; the audit says front "pam" and names the PAM service."""
    daemon = start(make_daemon)
    service = pam_service(exec_stack(daemon.config))

    good = login(service, "alice", ALICE_PW)
    assert good.code == pam.PAM_SUCCESS, good.reason
    bad = login(service, "alice", "wrong-password")
    assert bad.code != pam.PAM_SUCCESS

    ok = pamtester(service, "bob", password=BOB_PW)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "successfully authenticated" in ok.stdout + ok.stderr
    refused = pamtester(service, "bob", password="wrong-password")
    assert refused.returncode != 0, refused.stdout + refused.stderr

    alice = events(daemon, ALICE)
    assert [e["event"] for e in alice] == ["auth.success", "auth.failure"], alice
    assert all(e["front"] == "pam" and service in e["client"] for e in alice), alice
    assert alice[1]["reason"] in ("invalid_credentials", "directory_result_49"), alice
    bob = events(daemon, BOB)
    assert [e["event"] for e in bob] == ["auth.success", "auth.failure"], bob
    assert all(e["front"] == "pam" and service in e["client"] for e in bob), bob


def test_second_factor_appended_to_the_password(make_daemon: Any, pam_service: Any) -> None:
    """An enrolled user logs in with password+code; the password alone is refused (otp.missing),
    as is a wrong code."""
    daemon = start(make_daemon)
    service = pam_service(exec_stack(daemon.config))
    totp = enrol(daemon, "alice")

    alone = login(service, "alice", ALICE_PW)
    assert alone.code != pam.PAM_SUCCESS
    wrong = login(service, "alice", ALICE_PW + ("000000" if totp.now() != "000000" else "111111"))
    assert wrong.code != pam.PAM_SUCCESS
    right = login(service, "alice", ALICE_PW + totp.now())
    assert right.code == pam.PAM_SUCCESS, right.reason

    alice = events(daemon, ALICE, "pam")
    assert [e["event"] for e in alice] == ["auth.failure", "auth.failure", "auth.success"], alice
    assert alice[0]["reason"] == "otp.missing", alice
    assert alice[1]["reason"].startswith("otp."), alice


# -- one lockout for PAM and LDAP -------------------------------------------------------------

def test_lockout_pam_failures_then_ldap_failure_locks(make_daemon: Any, pam_service: Any,
                                                       slapd: Slapd) -> None:
    """attempts=4: three wrong PAM logins and one wrong ldapwhoami through the daemon lock the
    account; then the right password is refused over PAM too, without reaching slapd."""
    daemon = start(make_daemon, attempts=4)
    service = pam_service(exec_stack(daemon.config))

    for _ in range(3):
        assert login(service, "alice", "wrong-password").code != pam.PAM_SUCCESS
    assert daemon.status("alice")["failures"] == 3
    assert not daemon.status("alice")["locked"]
    assert whoami(daemon.uri, ALICE, "wrong-password").returncode == 49

    status = daemon.status("alice")
    assert status["locked"] is True, status
    assert any(e["event"] == "account.locked" for e in events(daemon, ALICE)), daemon.audit()

    binds = slapd.bind_count(ALICE)
    assert login(service, "alice", ALICE_PW).code != pam.PAM_SUCCESS
    assert pamtester(service, "alice", password=ALICE_PW).returncode != 0
    assert slapd.bind_count(ALICE) == binds  # a locked account never reaches the directory
    last = events(daemon, ALICE, "pam")[-1]
    assert (last["event"], last["reason"]) == ("auth.failure", "locked"), last


def test_lockout_ldap_failures_then_pam_failure_locks(make_daemon: Any, pam_service: Any) -> None:
    """attempts=4: three wrong LDAP binds and one wrong PAM login lock the account; then the
    right password is refused over PAM and over LDAP."""
    daemon = start(make_daemon, attempts=4)
    service = pam_service(exec_stack(daemon.config))

    for _ in range(3):
        assert whoami(daemon.uri, ALICE, "wrong-password").returncode == 49
    assert daemon.status("alice")["failures"] == 3
    assert login(service, "alice", "wrong-password").code != pam.PAM_SUCCESS

    status = daemon.status("alice")
    assert status["locked"] is True, status
    locked = [e for e in events(daemon, ALICE) if e["event"] == "account.locked"]
    assert len(locked) == 1 and locked[0]["front"] == "pam", daemon.audit()

    assert login(service, "alice", ALICE_PW).code != pam.PAM_SUCCESS
    assert whoami(daemon.uri, ALICE, ALICE_PW).returncode == 49


# -- the failure table: every fault refuses the login -----------------------------------------

def test_daemon_stopped_refuses(make_daemon: Any, pam_service: Any) -> None:
    """Daemon stopped (socket gone): the login is refused; the helper exits 2 and says the
    daemon is unreachable."""
    daemon = start(make_daemon)
    service = pam_service(exec_stack(daemon.config))
    assert login(service, "alice", ALICE_PW).code == pam.PAM_SUCCESS
    daemon.stop()

    refused = login(service, "alice", ALICE_PW)
    assert refused.code != pam.PAM_SUCCESS
    assert pamtester(service, "alice", password=ALICE_PW).returncode != 0
    helper = run_helper(daemon.config, password=ALICE_PW)
    assert helper.returncode == 2, helper
    assert b"unreachable" in helper.stderr, helper.stderr
    assert b"login of alice refused" in helper.stderr, helper.stderr


def test_daemon_killed_socket_left_behind_refuses(make_daemon: Any, pam_service: Any) -> None:
    """Daemon killed (SIGKILL: its socket file stays, nobody listens): refused, exit 2,
    "unreachable ... Connection refused"."""
    daemon = start(make_daemon)
    service = pam_service(exec_stack(daemon.config))
    assert daemon.process is not None
    daemon.process.kill()
    daemon.process.wait(10)
    assert daemon.pam_socket.is_socket()

    assert login(service, "alice", ALICE_PW).code != pam.PAM_SUCCESS
    helper = run_helper(daemon.config, password=ALICE_PW)
    assert helper.returncode == 2, helper
    assert b"unreachable" in helper.stderr and b"refused" in helper.stderr.lower(), helper.stderr


def test_directory_unreachable_refuses(make_daemon: Any, pam_service: Any, slapd: Slapd) -> None:
    """slapd stopped: the login is refused; the audit says directory_unavailable and the
    daemon's log says the directory is unavailable; the failure does not count."""
    daemon = start(make_daemon)
    service = pam_service(exec_stack(daemon.config))
    slapd.stop()

    assert login(service, "alice", ALICE_PW).code != pam.PAM_SUCCESS
    helper = run_helper(daemon.config, password=ALICE_PW)
    assert helper.returncode == 1, helper
    assert b"directory unavailable" in helper.stderr, helper.stderr

    alice = events(daemon, ALICE, "pam")
    assert alice and all(e["reason"] == "directory_unavailable" for e in alice), alice
    assert "directory unavailable" in daemon.log_text(), daemon.log_text()
    assert daemon.status("alice")["failures"] == 0


@pytest.mark.parametrize(("behaviour", "message"), [
    ("close", b"closed the connection"),
    ("garbage", b"not JSON"),
    ("version", b"not a reply of this version"),
])
def test_socket_broken_mid_conversation_refuses(fake_daemon: Any, pam_service: Any,
                                                tmp_path: Path, behaviour: str,
                                                message: bytes) -> None:
    """A root-owned socket that takes the request then hangs up, answers garbage, or answers
    "success" in another protocol version: the helper exits 2 with a clear message and the
    login is refused (through PAM as well: pam_exec's log= keeps the same message)."""
    fake = fake_daemon(behaviour)
    helper = run_helper(fake.config, password=ALICE_PW)
    assert helper.returncode == 2, helper
    assert b"unreachable" in helper.stderr and message in helper.stderr, helper.stderr
    assert fake.connections == 1 and b'"type":"authenticate"' in fake.received

    log = tmp_path / "helper.log"
    service = pam_service(exec_stack(fake.config, log=log))
    assert login(service, "alice", ALICE_PW).code != pam.PAM_SUCCESS
    assert message in log.read_bytes(), log.read_bytes()


def test_socket_not_owned_by_root_never_gets_the_password(fake_daemon: Any,
                                                          pam_service: Any) -> None:
    """A socket owned by nobody (here one that would even answer success): the helper refuses
    to ask it — it never connects, so the password is never sent — and says why."""
    fake = fake_daemon("success")
    nobody = pwd.getpwnam("nobody")
    os.chown(fake.path, nobody.pw_uid, grp.getgrnam("nogroup").gr_gid)

    helper = run_helper(fake.config, password=ALICE_PW)
    assert helper.returncode == 2, helper
    assert b"not root" in helper.stderr, helper.stderr
    service = pam_service(exec_stack(fake.config))
    assert login(service, "alice", ALICE_PW).code != pam.PAM_SUCCESS
    assert pamtester(service, "alice", password=ALICE_PW).returncode != 0
    assert fake.connections == 0 and fake.received == b""

    os.chown(fake.path, 0, 0)  # the same socket owned by root is asked (the control)
    assert run_helper(fake.config, password=ALICE_PW).returncode == 0
    assert fake.connections == 1


# -- account management -----------------------------------------------------------------------

def test_account_phase(make_daemon: Any, pam_service: Any) -> None:
    """`pamtester NAME alice acct_mgmt` succeeds normally and fails once alice is locked."""
    daemon = start(make_daemon, attempts=3)
    service = pam_service(exec_stack(daemon.config))

    ok = pamtester(service, "alice", "acct_mgmt")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "account management done" in ok.stdout + ok.stderr

    for _ in range(3):
        assert login(service, "alice", "wrong-password").code != pam.PAM_SUCCESS
    assert daemon.status("alice")["locked"] is True
    locked = pamtester(service, "alice", "acct_mgmt")
    assert locked.returncode != 0, locked.stdout + locked.stderr
    assert pamtester(service, "bob", "acct_mgmt").returncode == 0

    assert daemon.cli("unlock", "alice").returncode == 0
    assert pamtester(service, "alice", "acct_mgmt").returncode == 0


# -- only root is served ----------------------------------------------------------------------

NOBODY_CLIENT = r"""
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except PermissionError as exc:
    print(json.dumps({"connect": "EACCES", "error": str(exc)})); sys.exit(0)
# The daemon answers at once on connection; read that first (sending first races with its
# close, and a close with unread data resets the connection).
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
body = json.dumps({"version": 1, "type": "authenticate", "user": "alice",
                   "password": sys.argv[2]}).encode()
try:
    s.sendall(struct.pack(">I", len(body)) + body)
    sent = True
except OSError:
    sent = False
(size,) = struct.unpack(">I", data[:4])
print(json.dumps({"connect": "ok", "reply": json.loads(data[4:4 + size]), "sent": sent}))
"""


def as_nobody(path: Path, password: str) -> dict[str, Any]:
    result = subprocess.run(["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-I", "-c",
                             NOBODY_CLIENT, str(path), password],
                            capture_output=True, text=True, timeout=30, cwd="/")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_non_root_peer_is_refused(make_daemon: Any, slapd: Slapd) -> None:
    """The socket is mode 0600: nobody cannot even connect (EACCES). Made 0666 by hand, the
    daemon still answers nobody only "denied: only root may ask" (SO_PEERCRED) and never binds
    to the directory."""
    daemon = start(make_daemon)
    os.chmod(daemon.pam_socket.parent, 0o755)  # /run/bindguard is 0755: only the mode guards
    assert stat.S_IMODE(daemon.pam_socket.stat().st_mode) == 0o600
    assert daemon.pam_socket.stat().st_uid == 0

    assert as_nobody(daemon.pam_socket, ALICE_PW)["connect"] == "EACCES"

    os.chmod(daemon.pam_socket, 0o666)
    binds = slapd.bind_count(ALICE)
    answer = as_nobody(daemon.pam_socket, ALICE_PW)
    assert answer["connect"] == "ok", answer
    assert answer["reply"]["result"] == "denied", answer
    assert answer["reply"]["message"] == "only root may ask", answer
    assert "only root is served" in daemon.log_text()
    assert slapd.bind_count(ALICE) == binds
    assert events(daemon, ALICE) == []


# -- [pam_backend]: local accounts ------------------------------------------------------------

@pytest.fixture
def local_user() -> Iterator[tuple[str, str]]:
    """A throwaway local account (no home, no shell) with a password; deleted at teardown."""
    name = f"bgtestuser{secrets.randbelow(100000)}"
    password = f"Local-{secrets.token_hex(6)}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True, timeout=30)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True,
                       timeout=30)
        yield name, password
    finally:
        subprocess.run(["userdel", name], timeout=30)


def test_pam_backend_local_account(make_daemon: Any, pam_service: Any,
                                   local_user: tuple[str, str], slapd: Slapd) -> None:
    """A [pam_backend] user is checked by a local PAM service (pam_unix) behind the same
    pam_exec stack: right password in, wrong out, locked after 3 failures (then even the right
    one is refused), and `bindguard status USER` shows its failures under its local key."""
    user, password = local_user
    # nodelay: pam_unix would otherwise wait ~2 s after each failure.
    local = pam_service("auth     required  pam_unix.so nodelay\n"
                        "account  required  pam_unix.so\n")
    daemon = start(make_daemon, attempts=3, compliance=(
        f"lockout_duration = 600\n\n[pam_backend]\nservice = {local}\nusers = {user}\n"))
    service = pam_service(exec_stack(daemon.config))

    ok = login(service, user, password)
    assert ok.code == pam.PAM_SUCCESS, ok.reason
    assert pamtester(service, user, password=password).returncode == 0
    assert login(service, user, "wrong-password").code != pam.PAM_SUCCESS
    status = daemon.status(user)
    assert status["failures"] == 1 and not status["locked"], status
    assert "local" in status["user"], status
    assert slapd.bind_count(f"uid={user},ou=people,dc=example,dc=org") == 0

    assert login(service, user, "wrong-password").code != pam.PAM_SUCCESS
    assert daemon.status(user)["failures"] == 2
    assert login(service, user, "wrong-password").code != pam.PAM_SUCCESS
    status = daemon.status(user)
    assert status["locked"] is True, status  # a lock starts with the failures forgotten
    assert login(service, user, password).code != pam.PAM_SUCCESS
    assert pamtester(service, user, "acct_mgmt").returncode != 0

    key = status["user"]
    mine = [e for e in daemon.audit() if e["user"] == key]
    assert [e["event"] for e in mine] == [
        "auth.success", "auth.success", "auth.failure", "auth.failure", "auth.failure",
        "account.locked", "auth.failure"], mine
    assert mine[-1]["reason"] == "locked"
    # The demo directory users still go to slapd through the same daemon.
    assert login(service, "bob", BOB_PW).code == pam.PAM_SUCCESS


# -- the installed helper, and what a login costs ---------------------------------------------

def test_installed_console_script(make_daemon: Any, pam_service: Any) -> None:
    """The console script `bindguard-pam` installed beside this interpreter works as the
    pam_exec helper."""
    helper = CONSOLE_HELPER
    assert helper.is_file() and os.access(helper, os.X_OK), helper
    assert "shims" not in str(helper)
    daemon = start(make_daemon)
    service = pam_service(exec_stack(daemon.config, helper=str(helper)))
    ok = login(service, "alice", ALICE_PW)
    assert ok.code == pam.PAM_SUCCESS, ok.reason
    assert events(daemon, ALICE, "pam")[-1]["event"] == "auth.success"


def p50_ms(service: str, user: str, password: str, runs: int = 30) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        checker = login(service, user, password)
        times.append(time.perf_counter() - started)
        assert checker.code == pam.PAM_SUCCESS, checker.reason
    return statistics.median(times) * 1000


def test_login_cost(make_daemon: Any, pam_service: Any, tmp_path: Path) -> None:
    """Measures (prints, asserts nothing about speed) the p50 of 30 python-pam logins through
    the `-I -S` helper and through trivial helpers (a `-I -S` script that reads stdin, /bin/true).
    python-pam runs auth then account, so each login runs the helper twice; the "auth only"
    rows put pam_permit in the account phase. Run with -s to see the figures."""
    daemon = start(make_daemon)
    trivial = tmp_path / "trivial.py"
    trivial.write_text("import sys\nsys.stdin.buffer.read()\n")
    figures = {
        "bindguard helper (-I -S)": pam_service(exec_stack(daemon.config)),
        "trivial python -I -S": pam_service(exec_stack(
            daemon.config, helper=f"{sys.executable} -I -S {trivial}")),
        "/bin/true": pam_service(exec_stack(daemon.config, helper="/bin/true")),
        "bindguard helper (-I -S), auth only": pam_service(exec_stack(daemon.config,
                                                                       account=False)),
        "trivial python -I -S, auth only": pam_service(exec_stack(
            daemon.config, helper=f"{sys.executable} -I -S {trivial}", account=False)),
        "/bin/true, auth only": pam_service(exec_stack(daemon.config, helper="/bin/true",
                                                       account=False)),
    }
    results = {label: p50_ms(service, "alice", ALICE_PW) for label, service in figures.items()}
    print()
    for label, value in results.items():
        print(f"pam_exec login p50 over 30, {label}: {value:.1f} ms")
