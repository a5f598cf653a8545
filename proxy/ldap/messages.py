"""The LDAP messages the front decodes or writes itself (RFC 4511); everything else stays bytes."""
from __future__ import annotations

from dataclasses import dataclass, field

from proxy.ldap.ber import (
    BOOLEAN,
    ENUMERATED,
    INTEGER,
    OCTET_STRING,
    SEQUENCE,
    ProtocolViolation,
    integer_value,
    read_header,
    read_integer,
    tlv,
)

# Protocol operation tags (application class).
BIND_REQUEST = 0x60
BIND_RESPONSE = 0x61
UNBIND_REQUEST = 0x42
SEARCH_REQUEST = 0x63
SEARCH_RESULT_ENTRY = 0x64
SEARCH_RESULT_DONE = 0x65
MODIFY_REQUEST = 0x66
ADD_REQUEST = 0x68
ABANDON_REQUEST = 0x50
EXTENDED_REQUEST = 0x77
EXTENDED_RESPONSE = 0x78
CONTROLS = 0xA0

# The final response to each request that has one; abandon and unbind have none.
RESPONSE_TO = {
    BIND_REQUEST: BIND_RESPONSE,
    SEARCH_REQUEST: SEARCH_RESULT_DONE,
    0x66: 0x67,  # modify
    0x68: 0x69,  # add
    0x4A: 0x6B,  # delete
    0x6C: 0x6D,  # modify DN
    0x6E: 0x6F,  # compare
    EXTENDED_REQUEST: EXTENDED_RESPONSE,
}

_SIMPLE = 0x80
_SASL = 0xA3

PPOLICY_OID = "1.3.6.1.4.1.42.2.27.8.5.1"
NOTICE_OF_DISCONNECTION_OID = "1.3.6.1.4.1.1466.20036"


class Result:
    """LDAP result codes bindguard writes or reads."""

    SUCCESS = 0
    OPERATIONS_ERROR = 1
    PROTOCOL_ERROR = 2
    AUTH_METHOD_NOT_SUPPORTED = 7
    CONFIDENTIALITY_REQUIRED = 13
    SASL_BIND_IN_PROGRESS = 14
    CONSTRAINT_VIOLATION = 19
    INVALID_CREDENTIALS = 49
    INSUFFICIENT_ACCESS = 50
    UNAVAILABLE = 52
    UNWILLING_TO_PERFORM = 53


@dataclass(frozen=True)
class Envelope:
    """Where the parts of one LDAPMessage lie: its ID and operation."""

    message_id: int
    op_tag: int
    op_start: int
    op_end: int
    end: int


@dataclass(frozen=True)
class Control:
    """One request control."""

    oid: str
    critical: bool
    value: bytes | None


@dataclass(frozen=True)
class BindRequest:
    """A decoded BindRequest. The password never appears in its repr."""

    message_id: int
    version: int
    dn: str
    password: bytes | None = field(repr=False)  # None for a SASL bind
    sasl: bool
    controls: tuple[Control, ...]

    @property
    def anonymous(self) -> bool:
        """A simple bind with no password (anonymous or unauthenticated, RFC 4513 5.1)."""
        return not self.sasl and not self.password

    def has_control(self, oid: str) -> bool:
        """Whether the client sent the control ``oid``."""
        return any(c.oid == oid for c in self.controls)


def parse_envelope(pdu: bytes) -> Envelope:
    """Locate the message ID and operation of a framed PDU."""
    _, pos, end = read_header(pdu, 0, len(pdu))
    tag, start, stop = read_header(pdu, pos, end)
    if tag != INTEGER:
        raise ProtocolViolation("messageID missing")
    message_id = read_integer(pdu, start, stop)
    if not 0 <= message_id <= 2**31 - 1:
        raise ProtocolViolation("messageID out of range")
    op_tag, op_start, op_end = read_header(pdu, stop, end)
    return Envelope(message_id, op_tag, op_start, op_end, end)


def parse_bind_request(pdu: bytes, env: Envelope) -> BindRequest:
    """Decode the BindRequest in ``pdu`` (already located by parse_envelope)."""
    tag, start, stop = read_header(pdu, env.op_start, env.op_end)
    if tag != INTEGER:
        raise ProtocolViolation("bind version missing")
    version = read_integer(pdu, start, stop)
    tag, start, stop = read_header(pdu, stop, env.op_end)
    if tag != OCTET_STRING:
        raise ProtocolViolation("bind name missing")
    dn = _utf8(pdu[start:stop])
    tag, start, stop = read_header(pdu, stop, env.op_end)
    if tag == _SIMPLE:
        password: bytes | None = pdu[start:stop]
    elif tag == _SASL:
        password = None
    else:
        raise ProtocolViolation("unknown bind authentication choice")
    return BindRequest(env.message_id, version, dn, password, password is None,
                       parse_controls(pdu, env.op_end, env.end))


def parse_controls(pdu: bytes, pos: int, end: int) -> tuple[Control, ...]:
    """Decode the optional ``[0] Controls`` that follow the operation."""
    if pos == end:
        return ()
    tag, pos, end = read_header(pdu, pos, end)
    if tag != CONTROLS:
        raise ProtocolViolation("unexpected data after the operation")
    controls = []
    while pos < end:
        tag, start, pos = read_header(pdu, pos, end)
        if tag != SEQUENCE:
            raise ProtocolViolation("control is not a SEQUENCE")
        tag, vstart, vend = read_header(pdu, start, pos)
        if tag != OCTET_STRING:
            raise ProtocolViolation("control type missing")
        oid = _utf8(pdu[vstart:vend])
        critical, value = False, None
        while vend < pos:
            tag, vstart, vend = read_header(pdu, vend, pos)
            if tag == BOOLEAN:
                critical = any(pdu[vstart:vend])
            elif tag == OCTET_STRING:
                value = pdu[vstart:vend]
            else:
                raise ProtocolViolation("unexpected element in a control")
        controls.append(Control(oid, critical, value))
    return tuple(controls)


def result_code(pdu: bytes, env: Envelope) -> int:
    """The resultCode of an LDAPResult-shaped response (BindResponse, ExtendedResponse...)."""
    tag, start, stop = read_header(pdu, env.op_start, env.op_end)
    if tag != ENUMERATED:
        raise ProtocolViolation("resultCode missing")
    return read_integer(pdu, start, stop)


def ldap_result(message_id: int, op_tag: int, code: int, message: str = "",
                controls: bytes = b"", extra: bytes = b"") -> bytes:
    """Encode an LDAPMessage holding an LDAPResult-shaped response."""
    body = (tlv(ENUMERATED, integer_value(code)) + tlv(OCTET_STRING, b"")
            + tlv(OCTET_STRING, message.encode()) + extra)
    return tlv(SEQUENCE, tlv(INTEGER, integer_value(message_id)) + tlv(op_tag, body) + controls)


def simple_bind_request(message_id: int, dn: str, password: str) -> bytes:
    """A version 3 simple BindRequest (bindguard's own, on a user's behalf)."""
    body = (tlv(INTEGER, integer_value(3)) + tlv(OCTET_STRING, dn.encode())
            + tlv(_SIMPLE, password.encode()))
    return tlv(SEQUENCE, tlv(INTEGER, integer_value(message_id)) + tlv(BIND_REQUEST, body))


def with_bind_password(pdu: bytes, password: bytes) -> bytes:
    """A simple BindRequest ``pdu`` with another password; message ID, version, name and
    controls unchanged."""
    _, pos, end = read_header(pdu, 0, len(pdu))
    _, _, id_end = read_header(pdu, pos, end)
    op_tag, op_start, op_end = read_header(pdu, id_end, end)
    _, _, version_end = read_header(pdu, op_start, op_end)
    _, _, name_end = read_header(pdu, version_end, op_end)
    body = pdu[op_start:name_end] + tlv(_SIMPLE, password)
    return tlv(SEQUENCE, pdu[pos:id_end] + tlv(op_tag, body) + pdu[op_end:end])


def ppolicy_control(error: int | None = None, expires_in: int | None = None) -> bytes:
    """The ``[0] Controls`` holding a password policy response control (draft-behera):
    an error (e.g. accountLocked) and/or the timeBeforeExpiration warning in seconds."""
    value = b""
    if expires_in is not None:
        value += tlv(0xA0, tlv(0x80, integer_value(max(0, expires_in))))
    if error is not None:
        value += tlv(0x81, integer_value(error))
    control = tlv(SEQUENCE, tlv(OCTET_STRING, PPOLICY_OID.encode())
                  + tlv(OCTET_STRING, tlv(SEQUENCE, value)))
    return tlv(CONTROLS, control)


def with_ppolicy(pdu: bytes, env: Envelope, controls: bytes) -> bytes:
    """``pdu`` with its password policy control replaced by ``controls`` (a ppolicy_control);
    the directory's other controls are kept."""
    kept = b""
    if env.op_end < env.end:
        tag, pos, end = read_header(pdu, env.op_end, env.end)
        while pos < end:
            _, start, stop = read_header(pdu, pos, end)
            _, ostart, oend = read_header(pdu, start, stop)
            if pdu[ostart:oend] != PPOLICY_OID.encode():
                kept += pdu[pos:stop]
            pos = stop
    _, inner, _ = read_header(controls, 0, len(controls))
    merged = tlv(CONTROLS, kept + controls[inner:])
    _, body_start, _ = read_header(pdu, 0, len(pdu))
    return tlv(SEQUENCE, pdu[body_start:env.op_end] + merged)


def notice_of_disconnection(code: int, message: str) -> bytes:
    """The unsolicited notification (message ID 0) sent before the proxy closes a connection."""
    return ldap_result(0, EXTENDED_RESPONSE, code, message,
                       extra=tlv(0x8A, NOTICE_OF_DISCONNECTION_OID.encode()))


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("string is not UTF-8") from None
