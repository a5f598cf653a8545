"""LDAP PDUs for protocol tests, encoded independently of bindguard (pyasn1 + ldap3's RFC 4511)."""
from __future__ import annotations

import warnings

from pyasn1.codec.ber import encoder

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from ldap3.operation.bind import bind_operation
    from ldap3.operation.search import search_operation
    from ldap3.protocol.rfc4511 import (
        LDAPDN,
        AuthenticationChoice,
        BindRequest,
        BindResponse,
        Control,
        Controls,
        LDAPMessage,
        MessageID,
        ProtocolOp,
        ResultCode,
        SearchResultDone,
        Simple,
        Version,
    )

PPOLICY = "1.3.6.1.4.1.42.2.27.8.5.1"
PAGED = "1.2.840.113556.1.4.319"


def _message(message_id: int, op_name: str, op: object,
             controls: list[tuple[str, bool, bytes | None]] = ()) -> bytes:  # type: ignore[assignment]
    message = LDAPMessage()
    message["messageID"] = MessageID(message_id)
    protocol_op = ProtocolOp()
    protocol_op.setComponentByName(op_name, op)
    message["protocolOp"] = protocol_op
    if controls:
        encoded = Controls()
        for index, (oid, critical, value) in enumerate(controls):
            control = Control()
            control["controlType"] = oid
            control["criticality"] = critical
            if value is not None:
                control["controlValue"] = value
            encoded.setComponentByPosition(index, control)
        message["controls"] = encoded
    return bytes(encoder.encode(message))


def bind_request(message_id: int, dn: str, password: str,
                 controls: list[tuple[str, bool, bytes | None]] = ()) -> bytes:  # type: ignore[assignment]
    """A simple BindRequest."""
    op = BindRequest()
    op["version"] = Version(3)
    op["name"] = dn
    op["authentication"] = AuthenticationChoice().setComponentByName("simple", Simple(password))
    return _message(message_id, "bindRequest", op, controls)


def sasl_bind_request(message_id: int, mechanism: str = "EXTERNAL") -> bytes:
    """A SASL BindRequest."""
    op = bind_operation(3, "SASL", "", None, sasl_mechanism=mechanism, sasl_credentials=None)
    return _message(message_id, "bindRequest", op)


def _result(cls: type, code: int, message: str = "") -> object:
    result = cls()
    result["resultCode"] = ResultCode(code)
    result["matchedDN"] = LDAPDN("")
    result["diagnosticMessage"] = message
    return result


def bind_response(message_id: int, code: int, message: str = "",
                  controls: list[tuple[str, bool, bytes | None]] = ()) -> bytes:  # type: ignore[assignment]
    """A BindResponse as a directory sends it."""
    return _message(message_id, "bindResponse", _result(BindResponse, code, message), controls)


def search_request(message_id: int, base: str,
                   controls: list[tuple[str, bool, bytes | None]] = ()) -> bytes:  # type: ignore[assignment]
    """A subtree SearchRequest for (objectClass=*)."""
    op = search_operation(base, "(objectClass=*)", 2, 0, ["cn"], 0, 0, False, False, False)
    return _message(message_id, "searchRequest", op, controls)


def search_done(message_id: int, code: int = 0) -> bytes:
    """A SearchResultDone."""
    return _message(message_id, "searchResDone", _result(SearchResultDone, code))


def unbind_request(message_id: int) -> bytes:
    """An UnbindRequest (0x42 00)."""
    body = bytes((0x02, 0x01, message_id, 0x42, 0x00))
    return bytes((0x30, len(body))) + body
