"""The password-related LDAP messages the front decodes: Password Modify (RFC 3062), Modify and
Add requests that set a password attribute, and the read of a user's password facts.

Only these rare operations are decoded beyond their envelope; the BER reader is the bounded one
of ``proxy.ldap.ber``, so a malformed request raises ProtocolViolation like any other.
"""
from __future__ import annotations

import calendar
import logging
import re
from dataclasses import dataclass, field

from proxy.ldap import messages as m
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
from proxy.service import DirectoryRecord

log = logging.getLogger(__name__)

SET = 0x31
_REQUEST_NAME = 0x80
_REQUEST_VALUE = 0x81
_USER_IDENTITY, _OLD_PASSWD, _NEW_PASSWD = 0x80, 0x81, 0x82
_PRESENT_FILTER = 0x87

PASSWORD_MODIFY_OID = "1.3.6.1.4.1.4203.1.11.1"

# Modify operations (RFC 4511 4.6).
_ADD, _DELETE, _REPLACE = 0, 1, 2

# userPassword (RFC 4519) and Active Directory's unicodePwd, by name or OID, lower case.
PASSWORD_ATTRIBUTES = {"userpassword": False, "2.5.4.35": False,
                       "unicodepwd": True, "1.2.840.113556.1.4.90": True}

# RFC 3112 / OpenLDAP scheme prefixes: a value like "{SSHA}..." is already a hash.
_PREHASHED = re.compile(r"^\{[A-Za-z0-9.+_-]+\}")


@dataclass(frozen=True)
class ExtendedRequest:
    """An ExtendedRequest: its OID and raw value."""

    name: str
    value: bytes | None = field(repr=False)


@dataclass(frozen=True)
class PasswordModify:
    """The value of a Password Modify request; every part is optional."""

    user_identity: str | None
    old: str | None = field(repr=False)
    new: str | None = field(repr=False)


@dataclass(frozen=True)
class PasswordChange:
    """What a ModifyRequest or AddRequest does to an entry's password."""

    dn: str
    new: tuple[str, ...] = field(default=(), repr=False)  # values added or replaced
    old: tuple[str, ...] = field(default=(), repr=False)  # values deleted by value
    removes_all: bool = False  # a delete without values, or a replace with none


def parse_extended_request(pdu: bytes, env: m.Envelope) -> ExtendedRequest:
    """Decode the ExtendedRequest in ``pdu``."""
    tag, start, stop = read_header(pdu, env.op_start, env.op_end)
    if tag != _REQUEST_NAME:
        raise ProtocolViolation("extended request name missing")
    name = _text(pdu[start:stop])
    value = None
    if stop < env.op_end:
        tag, vstart, vstop = read_header(pdu, stop, env.op_end)
        if tag != _REQUEST_VALUE:
            raise ProtocolViolation("unexpected element in an extended request")
        value = pdu[vstart:vstop]
    return ExtendedRequest(name, value)


def parse_password_modify(value: bytes | None) -> PasswordModify:
    """Decode a PasswdModifyRequestValue; an absent value means every part is absent."""
    parts: dict[int, str] = {}
    if value:
        tag, pos, end = read_header(value, 0, len(value))
        if tag != SEQUENCE or end != len(value):
            raise ProtocolViolation("Password Modify value is not one SEQUENCE")
        while pos < end:
            tag, start, pos = read_header(value, pos, end)
            if tag not in (_USER_IDENTITY, _OLD_PASSWD, _NEW_PASSWD) or tag in parts:
                raise ProtocolViolation("unexpected element in a Password Modify request")
            parts[tag] = _text(value[start:pos])
    return PasswordModify(parts.get(_USER_IDENTITY), parts.get(_OLD_PASSWD),
                          parts.get(_NEW_PASSWD))


def password_modify_request(message_id: int, user_identity: str | None, old: str | None,
                            new: str | None, controls: bytes = b"") -> bytes:
    """A Password Modify ExtendedRequest (RFC 3062)."""
    value = b""
    if user_identity is not None:
        value += tlv(_USER_IDENTITY, user_identity.encode())
    if old is not None:
        value += tlv(_OLD_PASSWD, old.encode("utf-8", "surrogateescape"))
    if new is not None:
        value += tlv(_NEW_PASSWD, new.encode("utf-8", "surrogateescape"))
    op = (tlv(_REQUEST_NAME, PASSWORD_MODIFY_OID.encode())
          + tlv(_REQUEST_VALUE, tlv(SEQUENCE, value)))
    return tlv(SEQUENCE, tlv(INTEGER, integer_value(message_id)) + tlv(m.EXTENDED_REQUEST, op)
               + controls)


def with_old_password(pdu: bytes, env: m.Envelope, old: str) -> bytes:
    """A Password Modify request ``pdu`` with ``oldPasswd`` replaced (the second factor split
    off it); message ID, userIdentity, newPasswd and controls unchanged."""
    request = parse_password_modify(parse_extended_request(pdu, env).value)
    return password_modify_request(env.message_id, request.user_identity, old, request.new,
                                   pdu[env.op_end:env.end])


def parse_modify_password(pdu: bytes, env: m.Envelope) -> PasswordChange | None:
    """What a ModifyRequest does to the password, or None when it does not touch it."""
    dn, pos, end = _entry(pdu, env, "modify")
    new: list[str] = []
    old: list[str] = []
    removes_all = touched = False
    while pos < end:
        tag, start, pos = read_header(pdu, pos, end)
        if tag != SEQUENCE:
            raise ProtocolViolation("a modify change is not a SEQUENCE")
        tag, ostart, ostop = read_header(pdu, start, pos)
        if tag != ENUMERATED:
            raise ProtocolViolation("modify operation missing")
        operation = read_integer(pdu, ostart, ostop)
        tag, astart, astop = read_header(pdu, ostop, pos)
        if tag != SEQUENCE:
            raise ProtocolViolation("a modification is not a SEQUENCE")
        name, values = _attribute(pdu, astart, astop)
        unicode_pwd = PASSWORD_ATTRIBUTES.get(name)
        if unicode_pwd is None:
            continue
        touched = True
        texts = [_password_value(v, unicode_pwd) for v in values]
        if operation in (_ADD, _REPLACE):
            new += texts
            removes_all = removes_all or (operation == _REPLACE and not texts)
        elif operation == _DELETE:
            old += texts
            removes_all = removes_all or not texts
    if not touched:
        return None
    return PasswordChange(dn, tuple(new), tuple(old), removes_all)


def parse_add_password(pdu: bytes, env: m.Envelope) -> PasswordChange | None:
    """The password an AddRequest gives the new entry, or None when it gives none."""
    dn, pos, end = _entry(pdu, env, "add")
    new: list[str] = []
    touched = False
    while pos < end:
        tag, start, pos = read_header(pdu, pos, end)
        if tag != SEQUENCE:
            raise ProtocolViolation("an added attribute is not a SEQUENCE")
        name, values = _attribute(pdu, start, pos)
        unicode_pwd = PASSWORD_ATTRIBUTES.get(name)
        if unicode_pwd is not None:
            touched = True
            new += [_password_value(v, unicode_pwd) for v in values]
    return PasswordChange(dn, tuple(new)) if touched else None


def is_checkable(password: str) -> bool:
    """Whether the rules can judge this value: text, not a pre-computed hash."""
    if _PREHASHED.match(password):
        return False
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept as surrogates
        return False
    return True


def search_base_request(message_id: int, dn: str, attributes: list[str]) -> bytes:
    """A base-scope search of ``dn`` for ``attributes`` (filter: objectClass present)."""
    body = (tlv(OCTET_STRING, dn.encode()) + tlv(ENUMERATED, b"\x00")
            + tlv(ENUMERATED, b"\x00") + tlv(INTEGER, integer_value(1))
            + tlv(INTEGER, integer_value(0)) + tlv(BOOLEAN, b"\x00")
            + tlv(_PRESENT_FILTER, b"objectClass")
            + tlv(SEQUENCE, b"".join(tlv(OCTET_STRING, a.encode()) for a in attributes)))
    return tlv(SEQUENCE, tlv(INTEGER, integer_value(message_id))
               + tlv(m.SEARCH_REQUEST, body))


def parse_search_entry(pdu: bytes, env: m.Envelope) -> dict[str, list[bytes]]:
    """The attributes of a SearchResultEntry, by lower-case name (options dropped)."""
    tag, _, pos = read_header(pdu, env.op_start, env.op_end)
    if tag != OCTET_STRING:
        raise ProtocolViolation("entry name missing")
    tag, pos, end = read_header(pdu, pos, env.op_end)
    if tag != SEQUENCE:
        raise ProtocolViolation("entry attributes missing")
    found: dict[str, list[bytes]] = {}
    while pos < end:
        tag, start, pos = read_header(pdu, pos, end)
        if tag != SEQUENCE:
            raise ProtocolViolation("an entry attribute is not a SEQUENCE")
        name, values = _attribute(pdu, start, pos)
        found.setdefault(name, []).extend(values)
    return found


# -- the directory's password times ----------------------------------------------------------

_GENERALIZED = re.compile(r"^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)?(\d\d)?(?:[.,]\d+)?"
                          r"(Z|[+-]\d\d(?:\d\d)?)$")


def generalized_time(text: str) -> float:
    """An LDAP GeneralizedTime (``20261123192929Z``, OpenLDAP's pwdChangedTime) in seconds."""
    match = _GENERALIZED.match(text.strip())
    if match is None:
        raise ValueError(f"not a GeneralizedTime: {text!r}")
    year, month, day, hour, minute, second, zone = match.groups()
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute or 0),
                               int(second or 0), 0, 0, 0))
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[3:5] or 0) * 60)
    return float(seconds)


def shadow_last_change(text: str) -> float:
    """shadowLastChange (days since 1970) in seconds. 0 says "change at next login" in
    /etc/shadow, not a date: refused here rather than read as a password from 1970."""
    days = int(text)
    if days <= 0:
        raise ValueError("shadowLastChange is not a date")
    return days * 86400.0


def ad_filetime(text: str) -> float | None:
    """Active Directory's pwdLastSet (100 ns since 1601) in seconds; None for 0, which means
    the password must be changed at the next logon."""
    ticks = int(text)
    if ticks == 0:
        return None
    if ticks < 0:
        raise ValueError("pwdLastSet is not a date")
    return ticks / 10_000_000 - 11_644_473_600


def directory_record(attributes: dict[str, list[bytes]]) -> DirectoryRecord:
    """The password facts in a user's entry: OpenLDAP ppolicy, shadow, Active Directory."""
    times: list[float] = []
    reset = False
    for name, convert in (("pwdchangedtime", generalized_time),
                          ("shadowlastchange", shadow_last_change)):
        for value in attributes.get(name, []):
            try:
                times.append(convert(value.decode("ascii")))
            except (ValueError, UnicodeDecodeError):
                log.warning("unreadable %s in the directory: %r", name, value[:40])
    for value in attributes.get("pwdlastset", []):
        try:
            when = ad_filetime(value.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            continue
        if when is None:
            reset = True  # AD: must change at next logon
        else:
            times.append(when)
    if any(v.upper() == b"TRUE" for v in attributes.get("pwdreset", [])):
        reset = True
    return DirectoryRecord(max(times) if times else None, reset)


# -- helpers ----------------------------------------------------------------------------------


def _entry(pdu: bytes, env: m.Envelope, what: str) -> tuple[str, int, int]:
    """A Modify or Add request's DN, and where its SEQUENCE of changes or attributes lies."""
    tag, start, pos = read_header(pdu, env.op_start, env.op_end)
    if tag != OCTET_STRING:
        raise ProtocolViolation(f"{what}: entry name missing")
    dn = _text(pdu[start:pos])
    tag, pos, end = read_header(pdu, pos, env.op_end)
    if tag != SEQUENCE:
        raise ProtocolViolation(f"{what}: changes missing")
    return dn, pos, end


def _attribute(pdu: bytes, pos: int, end: int) -> tuple[str, list[bytes]]:
    """The inside of a PartialAttribute: (lower-case type without options, values)."""
    tag, start, stop = read_header(pdu, pos, end)
    if tag != OCTET_STRING:
        raise ProtocolViolation("attribute type missing")
    name = _text(pdu[start:stop]).split(";", 1)[0].lower()
    tag, vpos, vend = read_header(pdu, stop, end)
    if tag != SET:
        raise ProtocolViolation("attribute values missing")
    values = []
    while vpos < vend:
        tag, start, vpos = read_header(pdu, vpos, vend)
        if tag != OCTET_STRING:
            raise ProtocolViolation("an attribute value is not an OCTET STRING")
        values.append(pdu[start:vpos])
    return name, values


def _password_value(raw: bytes, unicode_pwd: bool) -> str:
    """A password value as text. unicodePwd is UTF-16LE with surrounding quotes (AD);
    bytes that are not text are kept as surrogates, which is_checkable refuses."""
    if unicode_pwd:
        try:
            text = raw.decode("utf-16-le")
        except UnicodeDecodeError:
            return raw.decode("utf-8", "surrogateescape")
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
    return raw.decode("utf-8", "surrogateescape")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("string is not UTF-8") from None
