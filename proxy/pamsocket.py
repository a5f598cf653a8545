"""Serving the PAM socket: the one systemd passes (bindguard-pam.socket, owned by root), served
as it is; or, without systemd, one made here (mode 0600: only root connects)."""
from __future__ import annotations

import logging
import os
from typing import Any

from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from proxy import notify

log = logging.getLogger(__name__)


class InheritedUnixPort(unix.Port):
    """A listening Unix socket passed by systemd (bindguard-pam.socket), served as it is.

    ``reactor.adoptStreamPort`` would chmod the file to 0666 (refused: it is root's), unlink it
    when the port stops (systemd.socket(5): a service must not; the socket unit keeps it across
    restarts) and shut the socket down (for PID 1 too). This port does none of that.
    """

    @classmethod
    def adopt(cls, reactor: Any, fd: int, factory: Factory) -> InheritedUnixPort:
        os.set_blocking(fd, False)
        port = cls._fromListeningDescriptor(reactor, fd, factory)  # on a duplicate of fd
        os.close(fd)
        port.startListening()
        return port  # type: ignore[no-any-return]

    def startListening(self) -> None:
        tcp._reservedFD.reserve()  # as tcp.Port does: accept() survives running out of fds
        skt, self._preexistingSocket = self._preexistingSocket, None
        self.factory.doStart()  # type: ignore[union-attr]
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign,union-attr]
        self.numberAccepts = 100
        self._shouldShutdown = False  # shutdown() would stop PID 1's socket as well
        self.startReading()

    def connectionLost(self, reason: Failure) -> None:
        tcp.Port.connectionLost(self, reason)  # not unix.Port's: it unlinks the file


def listen(reactor: Any, path: str, front: Factory) -> Deferred[Any]:
    """Serve the PAM socket at ``path``: the one systemd passed (socket activation), else a new
    one (mode 0600: only root connects), its directory made."""
    from twisted.internet.endpoints import UNIXServerEndpoint

    fd = notify.inherited_unix_socket(path)
    if fd is not None:
        log.info("PAM socket %s passed by systemd", path)
        return maybeDeferred(InheritedUnixPort.adopt, reactor, fd, front)
    if notify.listen_fds():
        log.warning("systemd passed sockets, none of them %s: is bindguard-pam.socket's "
                    "ListenStream the same as [proxy] pam_socket?", path)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    return UNIXServerEndpoint(reactor, path, mode=0o600, wantPID=True).listen(front)
