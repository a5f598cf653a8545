"""Password changes through the LDAP front: Password Modify (RFC 3062), a Modify or Add that
sets a password attribute, and the change of an expired password without a bind.

A mixin of ``LdapSession``: each request holds the session's queue while the service checks the
new password; a change that passes is forwarded unchanged on the client's own upstream
connection and recorded only once the directory accepts it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from proxy.identity import canonical_dn
from proxy.ldap import messages as m
from proxy.ldap import passwd
from proxy.ldap.parts import SessionParts
from proxy.policy.password import Violation
from proxy.service import Attempt, ChangePlan, PasswordChange
from proxy.transitions import Refusal

log = logging.getLogger(__name__)

MUST_CHANGE_MESSAGE = ("password change required: change the password (Password Modify, e.g. "
                       "ldappasswd) before anything else")


class PasswordChanges(SessionParts):
    """The password-change requests of one client session (mixed into LdapSession)."""

    def _password_modify(self, pdu: bytes, env: m.Envelope, request: passwd.PasswordModify
                         ) -> None:
        """RFC 3062 Password Modify: checked, then forwarded as the user; or refused."""
        refuse = self._refuser(pdu, env)
        if self._cleartext_refused(refuse):
            return
        if request.new is None:
            refuse(m.Result.UNWILLING_TO_PERFORM, "give the new password: bindguard checks it "
                   "and does not let the directory generate one")
            return
        identity = request.user_identity
        if identity is not None and identity.startswith("dn:"):
            identity = identity[3:]
        elif identity is not None and identity.startswith("u:"):
            refuse(m.Result.UNWILLING_TO_PERFORM, "userIdentity must be a DN")
            return
        if self.bound_dn is None and not self.sasl_bound:
            if identity and request.old is not None:
                self._rescue(pdu, env, identity, request.old, request.new)
            else:
                refuse(m.Result.INSUFFICIENT_ACCESS, "bind first, or give userIdentity and "
                                                     "the old password")
            return
        target = canonical_dn(identity) if identity else self.bound_dn
        if target is None:
            refuse(m.Result.UNWILLING_TO_PERFORM, "give userIdentity: bindguard does not know "
                                                  "the identity of a SASL session")
            return
        if self.restricted and target != self.bound_dn:
            refuse(m.Result.INSUFFICIENT_ACCESS, MUST_CHANGE_MESSAGE)  # its own password first
            return
        by_self = self.sasl_bound or target == self.bound_dn
        current = request.old
        if current is None and target == self.bound_dn:
            current = self.bound_password
        self._change(pdu, env, PasswordChange(target, by_self, request.new, current, "ldap",
                                              self.client))

    def _password_write(self, pdu: bytes, env: m.Envelope, change: passwd.PasswordChange
                        ) -> None:
        """A ModifyRequest or AddRequest that sets a password attribute."""
        refuse = self._refuser(pdu, env)
        if self._cleartext_refused(refuse):
            return
        if self.bound_dn is None and not self.sasl_bound:
            refuse(m.Result.INSUFFICIENT_ACCESS, "bind first")
            return
        if len(change.new) != 1:
            refuse(m.Result.UNWILLING_TO_PERFORM, "set exactly one password value")
            return
        if not passwd.is_checkable(change.new[0]):
            refuse(m.Result.UNWILLING_TO_PERFORM, "the password must be given as UTF-8 text: "
                                                  "a pre-hashed value cannot be checked "
                                                  "against the password rules")
            return
        target = canonical_dn(change.dn)
        by_self = env.op_tag == m.MODIFY_REQUEST and (self.sasl_bound
                                                      or target == self.bound_dn)
        current = change.old[0] if change.old else None
        if current is None and target == self.bound_dn:
            current = self.bound_password
        self._change(pdu, env, PasswordChange(target, by_self, change.new[0], current, "ldap",
                                              self.client))

    def _cleartext_refused(self, refuse: Callable[..., None]) -> bool:
        """require_tls: a new password does not travel in clear (13)."""
        if self.config.require_tls and not self.tls:
            refuse(m.Result.CONFIDENTIALITY_REQUIRED, "TLS required for a password change")
            return True
        return False

    def _refuser(self, pdu: bytes, env: m.Envelope) -> Callable[..., None]:
        """Answer the request locally, with the ppolicy control when one is due and asked."""
        ppolicy = any(c.oid == m.PPOLICY_OID for c in m.parse_controls(pdu, env.op_end, env.end))

        def refuse(code: int, message: str, error: int | None = None) -> None:
            controls = m.ppolicy_control(error) if ppolicy and error is not None else b""
            self.answer(env.message_id, env.op_tag, code, message, controls)

        return refuse

    def _change(self, pdu: bytes, env: m.Envelope, request: PasswordChange,
                after: Callable[[], None] | None = None) -> None:
        """Check a new password, forward it when it passes, record it when the directory
        takes it. ``after`` runs once the client has its answer."""
        self.held = True
        refuse = self._refuser(pdu, env)

        def finish() -> None:
            if after is not None:
                after()
            self._resume()

        def checked(outcome: ChangePlan | Violation) -> None:
            if isinstance(outcome, Violation):
                refuse(m.Result.CONSTRAINT_VIOLATION, outcome.message, outcome.ppolicy)
                finish()
                return
            self._with_upstream(lambda: forward(outcome), unavailable)

        def unavailable() -> None:
            refuse(m.Result.UNAVAILABLE, "directory unavailable")
            finish()

        def forward(plan: ChangePlan) -> None:
            def on_pdu(p: bytes, e: m.Envelope) -> bool:
                if e.op_tag != m.RESPONSE_TO[env.op_tag]:
                    self.emit(p)  # e.g. an intermediate response: not ours to judge
                    return False
                if m.result_code(p, e) != m.Result.SUCCESS:
                    self.emit(p)  # the directory refused: nothing to record
                    finish()
                    return True
                slot = self._slot()
                d = self.service.commit_change(plan)
                d.addErrback(lambda f: log.error("password change not recorded: %s",
                                                 f.getErrorMessage()))
                d.addCallback(lambda _: self._changed(request, slot, p, finish))
                return True

            self._watch(env.message_id, on_pdu, unavailable)
            assert self.upstream is not None
            self.upstream.send(pdu)

        d = self.service.check_change(request)
        d.addCallback(checked).addErrback(self._internal_error, env.message_id, env.op_tag)

    def _changed(self, request: PasswordChange, slot: list[bytes], response: bytes,
                 finish: Callable[[], None]) -> None:
        if request.dn == self.bound_dn:
            self.bound_password = request.new
            self.restricted = False
        self._fill(slot, response)
        finish()

    def _rescue(self, pdu: bytes, env: m.Envelope, dn: str, old: str, new: str) -> None:
        """Password Modify on an unbound connection (an expired or must-change password):
        authenticate the old password as a bind would, then change as the user. The upstream
        connection is bound as the user meanwhile: it is dropped afterwards, whatever happens."""
        self.held = True
        refuse = self._refuser(pdu, env)

        def admitted(attempt: Attempt | Refusal) -> None:
            if isinstance(attempt, Refusal):
                refuse(m.Result.INVALID_CREDENTIALS, "")
                self._resume()
            else:
                self._with_upstream(lambda: bind(attempt), lambda: unavailable(attempt))

        def unavailable(attempt: Attempt) -> None:
            self.service.record(attempt, None)
            refuse(m.Result.UNAVAILABLE, "directory unavailable")
            self._resume()

        def bind(attempt: Attempt) -> None:
            def on_pdu(p: bytes, e: m.Envelope) -> bool:
                if e.op_tag != m.BIND_RESPONSE:
                    return False
                code = m.result_code(p, e)
                d = self.service.record(attempt, code, rescue=True)
                d.addCallback(lambda _: authenticated(code, attempt)).addErrback(
                    self._internal_error, env.message_id, env.op_tag)
                return True

            self._watch(env.message_id, on_pdu, lambda: unavailable(attempt))
            assert self.upstream is not None
            self.upstream.send(m.simple_bind_request(env.message_id, dn, password(attempt)))

        def password(attempt: Attempt) -> str:
            """The old password without the second factor split off it."""
            return attempt.password if attempt.password is not None else old

        def authenticated(code: int, attempt: Attempt) -> None:
            if code != m.Result.SUCCESS:
                refuse(code, "")
                self._drop_upstream()
                self._resume()
                return
            current = password(attempt)
            forward = pdu if current == old else passwd.with_old_password(pdu, env, current)
            self._change(forward, m.parse_envelope(forward),
                         PasswordChange(canonical_dn(dn), True, new, current, "ldap",
                                        self.client), after=self._drop_upstream)

        d = self.service.admit(dn, "ldap", self.client, old)
        d.addCallback(admitted).addErrback(self._internal_error, env.message_id, env.op_tag)
