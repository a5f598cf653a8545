"""TLS end to end: StartTLS and LDAPS towards clients, require_tls, TLS to the directory
(ldaps:// and StartTLS upstreams, verified with host-name checking), and the reload of the
client-side certificate on SIGHUP. A throwaway CA (testca.py) signs every certificate; the
clients trust it through LDAPTLS_CACERT."""
from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ldap
import pytest
from cryptography import x509
from procs import Daemon, hup, wait_for_port
from testca import Issued, TestCA

from proxy.demo.slapd import DEMO_USERS, PEOPLE, Slapd, free_port, user_dn

pytestmark = pytest.mark.integration

ALICE = user_dn("alice")
STARTTLS_OID = b"1.3.6.1.4.1.1466.20037"
# LDAPMessage { messageID 1, ExtendedRequest { requestName [0] StartTLS } }
STARTTLS_PDU = (b"\x30" + bytes([5 + 2 + len(STARTTLS_OID)]) + b"\x02\x01\x01"
                + b"\x77" + bytes([2 + len(STARTTLS_OID)])
                + b"\x80" + bytes([len(STARTTLS_OID)]) + STARTTLS_OID)


class Certs:
    """The right CA with a certificate for localhost / 127.0.0.1, and an unrelated CA."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = TestCA(directory, "ca")
        self.wrong_ca = TestCA(directory, "wrong-ca")
        self.server: Issued = self.ca.issue("server")


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path / "pki")


@pytest.fixture
def tls_slapd(tmp_path: Path, certs: Certs) -> Iterator[Slapd]:
    """A slapd with TLS (StartTLS on ``uri``, LDAPS on ``tls_uri``), certificate from ``ca``."""
    server = Slapd(tmp_path / "tls-slapd", tls=certs.ca.issue("slapd").pair)
    server.start()
    yield server
    server.stop()


def tls_env(ca: Path) -> dict[str, str]:
    return {**os.environ, "LDAPTLS_CACERT": str(ca), "LDAPTLS_REQCERT": "demand"}


def ldap_tool(tool: str, uri: str, *args: str, ca: Path | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run an OpenLDAP client tool (simple auth) trusting ``ca``."""
    return subprocess.run([tool, "-x", "-H", uri, *args], capture_output=True, text=True,
                          timeout=timeout, env=tls_env(ca) if ca is not None else None)


def whoami(uri: str, dn: str, password: str, *extra: str,
           ca: Path | None = None) -> subprocess.CompletedProcess[str]:
    """ldapwhoami with a simple bind, trusting ``ca``."""
    return ldap_tool("ldapwhoami", uri, "-D", dn, "-w", password, *extra, ca=ca)


def tls_daemon(make_daemon: Any, certs: Certs, extra: str = "", ssl_listener: bool = False,
               **options: Any) -> Daemon:
    """A daemon with the server certificate for StartTLS; with ``ssl_listener`` also an
    ``ssl:`` listener on ``daemon.ssl_port`` (a second ``listen`` line)."""
    daemon: Daemon = make_daemon(start=False, proxy=(
        f"tls_certificate = {certs.server.cert}\n"
        f"tls_private_key = {certs.server.key}\n{extra}"), **options)
    daemon.ssl_port = None  # type: ignore[attr-defined]
    if ssl_listener:
        port = free_port()
        plain = f"listen = tcp:{daemon.port}:interface=127.0.0.1\n"
        text = daemon.config.read_text()
        assert plain in text
        daemon.config.write_text(text.replace(
            plain, f"{plain}    ssl:{port}:interface=127.0.0.1\n"))
        daemon.ssl_port = port  # type: ignore[attr-defined]
    daemon.start()
    if ssl_listener:
        wait_for_port(port)
    return daemon




def _read_pdu(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, f"connection closed after {data!r}"
            data += chunk
        return data

    head = exactly(2)
    length = head[1]
    if length & 0x80:
        extra = exactly(length & 0x7F)
        head += extra
        length = int.from_bytes(extra, "big")
    return head + exactly(length)


def starttls_certificate(port: int, ca: Path) -> x509.Certificate:
    """StartTLS by hand on 127.0.0.1:port, verify the server against ``ca`` (host name
    127.0.0.1), and return the certificate it showed."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(STARTTLS_PDU)
        answer = _read_pdu(raw)
        assert answer[answer.index(b"\x78"):][:5].endswith(b"\x0a\x01\x00"), answer.hex()
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def ldaps_certificate(port: int, ca: Path) -> x509.Certificate:
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


# -- towards clients ----------------------------------------------------------------------------


def test_starttls_through_the_proxy(make_daemon: Any, certs: Certs, slapd: Slapd) -> None:
    """ldapwhoami -ZZ binds through bindguard's StartTLS when it trusts the CA; with an
    unrelated CA the client refuses the certificate and the password never leaves it."""
    daemon = tls_daemon(make_daemon, certs)
    good = whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-ZZ", ca=certs.ca.cert_path)
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == f"dn:{ALICE}"
    binds = slapd.bind_count(ALICE)
    refused = whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-ZZ",
                     ca=certs.wrong_ca.cert_path)
    assert refused.returncode != 0
    assert "ldap_start_tls" in refused.stderr, refused.stderr
    assert slapd.bind_count(ALICE) == binds
    # The certificate seen after StartTLS is the configured one.
    assert starttls_certificate(daemon.port, certs.ca.cert_path).serial_number \
        == certs.server.serial


def test_starttls_without_a_certificate_is_refused(daemon: Daemon) -> None:
    """Without tls_certificate, StartTLS gets an error answer (-ZZ fails, -Z carries on in
    clear), never a half-open TLS connection."""
    strict = whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-ZZ")
    assert strict.returncode != 0
    assert "ldap_start_tls" in strict.stderr, strict.stderr
    lenient = whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-Z")
    assert lenient.returncode == 0, lenient.stderr


def test_ldaps_listener(make_daemon: Any, certs: Certs) -> None:
    """An ssl: listen item: ldapwhoami -H ldaps:// binds (bindguard wraps TCP in TLS with
    tls_certificate); the plain listener keeps working next to it."""
    daemon = tls_daemon(make_daemon, certs, ssl_listener=True)
    uri = f"ldaps://127.0.0.1:{daemon.ssl_port}"  # type: ignore[attr-defined]
    good = whoami(uri, ALICE, DEMO_USERS["alice"], ca=certs.ca.cert_path)
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == f"dn:{ALICE}"
    assert whoami(uri, ALICE, "wrong", ca=certs.ca.cert_path).returncode == 49
    assert ldaps_certificate(daemon.ssl_port,  # type: ignore[attr-defined]
                             certs.ca.cert_path).serial_number == certs.server.serial
    assert whoami(uri, ALICE, DEMO_USERS["alice"],
                  ca=certs.wrong_ca.cert_path).returncode != 0
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"]).returncode == 0


def test_require_tls(make_daemon: Any, certs: Certs, slapd: Slapd) -> None:
    """require_tls = true: a password bind in clear gets 13 and never reaches slapd; after
    StartTLS, or on the LDAPS listener, it binds; an anonymous search in clear still works
    (require_tls concerns passwords only)."""
    daemon = tls_daemon(make_daemon, certs, "require_tls = true\n", ssl_listener=True)
    binds = slapd.bind_count()
    clear = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    assert clear.returncode == 13, clear.stderr
    assert "Confidentiality required (13)" in clear.stderr
    assert slapd.bind_count() == binds
    assert daemon.status("alice")["failures"] == 0
    tls = whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-ZZ", ca=certs.ca.cert_path)
    assert tls.returncode == 0, tls.stderr
    ldaps = whoami(f"ldaps://127.0.0.1:{daemon.ssl_port}",  # type: ignore[attr-defined]
                   ALICE, DEMO_USERS["alice"], ca=certs.ca.cert_path)
    assert ldaps.returncode == 0, ldaps.stderr
    assert slapd.bind_count() == binds + 2
    search = ldap_tool("ldapsearch", daemon.uri, "-LLL", "-b", PEOPLE, "(uid=alice)", "uid")
    assert search.returncode == 0, search.stderr
    assert "uid: alice" in search.stdout


def test_require_tls_refuses_a_password_change_in_clear(make_daemon: Any, certs: Certs,
                                                        slapd: Slapd) -> None:
    """require_tls = true: a Password Modify sent in clear (anonymously, with the old and new
    passwords) gets 13; the directory's password is unchanged."""
    daemon = tls_daemon(make_daemon, certs, "require_tls = true\n")
    change = ldap_tool("ldappasswd", daemon.uri, "-a", DEMO_USERS["alice"],
                       "-s", "N3w-Passw0rd-long!", ALICE)
    assert change.returncode != 0  # ldappasswd exits 1 and prints the result on stdout
    assert "Confidentiality required (13)" in change.stdout, (change.stdout, change.stderr)
    assert whoami(slapd.uri, ALICE, DEMO_USERS["alice"]).returncode == 0


# -- towards the directory ----------------------------------------------------------------------


def bind_ssf(slapd_log: str) -> int:
    """The security strength factor of the connection slapd saw alice's bind on (0: clear)."""
    found = re.search(r'BIND dn="uid=alice,[^"]*" mech=SIMPLE bind_ssf=\d+ ssf=(\d+)',
                      slapd_log)
    assert found, slapd_log
    return int(found.group(1))


def _upstream_daemon(make_daemon: Any, upstream: str, ca: Path, starttls: bool = False
                     ) -> Daemon:
    extra = f"upstream_ca_file = {ca}\n" + ("upstream_starttls = true\n" if starttls else "")
    return make_daemon(upstream=upstream, proxy=extra)  # type: ignore[no-any-return]


def _assert_unavailable(daemon: Daemon, directory: Slapd, uri: str) -> None:
    binds = directory.bind_count()
    result = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    assert result.returncode == 52, result.stderr
    assert "Server is unavailable (52)" in result.stderr
    assert f"TLS to directory {uri} failed" in daemon.log_text(), daemon.log_text()[-2000:]
    assert directory.bind_count() == binds
    assert daemon.status("alice")["failures"] == 0


def test_ldaps_upstream(make_daemon: Any, certs: Certs, tls_slapd: Slapd) -> None:
    """upstream = ldaps://: a bind through bindguard reaches slapd over TLS when
    upstream_ca_file is the right CA."""
    daemon = _upstream_daemon(make_daemon, tls_slapd.tls_uri, certs.ca.cert_path)
    result = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    assert result.returncode == 0, result.stderr + daemon.log_text()[-2000:]
    assert result.stdout.strip() == f"dn:{ALICE}"
    assert tls_slapd.bind_count(ALICE) == 1
    log = tls_slapd.log_text()
    assert f"(IP=127.0.0.1:{tls_slapd.tls_port})" in log
    assert "TLS established" in log
    assert bind_ssf(log) > 0


def test_ldaps_upstream_with_the_wrong_ca(make_daemon: Any, certs: Certs,
                                          tls_slapd: Slapd) -> None:
    """upstream = ldaps:// verified against an unrelated CA: the client gets 52, the log
    says the TLS to the directory failed, and nothing is counted against the account."""
    daemon = _upstream_daemon(make_daemon, tls_slapd.tls_uri, certs.wrong_ca.cert_path)
    _assert_unavailable(daemon, tls_slapd, tls_slapd.tls_uri)


def test_starttls_upstream(make_daemon: Any, certs: Certs, tls_slapd: Slapd) -> None:
    """upstream = ldap:// with upstream_starttls = true: slapd sees the StartTLS request and
    a TLS connection before the bind, which succeeds."""
    daemon = _upstream_daemon(make_daemon, tls_slapd.uri, certs.ca.cert_path, starttls=True)
    result = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    assert result.returncode == 0, result.stderr + daemon.log_text()[-2000:]
    log = tls_slapd.log_text()
    assert f"EXT oid={STARTTLS_OID.decode()}" in log, log
    assert "TLS established" in log
    assert tls_slapd.bind_count(ALICE) == 1
    assert bind_ssf(log) > 0  # the bind went over the TLS connection


def test_starttls_upstream_with_the_wrong_ca(make_daemon: Any, certs: Certs,
                                             tls_slapd: Slapd) -> None:
    """StartTLS to the directory verified against an unrelated CA: 52 and the log line."""
    daemon = _upstream_daemon(make_daemon, tls_slapd.uri, certs.wrong_ca.cert_path,
                              starttls=True)
    _assert_unavailable(daemon, tls_slapd, tls_slapd.uri)


def test_upstream_host_name_is_checked(make_daemon: Any, certs: Certs, tmp_path: Path) -> None:
    """A directory whose certificate (from the trusted CA) names only other.example: 52 for
    ldaps:// and for StartTLS, since 127.0.0.1 is not the name in the certificate."""
    other = certs.ca.issue("other", dns=("other.example",), ips=())
    with Slapd(tmp_path / "other-slapd", tls=other.pair) as directory:
        ldaps = _upstream_daemon(make_daemon, directory.tls_uri, certs.ca.cert_path)
        _assert_unavailable(ldaps, directory, directory.tls_uri)
        starttls = _upstream_daemon(make_daemon, directory.uri, certs.ca.cert_path,
                                    starttls=True)
        _assert_unavailable(starttls, directory, directory.uri)


def test_upstream_by_dns_name(make_daemon: Any, certs: Certs, tls_slapd: Slapd) -> None:
    """upstream = ldaps://localhost:PORT: the DNS name in the certificate matches."""
    uri = f"ldaps://localhost:{tls_slapd.tls_port}"
    daemon = _upstream_daemon(make_daemon, uri, certs.ca.cert_path)
    result = whoami(daemon.uri, ALICE, DEMO_USERS["alice"])
    assert result.returncode == 0, result.stderr + daemon.log_text()[-2000:]


# -- reload ---------------------------------------------------------------------------------


def test_sighup_reloads_the_certificate(make_daemon: Any, certs: Certs) -> None:
    """New certificate and key files (same CA, another serial) + SIGHUP: "TLS certificate
    reloaded", new StartTLS and LDAPS connections see the new serial; a connection that
    began TLS before the reload keeps working."""
    daemon = tls_daemon(make_daemon, certs, ssl_listener=True)
    ca = certs.ca.cert_path
    assert starttls_certificate(daemon.port, ca).serial_number == certs.server.serial
    conn = ldap.initialize(daemon.uri)
    conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(ca))
    conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
    conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    conn.start_tls_s()
    conn.simple_bind_s(ALICE, DEMO_USERS["alice"])

    new = certs.ca.issue("server", serial=certs.server.serial + 1,
                         cert_path=certs.server.cert, key_path=certs.server.key)
    hup(daemon, "TLS certificate reloaded")
    assert starttls_certificate(daemon.port, ca).serial_number == new.serial
    assert ldaps_certificate(daemon.ssl_port,  # type: ignore[attr-defined]
                             ca).serial_number == new.serial
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-ZZ", ca=ca).returncode == 0
    assert conn.search_s(PEOPLE, ldap.SCOPE_ONELEVEL, "(uid=alice)", ["uid"])
    conn.unbind_s()


def test_sighup_with_an_unreadable_certificate_keeps_the_old_one(make_daemon: Any,
                                                                certs: Certs) -> None:
    """A certificate file that is not PEM + SIGHUP: "TLS certificate not reloaded", the
    rest of the configuration is reloaded, and StartTLS goes on with the old certificate."""
    daemon = tls_daemon(make_daemon, certs)
    ca = certs.ca.cert_path
    certs.server.cert.write_text("not a certificate\n")
    hup(daemon, "TLS certificate not reloaded")
    hup_done = time.monotonic() + 5
    while "configuration reloaded" not in daemon.log_text():
        assert time.monotonic() < hup_done, daemon.log_text()[-2000:]
        time.sleep(0.05)
    assert starttls_certificate(daemon.port, ca).serial_number == certs.server.serial
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-ZZ", ca=ca).returncode == 0


def test_sighup_with_a_mismatched_key_keeps_the_old_one(make_daemon: Any,
                                                        certs: Certs) -> None:
    """A private key that does not belong to the certificate + SIGHUP: the pair is refused
    ("TLS certificate not reloaded"), and StartTLS goes on with the old certificate instead of
    failing every new handshake."""
    daemon = tls_daemon(make_daemon, certs)
    ca = certs.ca.cert_path
    certs.ca.issue("stray", key_path=certs.server.key)  # the key of another certificate
    hup(daemon, "configuration reloaded")
    assert "TLS certificate not reloaded" in daemon.log_text(), daemon.log_text()[-2000:]
    assert "TLS certificate reloaded" not in daemon.log_text()
    assert starttls_certificate(daemon.port, ca).serial_number == certs.server.serial
    assert whoami(daemon.uri, ALICE, DEMO_USERS["alice"], "-ZZ", ca=ca).returncode == 0
