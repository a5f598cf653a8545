"""The client side of the daemon's PAM socket, shared by the pam_exec helper and the pam_python
module. Standard library only, and only its cheapest parts: it runs on every login.

A frame is a 4-byte big-endian length and a JSON object. Before a password is sent, the socket
must be a socket owned by root (as SSSD's client checks), so that nobody else can stand in for
the daemon.

Why the C modules (``_socket``, ``_json``) rather than ``socket`` and ``json``: those import
``enum`` and ``re``, which cost more than the whole rest of a login's work here (measured: 20 ms
of imports against ~2 ms for these). Requests are flat objects of strings, booleans and
integers; replies are read with the json package's own C scanner.
"""
from __future__ import annotations

import os
import stat

try:
    import _json
    from _socket import AF_UNIX, SOCK_STREAM
    from _socket import socket as _socket
except ImportError:  # another Python implementation: the ordinary modules
    from socket import AF_UNIX, SOCK_STREAM  # type: ignore[assignment]
    from socket import socket as _socket  # type: ignore[assignment]
    _json = None  # type: ignore[assignment]

VERSION = 1
MAX_FRAME = 64 * 1024
DEFAULT_CONFIG = "/etc/bindguard/bindguard.ini"
DEFAULT_SOCKET = "/run/bindguard/pam.sock"
TIMEOUT = 30.0  # seconds for one reply; the daemon answers a dead directory sooner


class Unreachable(Exception):
    """The daemon could not be asked: no socket, a socket not owned by root, no answer."""


def socket_path(config: str) -> str:
    """``[proxy] pam_socket`` of the config file, or its default.

    Reads only that line, as the daemon's configparser would for a value on one line: keys
    are case-sensitive, ``;`` or ``#`` start a comment at the start of a line or after
    whitespace. (configparser itself would import ``re``, most of a login's time.)
    """
    try:
        with open(config, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as exc:
        raise Unreachable(f"cannot read {config}: {exc.strerror}") from None
    section = ""
    for line in lines:
        text = line.strip()
        if not text or text[0] in ";#":
            continue
        if text.startswith("[") and text.endswith("]"):
            section = text[1:-1].strip()
        elif section == "proxy" and line[:1] not in " \t" and "=" in text:
            key, _, value = text.partition("=")
            if key.strip() == "pam_socket":
                return _uncomment(value).strip() or DEFAULT_SOCKET
    return DEFAULT_SOCKET


def _uncomment(value: str) -> str:
    for index, char in enumerate(value):
        if char in ";#" and index > 0 and value[index - 1] in " \t":
            return value[:index]
    return value


def check_owner(path: str, owner: int = 0) -> None:
    """Refuse a path that is not a socket, or not owned by ``owner`` (root)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise Unreachable(f"{path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise Unreachable(f"{path} is not a socket")
    if info.st_uid != owner:
        raise Unreachable(f"{path} is owned by uid {info.st_uid}, not root: not asking it")


def encode(request: dict[str, object]) -> bytes:
    """A request frame: the length, then the JSON object (flat: strings, booleans, ints)."""
    if _json is None:
        import json

        body = json.dumps({"version": VERSION, **request}, separators=(",", ":")).encode()
    else:
        parts = []
        for key, value in {"version": VERSION, **request}.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, int):
                text = str(value)
            else:
                text = _json.encode_basestring_ascii(str(value))
            parts.append(_json.encode_basestring_ascii(key) + ":" + text)
        body = ("{" + ",".join(parts) + "}").encode("ascii")
    return len(body).to_bytes(4, "big") + body


class _Context:
    """What json's C scanner reads from json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    memo: dict[str, str] = {}


def decode(body: bytes) -> dict[str, object]:
    """A reply frame's JSON object (without its length)."""
    text = body.decode("utf-8")
    if _json is None:
        import json

        reply = json.loads(text)
    else:
        reply, end = _json.make_scanner(_Context())(text, 0)  # type: ignore[attr-defined]
        if text[end:].strip():
            raise ValueError("data after the JSON object")
    if not isinstance(reply, dict):
        raise ValueError("not a JSON object")
    return reply


class Connection:
    """One conversation with the daemon: requests in turn, one reply each."""

    def __init__(self, path: str, owner: int = 0, timeout: float = TIMEOUT) -> None:
        check_owner(path, owner)
        self.sock = _socket(AF_UNIX, SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise Unreachable(f"{path}: {exc.strerror or exc}") from None

    def ask(self, request: dict[str, object]) -> dict[str, object]:
        """Send one request; return the daemon's reply."""
        try:
            self.sock.sendall(encode(request))
            size = int.from_bytes(self._read(4), "big")
            if size > MAX_FRAME:
                raise Unreachable("reply too large")
            reply = decode(self._read(size))
        except (OSError, ValueError) as exc:  # StopIteration-free: the scanner raises these
            raise Unreachable(f"the daemon's socket broke: {exc}") from None
        except StopIteration:
            raise Unreachable("the daemon's reply is not JSON") from None
        if reply.get("version") != VERSION:
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
