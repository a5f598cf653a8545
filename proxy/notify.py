"""systemd's side of the daemon: readiness notifications and sockets passed by socket activation.

Standard library only, no Twisted: the protocols are small (sd_notify(3), sd_listen_fds(3)).

- :func:`notify` sends a state (``READY=1``, ``STOPPING=1``, ``RELOADING=1``, ``STATUS=...``)
  to ``$NOTIFY_SOCKET`` — what ``Type=notify`` waits for. Without ``$NOTIFY_SOCKET`` (not run
  by systemd) it does nothing.
- :func:`inherited_unix_socket` finds the listening Unix socket PID 1 made for a path
  (``bindguard-pam.socket``) among the descriptors passed with ``LISTEN_FDS``.

Import this module before ``twisted.internet.endpoints``: that module takes LISTEN_PID and
LISTEN_FDS out of the environment when it is imported (``proxy/__init__.py`` imports this one).
"""
from __future__ import annotations

import logging
import os
import socket
import stat
import time

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3  # the first descriptor systemd passes

READY = "READY=1"
STOPPING = "STOPPING=1"


def reloading() -> str:
    """The state that starts a reload: ``RELOADING=1`` with the monotonic time (systemd 253's
    ``Type=notify-reload`` requires ``MONOTONIC_USEC``; earlier versions ignore it). Send
    :data:`READY` when the reload is over."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def notify(state: str) -> bool:
    """Send ``state`` (newline-separated ``KEY=VALUE`` lines) to ``$NOTIFY_SOCKET``.

    Returns True when it was sent; False when there is no ``$NOTIFY_SOCKET`` or it could not be
    reached (logged: a notification that fails must not stop the daemon). ``@`` at the start of
    the address names a socket in the abstract namespace.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET=%r is not a Unix socket path: not notified", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", state.splitlines()[0], exc)
        return False
    return True


_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# As they were when this module was first imported: importing twisted.internet.endpoints
# deletes LISTEN_PID and LISTEN_FDS from os.environ (twisted.python.systemd.ListenFDs), so the
# package imports this module first (proxy/__init__.py).
_AT_IMPORT = {name: os.environ.get(name) for name in _LISTEN_VARIABLES}


def listen_fds() -> list[tuple[int, str]]:
    """The descriptors systemd passed to this process, with their names (``LISTEN_FDNAMES``,
    ``""`` when not given); empty when they were meant for another process (``LISTEN_PID``).

    Read from the environment, or, when LISTEN_PID and LISTEN_FDS are no longer there, from
    the environment this module was imported with."""
    variables = {name: os.environ.get(name) for name in _LISTEN_VARIABLES}
    if variables["LISTEN_PID"] is None and variables["LISTEN_FDS"] is None:
        variables = _AT_IMPORT
    try:
        pid = int(variables["LISTEN_PID"] or "")
        count = int(variables["LISTEN_FDS"] or "")
    except ValueError:
        return []
    if pid != os.getpid() or count <= 0:
        return []
    given = variables["LISTEN_FDNAMES"]
    names = given.split(":") if given is not None else []
    names += [""] * (count - len(names))
    return [(SD_LISTEN_FDS_START + i, names[i]) for i in range(count)]


def inherited_unix_socket(path: str, name: str | None = None) -> int | None:
    """The listening ``AF_UNIX`` stream socket systemd passed for ``path``, or None.

    A passed descriptor matches when its bound address is ``path`` (symbolic links in the
    directories resolved, so ``/var/run/...`` matches ``/run/...``), or when ``name`` is given
    and it is the descriptor's ``LISTEN_FDNAMES`` entry (``FileDescriptorName=``). The
    descriptor is left open and made close-on-exec; the caller owns it from then on. The
    socket's file belongs to the socket unit: never unlink or chmod it.
    """
    for fd, fd_name in listen_fds():
        bound = _listening_unix_address(fd)
        if bound is None:
            continue
        if _same_path(bound, path) or (name is not None and fd_name == name):
            os.set_inheritable(fd, False)
            return fd
    return None


def _listening_unix_address(fd: int) -> str | None:
    """The address of ``fd`` when it is a listening AF_UNIX stream socket ('' when unnamed)."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
        probe = socket.socket(fileno=os.dup(fd))  # family and type read from the descriptor
    except OSError:
        return None
    with probe:
        try:
            if probe.family != socket.AF_UNIX or probe.type != socket.SOCK_STREAM:
                return None
            if not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return None
            address = probe.getsockname()
        except OSError:
            return None
    if isinstance(address, bytes):  # abstract namespace
        return "@" + address[1:].decode("utf-8", "replace") if address[:1] == b"\0" else ""
    return str(address)


def _same_path(bound: str, path: str) -> bool:
    if not bound or not path:
        return False
    if bound == path:
        return True
    if bound.startswith("@") or path.startswith("@"):
        return False

    def resolved(p: str) -> str:
        head, tail = os.path.split(os.path.abspath(p))
        return os.path.join(os.path.realpath(head), tail)

    return resolved(bound) == resolved(path)
