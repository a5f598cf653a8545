"""Simple binds through the LDAP front: admitted by the service, forwarded, and decided.

A mixin of ``LdapSession``. A bind holds the session's queue from admission until its outcome
is recorded: the directory's answer is read, and after a success the user's entry may be read on
the same connection (pwdChangedTime, pwdReset, ...) before expiry and must-change are decided.
The client sees the answer only once the outcome is durable.
"""
from __future__ import annotations

import logging
from dataclasses import replace

from twisted.python.failure import Failure

from proxy.identity import canonical_dn
from proxy.ldap import messages as m
from proxy.ldap import passwd
from proxy.ldap.parts import SessionParts
from proxy.policy.password import PPolicy
from proxy.service import Attempt, BindVerdict, DirectoryRecord
from proxy.transitions import Refusal

log = logging.getLogger(__name__)


class Binds(SessionParts):
    """The simple binds of one client session (mixed into LdapSession)."""

    def _bind_refusal(self, request: m.BindRequest) -> tuple[int, str] | None:
        """The local answer to a bind the configuration does not allow, or None."""
        if request.sasl and not self.config.allow_sasl:
            return m.Result.AUTH_METHOD_NOT_SUPPORTED, "SASL binds are not allowed"
        if request.anonymous and not self.config.allow_anonymous:
            return m.Result.UNWILLING_TO_PERFORM, "anonymous binds are not allowed"
        if self.config.require_tls and not self.tls and not request.anonymous:
            return (m.Result.CONFIDENTIALITY_REQUIRED,
                    "TLS required: use StartTLS or an ldaps:// address")
        return None

    def _check_bind(self, pdu: bytes, request: m.BindRequest) -> None:
        """A simple bind with a password: admitted by the service before it is forwarded."""
        self.held = True
        # Bytes that are not UTF-8 still go through the second-factor check: kept as surrogates.
        assert request.password is not None
        given = request.password.decode("utf-8", "surrogateescape")
        d = self.service.admit(request.dn, "ldap", self.client, given)
        d.addCallback(self._admitted, pdu, request).addErrback(
            self._internal_error, request.message_id, m.BIND_REQUEST)

    def _admitted(self, attempt: Attempt | Refusal, pdu: bytes,
                  request: m.BindRequest) -> None:
        if isinstance(attempt, Refusal):
            controls = b""
            if attempt.locked and request.has_control(m.PPOLICY_OID):
                controls = m.ppolicy_control(PPolicy.ACCOUNT_LOCKED)
            self.answer(request.message_id, m.BIND_REQUEST, m.Result.INVALID_CREDENTIALS,
                        controls=controls)
            self._resume()
        elif self.client_gone:
            self.service.record(attempt, None)
        else:
            if attempt.password is not None:  # a second factor was split off: not forwarded
                password = attempt.password.encode("utf-8", "surrogateescape")
                pdu = m.with_bind_password(pdu, password)
                request = replace(request, password=password)
            self._with_upstream(lambda: self._send_bind(attempt, pdu, request),
                                lambda: self._bind_unavailable(attempt, request.message_id))

    def _bind_unavailable(self, attempt: Attempt, message_id: int) -> None:
        self._record_then_answer(attempt, None, m.ldap_result(
            message_id, m.BIND_RESPONSE, m.Result.UNAVAILABLE, "directory unavailable"))
        self._resume()

    def _send_bind(self, attempt: Attempt, pdu: bytes, request: m.BindRequest) -> None:
        """Forward the bind; the queue stays held until its outcome is decided."""
        message_id = request.message_id
        self._watch(message_id, lambda p, e: self._bind_answered(attempt, request, p, e),
                    lambda: self._bind_unavailable(attempt, message_id))
        assert self.upstream is not None
        self.upstream.send(pdu)

    def _bind_answered(self, attempt: Attempt, request: m.BindRequest, pdu: bytes,
                       env: m.Envelope) -> bool:
        if env.op_tag != m.BIND_RESPONSE:
            return False
        code = m.result_code(pdu, env)
        attributes = self.service.directory_attributes(attempt) if code == 0 else None
        if code != 0 or attributes is None or self.client_gone:
            self._bind_decided(attempt, request, code, pdu, env, DirectoryRecord())
            return True
        # Read what the directory knows about the password, reusing the bind's message ID:
        # the client waits for that ID and sends nothing else meanwhile (the queue is held).
        found: dict[str, list[bytes]] = {}

        def on_pdu(p: bytes, e: m.Envelope) -> bool:
            if e.op_tag == m.SEARCH_RESULT_ENTRY:
                found.update(passwd.parse_search_entry(p, e))
            elif e.op_tag == m.SEARCH_RESULT_DONE:
                self._bind_decided(attempt, request, 0, pdu, env, passwd.directory_record(found))
                return True
            return False

        self.watches.pop(request.message_id).timer.cancel()
        self._watch(request.message_id, on_pdu,
                    lambda: self._bind_unavailable(attempt, request.message_id))
        assert self.upstream is not None
        self.upstream.send(passwd.search_base_request(request.message_id, request.dn,
                                                      attributes))
        return False

    def _bind_decided(self, attempt: Attempt, request: m.BindRequest, code: int,
                      pdu: bytes, env: m.Envelope, record: DirectoryRecord) -> None:
        """Record the outcome, then answer the client and let the queue go on."""
        slot = self._slot()
        d = self.service.record(attempt, code, record)

        def decided(verdict: BindVerdict | None) -> None:
            self._fill(slot, self._bind_response(verdict, request, pdu, env))
            self._resume()

        def failed(failure: Failure) -> None:
            log.error("bind outcome not recorded: %s", failure.getErrorMessage())
            self._fill(slot, pdu if code != 0 else m.ldap_result(
                request.message_id, m.BIND_RESPONSE, m.Result.UNAVAILABLE,
                "temporarily unavailable"))
            if code == 0:
                self._drop_upstream()
            self._resume()

        d.addCallbacks(decided, failed)

    def _bind_response(self, verdict: BindVerdict | None, request: m.BindRequest,
                       pdu: bytes, env: m.Envelope) -> bytes:
        """The client's answer to a bind the directory answered, and the session's new state."""
        ppolicy = request.has_control(m.PPOLICY_OID)
        if verdict is None:  # refused by the directory: its own answer
            return pdu
        if not verdict.allowed:  # expired: the directory's connection is bound, drop it
            self._drop_upstream()
            return m.ldap_result(request.message_id, m.BIND_RESPONSE,
                                 m.Result.INVALID_CREDENTIALS, controls=m.ppolicy_control(
                                     PPolicy.PASSWORD_EXPIRED) if ppolicy else b"")
        self.bound_dn = canonical_dn(request.dn)
        self.bound_password = _text(request.password)
        self.restricted = verdict.restricted
        if ppolicy and (verdict.restricted or verdict.warn_seconds is not None):
            return m.with_ppolicy(pdu, env, m.ppolicy_control(
                PPolicy.CHANGE_AFTER_RESET if verdict.restricted else None,
                verdict.warn_seconds))
        return pdu

    def _record_then_answer(self, attempt: Attempt, code: int | None, response: bytes) -> None:
        """Record an outcome durably, then let the client see the response."""
        slot = self._slot()
        d = self.service.record(attempt, code)
        d.addErrback(lambda f: log.error("bind outcome not recorded: %s", f.getErrorMessage()))
        d.addCallback(lambda _: self._fill(slot, response))


def _text(password: bytes | None) -> str | None:
    if password is None:
        return None
    try:
        return password.decode("utf-8")
    except UnicodeDecodeError:
        return None
