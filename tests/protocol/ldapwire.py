"""LDAP PDUs for protocol tests, encoded independently of bindguard (pyasn1 + ldap3's RFC 4511)."""
from __future__ import annotations

import warnings

from pyasn1.codec.ber import decoder, encoder
from pyasn1.type import namedtype, tag, univ

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from ldap3.operation.bind import bind_operation
    from ldap3.operation.search import search_operation
    from ldap3.protocol.rfc3062 import PasswdModifyRequestValue
    from ldap3.protocol.rfc4511 import (
        LDAPDN,
        AddRequest,
        AddResponse,
        Attribute,
        AttributeList,
        AttributeValue,
        AuthenticationChoice,
        BindRequest,
        BindResponse,
        Change,
        Changes,
        Control,
        Controls,
        ExtendedRequest,
        ExtendedResponse,
        LDAPMessage,
        MessageID,
        ModifyRequest,
        ModifyResponse,
        Operation,
        PartialAttribute,
        PartialAttributeList,
        ProtocolOp,
        RequestName,
        RequestValue,
        ResponseName,
        ResponseValue,
        ResultCode,
        SearchResultDone,
        SearchResultEntry,
        Simple,
        Vals,
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


def search_done(message_id: int, code: int = 0, message: str = "") -> bytes:
    """A SearchResultDone."""
    return _message(message_id, "searchResDone", _result(SearchResultDone, code, message))


def unbind_request(message_id: int) -> bytes:
    """An UnbindRequest (0x42 00)."""
    body = bytes((0x02, 0x01, message_id, 0x42, 0x00))
    return bytes((0x30, len(body))) + body


# -- password operations --------------------------------------------------------------------

PASSWORD_MODIFY = "1.3.6.1.4.1.4203.1.11.1"
WHOAMI = "1.3.6.1.4.1.4203.1.11.3"
ADD, DELETE, REPLACE = 0, 1, 2

Controls_ = list[tuple[str, bool, "bytes | None"]]


def password_modify_value(user_identity: str | None = None, old: str | bytes | None = None,
                          new: str | bytes | None = None) -> bytes:
    """A PasswdModifyRequestValue (RFC 3062) with the parts given."""
    value = PasswdModifyRequestValue()
    for name, part in (("userIdentity", user_identity), ("oldPasswd", old),
                       ("newPasswd", new)):
        if part is not None:
            value[name] = part
    return bytes(encoder.encode(value))


def extended_request(message_id: int, oid: str, value: bytes | None = None,
                     controls: Controls_ = ()) -> bytes:  # type: ignore[assignment]
    """An ExtendedRequest with an optional value."""
    op = ExtendedRequest()
    op["requestName"] = RequestName(oid)
    if value is not None:
        op["requestValue"] = RequestValue(value)
    return _message(message_id, "extendedReq", op, controls)


def password_modify(message_id: int, user_identity: str | None = None,
                    old: str | bytes | None = None, new: str | bytes | None = None,
                    controls: Controls_ = ()) -> bytes:  # type: ignore[assignment]
    """A Password Modify ExtendedRequest (RFC 3062)."""
    return extended_request(message_id, PASSWORD_MODIFY,
                            password_modify_value(user_identity, old, new), controls)


def whoami(message_id: int) -> bytes:
    """A WhoAmI ExtendedRequest (RFC 4532): no value."""
    return extended_request(message_id, WHOAMI)


def extended_response(message_id: int, code: int, message: str = "",
                      name: str | None = None, value: bytes | None = None,
                      controls: Controls_ = ()) -> bytes:  # type: ignore[assignment]
    """An ExtendedResponse."""
    op = _result(ExtendedResponse, code, message)
    if name is not None:
        op["responseName"] = ResponseName(name)  # type: ignore[index]
    if value is not None:
        op["responseValue"] = ResponseValue(value)  # type: ignore[index]
    return _message(message_id, "extendedResp", op, controls)


def _vals(values: list[str | bytes]) -> Vals:
    vals = Vals()
    for index, value in enumerate(values):
        vals.setComponentByPosition(index, AttributeValue(value))
    return vals


def modify_request(message_id: int, dn: str,
                   changes: list[tuple[int, str, list[str | bytes]]],
                   controls: Controls_ = ()) -> bytes:  # type: ignore[assignment]
    """A ModifyRequest: (operation, attribute, values) per change."""
    op = ModifyRequest()
    op["object"] = LDAPDN(dn)
    encoded = Changes()
    for index, (operation, attribute, values) in enumerate(changes):
        change = Change()
        change["operation"] = Operation(operation)
        modification = PartialAttribute()
        modification["type"] = attribute
        modification["vals"] = _vals(values)
        change["modification"] = modification
        encoded.setComponentByPosition(index, change)
    op["changes"] = encoded
    return _message(message_id, "modifyRequest", op, controls)


def modify_response(message_id: int, code: int, message: str = "",
                    controls: Controls_ = ()) -> bytes:  # type: ignore[assignment]
    """A ModifyResponse."""
    return _message(message_id, "modifyResponse", _result(ModifyResponse, code, message),
                    controls)


def add_request(message_id: int, dn: str, attributes: list[tuple[str, list[str | bytes]]],
                controls: Controls_ = ()) -> bytes:  # type: ignore[assignment]
    """An AddRequest: (attribute, values) per attribute."""
    op = AddRequest()
    op["entry"] = LDAPDN(dn)
    encoded = AttributeList()
    for index, (attribute, values) in enumerate(attributes):
        item = Attribute()
        item["type"] = attribute
        item["vals"] = _vals(values)
        encoded.setComponentByPosition(index, item)
    op["attributes"] = encoded
    return _message(message_id, "addRequest", op, controls)


def add_response(message_id: int, code: int, message: str = "") -> bytes:
    """An AddResponse."""
    return _message(message_id, "addResponse", _result(AddResponse, code, message))


def search_entry(message_id: int, dn: str,
                 attributes: list[tuple[str, list[str | bytes]]]) -> bytes:
    """A SearchResultEntry."""
    op = SearchResultEntry()
    op["object"] = LDAPDN(dn)
    encoded = PartialAttributeList()
    for index, (attribute, values) in enumerate(attributes):
        item = PartialAttribute()
        item["type"] = attribute
        item["vals"] = _vals(values)
        encoded.setComponentByPosition(index, item)
    op["attributes"] = encoded
    return _message(message_id, "searchResEntry", op)


def base_search(message_id: int, dn: str, attributes: list[str]) -> bytes:
    """A base-scope SearchRequest of ``dn`` for (objectClass=*), size limit 1."""
    op = search_operation(dn, "(objectClass=*)", 0, 0, attributes, 1, 0, False, False, False)
    return _message(message_id, "searchRequest", op)


def decode_password_modify(pdu: bytes) -> tuple[int, dict[str, bytes], Controls_]:
    """A Password Modify ExtendedRequest read back: (message ID, the value's parts present,
    controls)."""
    message, rest = decoder.decode(pdu, asn1Spec=LDAPMessage())
    assert rest == b"" and message["protocolOp"].getName() == "extendedReq"
    op = message["protocolOp"].getComponent()
    assert str(op["requestName"]) == PASSWORD_MODIFY
    value, rest = decoder.decode(bytes(op["requestValue"]), asn1Spec=PasswdModifyRequestValue())
    assert rest == b""
    parts = {name: bytes(value[name]) for name in ("userIdentity", "oldPasswd", "newPasswd")
             if value[name].isValue}
    controls = [(str(c["controlType"]), bool(c["criticality"]),
                 bytes(c["controlValue"]) if c["controlValue"].isValue else None)
                for c in message["controls"]] if message["controls"].isValue else []
    return int(message["messageID"]), parts, controls


# -- the password policy response control value (draft-behera) -------------------------------

class _PPolicyWarning(univ.Choice):
    componentType = namedtype.NamedTypes(
        namedtype.NamedType("timeBeforeExpiration", univ.Integer().subtype(
            implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 0))),
        namedtype.NamedType("graceAuthNsRemaining", univ.Integer().subtype(
            implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 1))))


class _PPolicyResponseValue(univ.Sequence):
    componentType = namedtype.NamedTypes(
        namedtype.OptionalNamedType("warning", _PPolicyWarning().subtype(
            explicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatConstructed, 0))),
        namedtype.OptionalNamedType("error", univ.Enumerated().subtype(
            implicitTag=tag.Tag(tag.tagClassContext, tag.tagFormatSimple, 1))))


def ppolicy_value(error: int | None = None, expires_in: int | None = None,
                  grace: int | None = None) -> bytes:
    """A PasswordPolicyResponseValue: error and/or warning."""
    value = _PPolicyResponseValue()
    if expires_in is not None or grace is not None:
        warning = value.setComponentByName("warning").getComponentByName("warning")
        if expires_in is not None:
            warning["timeBeforeExpiration"] = expires_in
        else:
            warning["graceAuthNsRemaining"] = grace
    if error is not None:
        value["error"] = error
    return bytes(encoder.encode(value))


def ppolicy_response(error: int | None = None,
                     expires_in: int | None = None) -> Controls_:
    """The controls list holding one password policy response control."""
    return [(PPOLICY, False, ppolicy_value(error, expires_in))]
