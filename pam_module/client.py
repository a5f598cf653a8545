"""The client side of the daemon's PAM socket, shared by the pam_exec helper and the pam_python
module. Standard library only, and only its cheapest parts: it runs on every login.

A frame is a 4-byte big-endian length and a JSON object. Before a password is sent, the socket
must be a socket owned by root (as SSSD's client checks), so that nobody else can stand in for
the daemon.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import struct

VERSION = 1
MAX_FRAME = 64 * 1024
DEFAULT_CONFIG = "/etc/bindguard/bindguard.ini"
DEFAULT_SOCKET = "/run/bindguard/pam.sock"
TIMEOUT = 30.0  # seconds for the whole exchange: the daemon answers 52-like denials sooner


class Unreachable(Exception):
    """The daemon could not be asked: no socket, a socket not owned by root, no answer."""


def socket_path(config: str) -> str:
    """``[proxy] pam_socket`` of the config file (its default when the file does not set it).

    Read with configparser, as the daemon reads it; a config the daemon would refuse makes
    this fail too (Unreachable), which refuses the login.
    """
    import configparser

    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"),
                                       comment_prefixes=(";", "#"),
                                       default_section="\x00unused", strict=False)
    try:
        with open(config, encoding="utf-8") as file:
            parser.read_file(file)
    except (OSError, configparser.Error) as exc:
        raise Unreachable(f"cannot read {config}: {exc}") from None
    return parser.get("proxy", "pam_socket", fallback=DEFAULT_SOCKET).strip() or DEFAULT_SOCKET


def check_owner(path: str, owner: int = 0) -> None:
    """Refuse a socket that is not a socket, or not owned by ``owner`` (root)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise Unreachable(f"{path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise Unreachable(f"{path} is not a socket")
    if info.st_uid != owner:
        raise Unreachable(f"{path} is owned by uid {info.st_uid}, not root: not asking it")


class Connection:
    """One conversation with the daemon: requests in turn, one reply each."""

    def __init__(self, path: str, owner: int = 0, timeout: float = TIMEOUT) -> None:
        check_owner(path, owner)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise Unreachable(f"{path}: {exc.strerror or exc}") from None

    def ask(self, request: dict[str, object]) -> dict[str, object]:
        """Send one request; return the daemon's reply."""
        body = json.dumps({"version": VERSION, **request}, separators=(",", ":")).encode()
        try:
            self.sock.sendall(struct.pack(">I", len(body)) + body)
            (size,) = struct.unpack(">I", self._read(4))
            if size > MAX_FRAME:
                raise Unreachable("reply too large")
            reply = json.loads(self._read(size))
        except (OSError, ValueError) as exc:
            raise Unreachable(f"the daemon's socket broke: {exc}") from None
        if not isinstance(reply, dict) or reply.get("version") != VERSION:
            raise Unreachable("not a reply of this version")
        return reply

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise Unreachable("the daemon closed the connection")
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
