"""Throwaway OpenLDAP (slapd) server seeded with demo accounts.

Used by the product's demo command and by the integration tests.  Each
:class:`Slapd` owns a work directory holding its configuration, its mdb
database and its stats log (``slapd.log``), and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

SUFFIX = "dc=example,dc=org"
PEOPLE = "ou=people,dc=example,dc=org"
SERVICES = "ou=services,dc=example,dc=org"
ADMIN_DN = "cn=admin,dc=example,dc=org"
ADMIN_PASSWORD = "admin-secret"
SERVICE_UID = "svc-app"
SERVICE_DN = f"uid={SERVICE_UID},{SERVICES}"
SERVICE_PASSWORD = "svc-app-pass"

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"
SCHEMAS = ("core", "cosine", "inetorgperson", "nis")

DEMO_USERS: dict[str, str] = {
    "alice": "alice-pass-1",
    "bob": "bob-pass-2",
    "carol": "carol-pass-3",
    "dave": "dave-pass-4",
    **{f"user{i:02d}": f"pw-user{i:02d}" for i in range(30)},
}

# slapd -d 256 (stats) line for a simple bind (DN as sent, spaces stripped, case kept):
#   6b039c81.2484d6a9 0x7fccf01fe6c0 conn=1001 op=0 BIND dn="uid=alice,ou=..." method=128
_BIND_RE = re.compile(r' BIND dn="([^"]*)" method=128\b')


def user_dn(uid: str) -> str:
    """Return the DN of the demo user ``uid`` under :data:`PEOPLE`."""
    return f"uid={uid},{PEOPLE}"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ssha(password: str, salt: bytes | None = None) -> str:
    """Return ``password`` hashed as an RFC 2307 ``{SSHA}`` userPassword value."""
    salt = os.urandom(8) if salt is None else salt
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _person(dn: str, uid: str, password: str) -> str:
    """Return the LDIF block for one inetOrgPerson entry."""
    return (
        f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
        f"sn: {uid}\nuserPassword: {ssha(password)}\n"
    )


def demo_ldif() -> str:
    """Return the LDIF for the suffix, both OUs, all demo users and the service account."""
    blocks = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\n"
        "dc: example\no: Example Org\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {SERVICES}\nobjectClass: organizationalUnit\nou: services\n",
    ]
    blocks += [_person(user_dn(uid), uid, pw) for uid, pw in DEMO_USERS.items()]
    blocks.append(_person(SERVICE_DN, SERVICE_UID, SERVICE_PASSWORD))
    return "\n".join(blocks)


def _q(path: Path) -> str:
    """Quote a filesystem path for slapd.conf."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


class Slapd:
    """A slapd process serving the demo directory from ``workdir``."""

    def __init__(self, workdir: Path, port: int | None = None, log_stats: bool = True,
                 ppolicy: bool = False, tls: tuple[Path, Path] | None = None,
                 tls_port: int | None = None) -> None:
        """Prepare (but do not start) a server in ``workdir`` on ``port`` (random if None).

        ``log_stats`` writes slapd's stats log (one line per operation, what ``bind_count``
        reads); benchmarks turn it off, as a production directory would run. ``ppolicy`` loads
        the password policy overlay (no policy): slapd then keeps ``pwdChangedTime`` and lets
        an administrator set ``pwdReset``, as directories bindguard reads them from do.
        ``tls`` is a (certificate, private key) pair of PEM files: slapd then offers StartTLS
        on ``uri`` and listens for LDAPS on ``tls_uri`` too (``tls_port``, random if None).
        """
        self.workdir = Path(workdir)
        self.log_stats = log_stats
        self.ppolicy = ppolicy
        self.port = free_port() if port is None else port
        self.tls = tls
        self.tls_port = (free_port() if tls_port is None else tls_port) if tls else None
        self.conf_path = self.workdir / "slapd.conf"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "slapd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def uri(self) -> str:
        """LDAP URI clients should connect to."""
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def tls_uri(self) -> str:
        """LDAPS URI (only with ``tls``)."""
        if self.tls_port is None:
            raise ValueError("this slapd has no TLS (tls=None)")
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def running(self) -> bool:
        """Whether the slapd process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _write_conf(self) -> None:
        """Write slapd.conf into the work directory."""
        w = self.workdir
        lines = [f"include {_q(Path(SCHEMA_DIR) / f'{s}.schema')}" for s in SCHEMAS]
        lines += [
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
            *(["moduleload ppolicy.la"] if self.ppolicy else []),
            f"pidfile {_q(w / 'slapd.pid')}",
            f"argsfile {_q(w / 'slapd.args')}",
            "loglevel stats" if self.log_stats else "loglevel none",
            *([f"TLSCertificateFile {_q(self.tls[0])}",
               f"TLSCertificateKeyFile {_q(self.tls[1])}"] if self.tls else []),
            "",
            "database mdb",
            f'suffix "{SUFFIX}"',
            f'rootdn "{ADMIN_DN}"',
            f"rootpw {ADMIN_PASSWORD}",
            f"directory {_q(self.data_dir)}",
            "maxsize 104857600",
            "index objectClass eq",
            "index uid eq",
            *(["overlay ppolicy"] if self.ppolicy else []),
            "sizelimit unlimited",
            "access to attrs=userPassword by self write by anonymous auth by * none",
            "access to * by * read",
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _load_data(self) -> None:
        """Load the demo LDIF with slapadd unless the database already exists."""
        if (self.data_dir / "data.mdb").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ldif = self.workdir / "data.ldif"
        ldif.write_text(demo_ldif())
        res = subprocess.run(
            [SLAPADD, "-q", "-f", str(self.conf_path), "-l", str(ldif)],
            capture_output=True, text=True, check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"slapadd failed ({res.returncode}): {res.stderr.strip()}")

    def start(self, timeout: float = 10.0) -> None:
        """Start slapd and wait until it accepts TCP connections; no-op if running."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        self._load_data()
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [SLAPD, "-f", str(self.conf_path), "-h",
             " ".join([f"{self.uri}/", *([f"{self.tls_uri}/"] if self.tls else [])]),
             "-d", "256" if self.log_stats else "0"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise RuntimeError(f"slapd exited with {code}:\n{self._log_tail()}")
            try:
                for port in (self.port, self.tls_port):
                    if port is not None:
                        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"slapd not listening on {self.uri} after {timeout}s:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Terminate slapd (SIGTERM, then SIGKILL after 5 s); safe to call repeatedly."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Send ``sig`` to the process group led by ``proc``, ignoring vanished ones."""
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def log_text(self) -> str:
        """Return the whole slapd log (stats level) written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, lines: int = 30) -> str:
        """Return the last ``lines`` lines of the slapd log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def bind_count(self, dn: str | None = None) -> int:
        """Count simple binds logged by slapd, only those for ``dn`` if given."""
        binds = _BIND_RE.findall(self.log_text())
        if dn is None:
            return len(binds)
        want = _norm_dn(dn)
        return sum(1 for got in binds if _norm_dn(got) == want)

    def __enter__(self) -> Slapd:
        """Start the server and return it."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()


def _norm_dn(dn: str) -> str:
    """Loosely normalise a DN for comparison: lowercase, no spaces around separators."""
    return re.sub(r"\s*([,=+])\s*", r"\1", dn.strip()).lower()
