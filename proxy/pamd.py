"""The PAM front: a Unix socket where PAM modules ask the daemon, and get instructions back.

Frames are a 4-byte big-endian length and a JSON object (at most MAX_FRAME bytes) with
``"version": 1``. Only root is served (SO_PEERCRED): PAM runs as root in sshd, login, su and
sudo. Requests:

- ``authenticate``: user, password (a second factor appended, or asked for when ``converse``),
  service, rhost, tty;
- ``code``: the second factor a ``prompt_code`` instruction asked for (same connection, same
  ``session``);
- ``account``: may this user log in now (PAM account management);
- ``chauthtok``: change the password: old (a second factor appended, or asked for), new.

Replies are instructions: ``success``, ``denied``, ``prompt_code``, ``change_password``, each
with an optional ``message`` the module may show the user.
"""
from __future__ import annotations

import json
import logging
import secrets
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from proxy.backends import DirectoryBackend, DirectoryUnavailable, PamBackend
from proxy.config import Config
from proxy.identity import UnknownUser, is_local, user_to_dn
from proxy.ldap.upstream import UpstreamHealth, UpstreamTLS
from proxy.metrics import NULL_METRICS, MetricsRecorder
from proxy.policy.password import Violation
from proxy.service import Attempt, AuthService, BindVerdict, ChangePlan, PasswordChange
from proxy.transitions import Refusal

log = logging.getLogger(__name__)

VERSION = 1
MAX_FRAME = 64 * 1024
_HEADER = struct.Struct(">I")
DENIED = "Authentication failed"  # every refusal of a password looks alike
CODE_PROMPT = "Verification code: "
ACCOUNT_MESSAGES = {"locked": "Account locked: too many failed logins",
                    "disabled": "Account disabled after a long time without a login"}
REFUSED_GRACE_SECONDS = 5.0  # a refused peer may read its answer, then it is cut off

SUCCESS, DENIED_RESULT = "success", "denied"
PROMPT_CODE, CHANGE_PASSWORD = "prompt_code", "change_password"


class BadRequest(Exception):
    """A frame that is not a valid request: the connection is closed."""


@dataclass(frozen=True)
class PamRequest:
    """One request from a PAM module. Its repr never shows a password or a code."""

    type: str
    user: str
    service: str = ""
    rhost: str = ""
    tty: str = ""
    converse: bool = False  # the module can ask for a code in a second prompt
    session: str = ""
    password: str = field(default="", repr=False)
    code: str = field(default="", repr=False)
    new_password: str = field(default="", repr=False)

    @property
    def client(self) -> str:
        """Where the login comes from, for the audit log."""
        return f"{self.rhost or 'local'} ({self.service or 'pam'})"


_TYPES = {"authenticate", "code", "account", "chauthtok"}
_STRINGS = ("user", "service", "rhost", "tty", "session", "password", "code", "new_password")


def parse_request(frame: bytes) -> PamRequest:
    """Decode and check one request frame (without its length)."""
    try:
        obj = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("not a JSON object") from None
    if not isinstance(obj, dict):
        raise BadRequest("not a JSON object")
    if obj.get("version") != VERSION:
        raise BadRequest(f"unsupported version {obj.get('version')!r}")
    if obj.get("type") not in _TYPES:
        raise BadRequest("unknown request type")
    values: dict[str, Any] = {"type": obj["type"], "converse": obj.get("converse") is True}
    for name in _STRINGS:
        value = obj.get(name, "")
        if not isinstance(value, str) or "\x00" in value:
            raise BadRequest(f"{name} must be a string")
        values[name] = value
    if obj["type"] != "code" and not values["user"]:
        raise BadRequest("user missing")
    return PamRequest(**values)


def frame(reply: dict[str, Any]) -> bytes:
    """One reply frame."""
    body = json.dumps({"version": VERSION, **reply}, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


def peer_uid(transport: Any) -> int | None:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    try:
        handle = transport.getHandle()
        raw = handle.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (AttributeError, OSError):
        return None
    return int(struct.unpack("3i", raw)[1])


class PamSession(Protocol):
    """One connection from a PAM module: requests in turn, one reply each."""

    def __init__(self, front: PamFront) -> None:
        self.front = front
        self.buffer = b""
        self.busy = False
        self.pending: PamRequest | None = None  # waiting for the code a prompt asked for
        self.refused = False  # a peer that is not root: read and ignored
        self.cut_off: Any = None

    def connectionMade(self) -> None:
        self.front.metrics.connection_opened("pam")
        uid = self.front.peer_uid(self.transport)
        if uid != 0:
            log.warning("PAM socket: refused a request from uid %s (only root is served)", uid)
            self.refused = True
            self._reply({"result": DENIED_RESULT, "message": "only root may ask"})
            # Half-close and read what it sends: closing with unread data would reset the
            # connection and lose the answer. The peer gets a few seconds to hang up.
            self.transport.loseWriteConnection()  # type: ignore[union-attr]
            self.cut_off = self.front.reactor.callLater(
                REFUSED_GRACE_SECONDS, self.transport.abortConnection)  # type: ignore

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return
        self.buffer += data
        if len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if size > MAX_FRAME:
                self._refuse(f"frame of {size} bytes exceeds {MAX_FRAME}")
                return
        if len(self.buffer) > _HEADER.size + MAX_FRAME:
            self._refuse("too much data")
            return
        self._next()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.front.metrics.connection_closed("pam")
        if self.cut_off is not None and self.cut_off.active():
            self.cut_off.cancel()

    def _next(self) -> None:
        if self.busy or len(self.buffer) < _HEADER.size:
            return
        (size,) = _HEADER.unpack_from(self.buffer)
        if len(self.buffer) < _HEADER.size + size:
            return
        body = self.buffer[_HEADER.size:_HEADER.size + size]
        self.buffer = self.buffer[_HEADER.size + size:]
        try:
            request = parse_request(body)
        except BadRequest as exc:
            self._refuse(str(exc))
            return
        self.busy = True
        log.debug("PAM request %r", request)
        d = maybeDeferred(self._handle, request)
        d.addErrback(self._failed, request)
        d.addCallback(self._answered)

    def _handle(self, request: PamRequest) -> Deferred[dict[str, Any]] | dict[str, Any]:
        if request.type == "code":
            pending, self.pending = self.pending, None
            if pending is None or not request.session or request.session != pending.session:
                return {"result": DENIED_RESULT, "message": DENIED}
            return self.front.run(pending, pending.password + request.code)
        if request.converse and request.type in ("authenticate", "chauthtok"):
            return self._maybe_prompt(request)
        return self.front.run(request, request.password)

    def _maybe_prompt(self, request: PamRequest) -> Deferred[dict[str, Any]]:
        """Ask for the second factor in a second prompt when the account needs one."""
        def decide(needed: bool) -> dict[str, Any] | Deferred[dict[str, Any]]:
            if not needed:
                return self.front.run(request, request.password)
            session = secrets.token_hex(8)
            self.pending = _with_session(request, session)
            return {"result": PROMPT_CODE, "session": session, "message": CODE_PROMPT}

        return self.front.needs_code(request).addCallback(decide)

    def _answered(self, reply: dict[str, Any]) -> None:
        self.busy = False
        self._reply(reply)
        self._next()

    def _failed(self, failure: Failure, request: PamRequest) -> dict[str, Any]:
        if failure.check(DirectoryUnavailable):
            log.warning("PAM %s for %s refused: directory unavailable (%s)", request.type,
                        request.user, failure.getErrorMessage())
            return {"result": DENIED_RESULT, "message": "directory unavailable"}
        if failure.check(UnknownUser):
            log.info("PAM %s for %s refused: %s", request.type, request.user,
                     failure.getErrorMessage())
            return {"result": DENIED_RESULT, "message": DENIED}
        log.error("PAM %s for %s failed: %s", request.type, request.user,
                  failure.getErrorMessage())
        return {"result": DENIED_RESULT, "message": "temporarily unavailable"}

    def _reply(self, reply: dict[str, Any]) -> None:
        if self.transport is not None:
            self.transport.write(frame(reply))

    def _refuse(self, why: str) -> None:
        log.warning("PAM socket: closing a connection: %s", why)
        self.front.metrics.malformed("pam")
        self.buffer = b""
        self._reply({"result": "error", "message": "malformed request"})
        self.transport.loseConnection()  # type: ignore[union-attr]


def _with_session(request: PamRequest, session: str) -> PamRequest:
    values = {name: getattr(request, name) for name in PamRequest.__dataclass_fields__}
    values["session"] = session
    return PamRequest(**values)


class PamFront(Factory):
    """Serves the PAM socket: maps users to backends and runs requests through the service."""

    noisy = False

    def __init__(self, config: Config, service: AuthService, reactor: Any,
                 health: UpstreamHealth | None = None,
                 metrics: MetricsRecorder = NULL_METRICS) -> None:
        self.config = config
        self.service = service
        self.reactor = reactor
        self.metrics = metrics
        self.directory = DirectoryBackend(config, reactor, health, metrics)
        self.local = (PamBackend(config.pam_backend.service, service.offload)
                      if config.pam_backend is not None else None)
        self.peer_uid = peer_uid

    def reconfigure(self, config: Config) -> None:
        """The next requests take ``config`` (SIGHUP): name mapping, local accounts."""
        self.config = config
        self.directory.upstreams = config.proxy.upstream
        self.directory.timeout = config.proxy.upstream_timeout
        self.directory.tls = UpstreamTLS(config.proxy.upstream_ca_file,
                                         config.proxy.upstream_starttls)
        if config.pam_backend is not None:
            self.local = PamBackend(config.pam_backend.service, self.service.offload)
        else:
            self.local = None

    def buildProtocol(self, addr: Any) -> PamSession:
        return PamSession(self)

    def dn(self, user: str) -> Deferred[str]:
        """The account's key (a directory search may be needed: off the reactor thread)."""
        if is_local(self.config, user) or self.config.directory.search_base is None:
            return succeed(user_to_dn(self.config, user))
        return self.service.offload(user_to_dn, self.config, user)

    def needs_code(self, request: PamRequest) -> Deferred[bool]:
        return self.dn(request.user).addCallback(self.service.needs_code)

    def run(self, request: PamRequest, password: str) -> Deferred[dict[str, Any]]:
        """An authentication or a password change with ``password`` (code appended)."""
        if request.type == "account":
            return self.dn(request.user).addCallback(self._account)
        if request.type == "chauthtok":
            return self.dn(request.user).addCallback(self._chauthtok, request, password)
        return self.dn(request.user).addCallback(self._authenticate, request, password)

    def _authenticate(self, dn: str, request: PamRequest,
                      password: str) -> Deferred[dict[str, Any]]:
        def admitted(attempt: Attempt | Refusal) -> Any:
            if isinstance(attempt, Refusal):
                return {"result": DENIED_RESULT, "message": DENIED}
            secret = attempt.password if attempt.password is not None else password
            return self._check(attempt, request, secret)

        return self.service.admit(dn, "pam", request.client, password).addCallback(admitted)

    def _check(self, attempt: Attempt, request: PamRequest,
               password: str) -> Deferred[dict[str, Any]]:
        """The backend checks the password; the service records the outcome and decides."""
        if self.local is not None and is_local(self.config, request.user):
            checked = self.local.authenticate(request.user, password).addCallback(
                lambda code: (code, None))
        else:
            checked = self.directory.authenticate(attempt.dn, password,
                                                  self.service.directory_attributes(attempt))

        def lost(failure: Failure) -> Failure:
            self.service.record(attempt, None)
            return failure

        def decided(outcome: tuple[int, Any]) -> Deferred[dict[str, Any]]:
            code, record = outcome
            d = self.service.record(attempt, code, record)
            return d.addCallback(self._verdict, request)

        return checked.addCallbacks(decided, lost)

    def _verdict(self, verdict: BindVerdict | None, request: PamRequest) -> dict[str, Any]:
        if verdict is None:
            return {"result": DENIED_RESULT, "message": DENIED}
        if not verdict.allowed or verdict.restricted:
            message = ("Your password has expired: change it" if not verdict.allowed
                       else "You must change your password")
            if request.converse:  # the module succeeds auth; account management asks for it
                return {"result": CHANGE_PASSWORD, "message": message}
            return {"result": DENIED_RESULT, "message": message}
        return {"result": SUCCESS, "message": _warning(verdict.warn_seconds)}

    def _account(self, dn: str) -> Deferred[dict[str, Any]]:
        def judged(standing: Any) -> dict[str, Any]:
            if not standing.allowed:  # the password was proven already, or a key was
                return {"result": DENIED_RESULT, "reason": standing.reason,
                        "message": ACCOUNT_MESSAGES[standing.reason]}
            if standing.must_change:
                return {"result": CHANGE_PASSWORD, "message": "You must change your password"}
            return {"result": SUCCESS, "message": _warning(standing.warn_seconds)}

        return self.service.standing(dn).addCallback(judged)

    def _chauthtok(self, dn: str, request: PamRequest,
                   given: str) -> Deferred[dict[str, Any]]:
        """The old password is checked as a login would be (lockout, second factor), the new
        one against every rule, then the directory changes it with the user's own bind."""
        if is_local(self.config, request.user):
            return succeed({"result": DENIED_RESULT, "message": "bindguard cannot change the "
                                                                "password of a local account"})
        new = request.new_password

        def admitted(attempt: Attempt | Refusal) -> Any:
            if isinstance(attempt, Refusal):
                return {"result": DENIED_RESULT, "message": DENIED}
            old = attempt.password if attempt.password is not None else given
            change = PasswordChange(dn, True, new, old, "pam", request.client)
            return self.service.check_change(change).addCallback(checked, attempt, old)

        def checked(outcome: ChangePlan | Violation, attempt: Attempt, old: str) -> Any:
            if isinstance(outcome, Violation):
                self.service.abandon(attempt)  # the old password was not checked
                return {"result": DENIED_RESULT, "message": outcome.message}

            def lost(failure: Failure) -> Failure:
                self.service.record(attempt, None)
                return failure

            d = self.directory.change_password(dn, old, new)
            return d.addCallbacks(changed, lost, callbackArgs=(attempt, outcome))

        def changed(codes: tuple[int, int | None], attempt: Attempt, plan: ChangePlan) -> Any:
            bind, result = codes
            d = self.service.record(attempt, bind, rescue=True)
            if bind != 0:
                return d.addCallback(lambda _: {"result": DENIED_RESULT, "message": DENIED})
            if result != 0:
                return d.addCallback(lambda _: {
                    "result": DENIED_RESULT,
                    "message": f"the directory refused the new password (result {result})"})
            d.addCallback(lambda _: self.service.commit_change(plan))
            return d.addCallback(lambda _: {"result": SUCCESS, "message": "Password changed"})

        return self.service.admit(dn, "pam", request.client, given).addCallback(admitted)


def _warning(seconds: int | None) -> str:
    if seconds is None:
        return ""
    days = seconds // 86400
    return (f"Your password expires in {days} day{'s' if days != 1 else ''}" if days
            else "Your password expires today")
