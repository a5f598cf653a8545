"""The password PDUs the LDAP front decodes (proxy.ldap.passwd), fed bytes encoded with pyasn1."""
from __future__ import annotations

import itertools
import warnings

import ldapwire as w
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyasn1.codec.ber import decoder

from proxy.ldap import messages as m
from proxy.ldap import passwd
from proxy.ldap.ber import ProtocolViolation
from proxy.service import DirectoryRecord
from proxy.service import PasswordChange as ServiceChange

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from ldap3.protocol.rfc4511 import LDAPMessage

ALICE = "uid=alice,ou=people,dc=example,dc=org"
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def env(pdu: bytes) -> m.Envelope:
    return m.parse_envelope(pdu)


def modify(changes: list[tuple[int, str, list[str | bytes]]]) -> passwd.PasswordChange | None:
    pdu = w.modify_request(3, ALICE, changes)
    return passwd.parse_modify_password(pdu, env(pdu))


# -- Password Modify ---------------------------------------------------------------------------

PARTS = list(itertools.product((None, "dn:" + ALICE), (None, "old-Pass-1"),
                               (None, "new-Pass-2")))


@pytest.mark.parametrize(("identity", "old", "new"), PARTS)
def test_password_modify_parts(identity: str | None, old: str | None, new: str | None) -> None:
    """Each of userIdentity, oldPasswd and newPasswd is decoded when present and None when
    absent, in all eight combinations."""
    pdu = w.password_modify(9, identity, old, new)
    request = passwd.parse_extended_request(pdu, env(pdu))
    assert request.name == w.PASSWORD_MODIFY
    assert passwd.parse_password_modify(request.value) == passwd.PasswordModify(identity, old,
                                                                                new)


def test_password_modify_without_value() -> None:
    """A Password Modify with no requestValue decodes as every part absent."""
    pdu = w.extended_request(4, w.PASSWORD_MODIFY)
    request = passwd.parse_extended_request(pdu, env(pdu))
    assert request == passwd.ExtendedRequest(w.PASSWORD_MODIFY, None)
    assert passwd.parse_password_modify(request.value) == passwd.PasswordModify(None, None,
                                                                                None)


def test_extended_request_name_and_value() -> None:
    """Any ExtendedRequest yields its OID and raw value (WhoAmI has none)."""
    pdu = w.whoami(2)
    assert passwd.parse_extended_request(pdu, env(pdu)) == passwd.ExtendedRequest(w.WHOAMI,
                                                                                   None)
    pdu = w.extended_request(2, "1.2.3.4", b"\x00\x01raw")
    assert passwd.parse_extended_request(pdu, env(pdu)).value == b"\x00\x01raw"


# -- ModifyRequest and AddRequest --------------------------------------------------------------


def test_modify_replace_password() -> None:
    """A replace of userPassword sets the new value."""
    assert modify([(w.REPLACE, "userPassword", ["New-Pass-123"])]) == passwd.PasswordChange(
        ALICE, ("New-Pass-123",), (), False)


def test_modify_delete_old_add_new() -> None:
    """The self-service form (delete the old value, add the new) gives both."""
    change = modify([(w.DELETE, "userPassword", ["Old-Pass-123"]),
                     (w.ADD, "userPassword", ["New-Pass-123"])])
    assert change == passwd.PasswordChange(ALICE, ("New-Pass-123",), ("Old-Pass-123",), False)


def test_modify_delete_without_values_removes_all() -> None:
    """A delete of userPassword without values removes every password."""
    assert modify([(w.DELETE, "userPassword", [])]) == passwd.PasswordChange(ALICE, (), (), True)


def test_modify_replace_without_values_removes_all() -> None:
    """A replace of userPassword with no values removes every password."""
    assert modify([(w.REPLACE, "userPassword", [])]) == passwd.PasswordChange(ALICE, (), (),
                                                                               True)


def test_modify_not_touching_a_password_is_none() -> None:
    """A modify of other attributes does not concern the password rules."""
    assert modify([(w.REPLACE, "mail", ["alice@example.org"]),
                   (w.ADD, "description", ["userPassword"])]) is None


@pytest.mark.parametrize("attribute", ["userPassword;binary", "USERPASSWORD", "2.5.4.35",
                                       "UserPassword;x-opt"])
def test_password_attribute_spellings(attribute: str) -> None:
    """userPassword is recognised with options, in any case and by its OID."""
    assert modify([(w.REPLACE, attribute, ["New-Pass-123"])]) == passwd.PasswordChange(
        ALICE, ("New-Pass-123",))


@pytest.mark.parametrize("attribute", ["unicodePwd", "UNICODEPWD", "1.2.840.113556.1.4.90"])
def test_ad_unicode_pwd(attribute: str) -> None:
    """Active Directory's unicodePwd is UTF-16LE inside double quotes; the quotes are dropped."""
    change = modify([(w.DELETE, attribute, ['"Old-Pass-1"'.encode("utf-16-le")]),
                     (w.ADD, attribute, ['"Nëw-Pass-1"'.encode("utf-16-le")])])
    assert change == passwd.PasswordChange(ALICE, ("Nëw-Pass-1",), ("Old-Pass-1",))


def test_add_with_password() -> None:
    """An AddRequest that gives userPassword yields the entry's DN and the value."""
    pdu = w.add_request(5, ALICE, [("objectClass", ["inetOrgPerson"]), ("uid", ["alice"]),
                                   ("userPassword", ["First-Pass-1"])])
    assert passwd.parse_add_password(pdu, env(pdu)) == passwd.PasswordChange(
        ALICE, ("First-Pass-1",))


def test_add_without_password_is_none() -> None:
    """An AddRequest without a password attribute does not concern the rules."""
    pdu = w.add_request(5, ALICE, [("objectClass", ["inetOrgPerson"]), ("uid", ["alice"])])
    assert passwd.parse_add_password(pdu, env(pdu)) is None


@pytest.mark.parametrize(("value", "checkable"), [
    ("Plain-Pass-1", True),
    ("{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", False),
    ("{CRYPT}$6$salt$hash", False),
    ("{ARGON2}$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA", False),
    ("{not a scheme} pass", True),
])
def test_is_checkable(value: str, checkable: bool) -> None:
    """A value with a {SCHEME} prefix is a hash the rules cannot judge; plain text can be."""
    assert passwd.is_checkable(value) is checkable


def test_undecodable_password_is_not_checkable() -> None:
    """A userPassword value that is not UTF-8 decodes, but is_checkable refuses it."""
    change = modify([(w.REPLACE, "userPassword", [b"\xff\xfeNew-Pass"])])
    assert change is not None
    assert not passwd.is_checkable(change.new[0])


# -- the read of a user's password facts -------------------------------------------------------


def test_search_base_request_decodes_as_a_base_search() -> None:
    """The proxy's read of an entry is a base-scope search of the DN for the given attributes,
    filter (objectClass=*), size limit 1, with the message ID given."""
    attributes = ["pwdChangedTime", "pwdReset", "shadowLastChange", "pwdLastSet"]
    pdu = passwd.search_base_request(77, ALICE, attributes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        message, rest = decoder.decode(pdu, asn1Spec=LDAPMessage())
    assert rest == b""
    assert int(message["messageID"]) == 77
    search = message["protocolOp"].getComponentByName("searchRequest")
    assert str(search["baseObject"]) == ALICE
    assert int(search["scope"]) == 0  # baseObject
    assert int(search["derefAliases"]) == 0
    assert int(search["sizeLimit"]) == 1 and int(search["timeLimit"]) == 0
    assert bool(search["typesOnly"]) is False
    assert str(search["filter"].getComponentByName("present")) == "objectClass"
    assert [str(a) for a in search["attributes"]] == attributes
    assert pdu == w.base_search(77, ALICE, attributes)


def test_parse_search_entry() -> None:
    """A SearchResultEntry's attributes come back by lower-case name without options;
    repeated attributes are merged."""
    pdu = w.search_entry(4, ALICE, [("pwdChangedTime", ["20270115080000Z"]),
                                    ("pwdReset;x-opt", ["TRUE"]), ("CN", ["Alice", "Al"]),
                                    ("cn;lang-fr", ["Alicé"])])
    assert passwd.parse_search_entry(pdu, env(pdu)) == {
        "pwdchangedtime": [b"20270115080000Z"], "pwdreset": [b"TRUE"],
        "cn": [b"Alice", b"Al", "Alicé".encode()]}


@pytest.mark.parametrize(("text", "seconds"), [
    ("20270115080000Z", T0),
    ("20270115080000.123Z", T0),
    ("20270115080000,5Z", T0),
    ("202701150800Z", T0),
    ("2027011508Z", T0),
    ("20270115100000+0200", T0),
    ("20270115030000-0500", T0),
    ("20270115093000+0130", T0),
    ("20270115100000+02", T0),
])
def test_generalized_time(text: str, seconds: float) -> None:
    """GeneralizedTime with Z, fractions, missing minutes/seconds and offsets, in UTC seconds."""
    assert passwd.generalized_time(text) == seconds


@pytest.mark.parametrize("text", ["", "yesterday", "20270115080000", "2027-01-15T08:00:00Z"])
def test_generalized_time_refuses_other_text(text: str) -> None:
    """Anything that is not a GeneralizedTime raises ValueError."""
    with pytest.raises(ValueError):
        passwd.generalized_time(text)


def test_shadow_last_change() -> None:
    """shadowLastChange counts days since 1970; 0 (change at next login) is not a date."""
    assert passwd.shadow_last_change("20833") == 20833 * 86400.0
    with pytest.raises(ValueError):
        passwd.shadow_last_change("0")


def test_ad_filetime() -> None:
    """pwdLastSet counts 100 ns since 1601; 0 means must change at next logon (None)."""
    ticks = int((T0 + 11_644_473_600) * 10_000_000)
    assert passwd.ad_filetime(str(ticks)) == T0
    assert passwd.ad_filetime("0") is None
    with pytest.raises(ValueError):
        passwd.ad_filetime("-1")


def test_directory_record() -> None:
    """The latest of pwdChangedTime, shadowLastChange and pwdLastSet is the last change;
    pwdReset TRUE or pwdLastSet 0 is a reset; unreadable values are ignored."""
    ticks = str(int((T0 - 86400 + 11_644_473_600) * 10_000_000)).encode()
    assert passwd.directory_record({}) == DirectoryRecord(None, False)
    assert passwd.directory_record({
        "pwdchangedtime": [b"20270115080000Z", b"garbage"], "shadowlastchange": [b"20000"],
        "pwdlastset": [ticks], "pwdreset": [b"FALSE"]}) == DirectoryRecord(T0, False)
    assert passwd.directory_record({"pwdreset": [b"true"]}) == DirectoryRecord(None, True)
    assert passwd.directory_record({"pwdlastset": [b"0"]}) == DirectoryRecord(None, True)
    assert passwd.directory_record({"shadowlastchange": [b"0", b"x"]}) == DirectoryRecord()


def test_reprs_never_show_a_password() -> None:
    """The decoded requests' reprs hold no password (nor the raw extended value)."""
    secrets = ("old-Secret-1", "new-Secret-2")
    pdu = w.password_modify(1, "dn:" + ALICE, *secrets)
    extended = passwd.parse_extended_request(pdu, env(pdu))
    modify_pdu = w.modify_request(2, ALICE, [(w.DELETE, "userPassword", [secrets[0]]),
                                             (w.ADD, "userPassword", [secrets[1]])])
    bind = w.bind_request(3, ALICE, secrets[0])
    shown = " ".join(repr(x) for x in (
        extended, passwd.parse_password_modify(extended.value),
        passwd.parse_modify_password(modify_pdu, env(modify_pdu)),
        m.parse_bind_request(bind, env(bind)),
        ServiceChange(ALICE, True, secrets[1], secrets[0])))
    assert ALICE in shown
    for secret in secrets:
        assert secret not in shown


# -- malformed input ---------------------------------------------------------------------------

BAD_VALUES = [
    b"\x04\x03abc",  # not a SEQUENCE
    b"\x30\x03\x82\x01a\x00",  # trailing byte after the SEQUENCE
    b"\x30\x06\x82\x01a\x82\x01b",  # newPasswd twice
    b"\x30\x03\x83\x01a",  # an unknown element
    b"\x30\x05\x82\x05ab",  # value runs past its container
    b"\x30\x03\x82\x01\xff",  # not UTF-8
    b"\x30",  # truncated header
    b"\x30\x80\x00\x00",  # indefinite length
]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_malformed_password_modify_value(value: bytes) -> None:
    """A malformed PasswdModifyRequestValue raises ProtocolViolation."""
    with pytest.raises(ProtocolViolation):
        passwd.parse_password_modify(value)


def _wrap(op_tag: int, body: bytes) -> bytes:
    inner = b"\x02\x01\x01" + bytes((op_tag, len(body))) + body
    return bytes((0x30, len(inner))) + inner


@pytest.mark.parametrize(("op_tag", "body"), [
    (m.EXTENDED_REQUEST, b"\x81\x01x"),  # no requestName
    (m.EXTENDED_REQUEST, b"\x80\x01x\x82\x01y"),  # not a requestValue
    (m.EXTENDED_REQUEST, b"\x80\x02\xff\xfe"),  # name not UTF-8
    (m.MODIFY_REQUEST, b"\x30\x00"),  # no object
    (m.MODIFY_REQUEST, b"\x04\x00\x04\x00"),  # changes not a SEQUENCE
    (m.MODIFY_REQUEST, b"\x04\x00\x30\x02\x04\x00"),  # a change is not a SEQUENCE
    (m.MODIFY_REQUEST, b"\x04\x00\x30\x04\x30\x02\x02\x00"),  # operation not ENUMERATED
    (m.MODIFY_REQUEST, b"\x04\x00\x30\x04\x30\x02\x0a\x00"),  # empty ENUMERATED
    (m.MODIFY_REQUEST, b"\x04\x00\x30\x07\x30\x05\x0a\x01\x02\x04\x00"),  # no PartialAttribute
    (m.MODIFY_REQUEST,  # vals not a SET
     b"\x04\x00\x30\x0b\x30\x09\x0a\x01\x02\x30\x04\x04\x00\x30\x00"),
    (m.MODIFY_REQUEST,  # a value not an OCTET STRING
     b"\x04\x00\x30\x0d\x30\x0b\x0a\x01\x02\x30\x06\x04\x00\x31\x02\x02\x00"),
    (m.MODIFY_REQUEST, b"\x04\x01\xff\x30\x00"),  # DN not UTF-8
    (m.ADD_REQUEST, b"\x30\x00"),  # no entry
    (m.ADD_REQUEST, b"\x04\x00\x31\x00"),  # attributes not a SEQUENCE
    (m.ADD_REQUEST, b"\x04\x00\x30\x02\x04\x00"),  # an attribute is not a SEQUENCE
])
def test_malformed_requests(op_tag: int, body: bytes) -> None:
    """Malformed ExtendedRequest, ModifyRequest and AddRequest bodies raise ProtocolViolation."""
    with pytest.raises(ProtocolViolation):
        _decode(_wrap(op_tag, body))


def _decode(pdu: bytes) -> object:
    """Decode ``pdu`` as the LDAP front would."""
    e = m.parse_envelope(pdu)
    if e.op_tag == m.EXTENDED_REQUEST:
        request = passwd.parse_extended_request(pdu, e)
        return passwd.parse_password_modify(request.value)
    if e.op_tag == m.MODIFY_REQUEST:
        return passwd.parse_modify_password(pdu, e)
    if e.op_tag == m.ADD_REQUEST:
        return passwd.parse_add_password(pdu, e)
    if e.op_tag == m.SEARCH_RESULT_ENTRY:
        return passwd.parse_search_entry(pdu, e)
    return e


SEEDS = [
    w.password_modify(5, "dn:" + ALICE, "old-Pass-1", "new-Pass-2"),
    w.password_modify(6, new="x"),
    w.modify_request(7, ALICE, [(w.DELETE, "userPassword", ["old"]),
                                (w.ADD, "unicodePwd", ['"new"'.encode("utf-16-le")]),
                                (w.REPLACE, "mail", ["a@b"])]),
    w.add_request(8, ALICE, [("objectClass", ["top"]), ("userPassword", ["pw"])]),
    w.search_entry(9, ALICE, [("pwdReset", ["TRUE"])]),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    pdu = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        where = draw(st.integers(0, max(0, len(pdu) - 1)))
        if kind == "flip" and pdu:
            pdu[where] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and pdu:
            pdu[where] = draw(st.integers(0, 255))
        elif kind == "cut":
            del pdu[where:]
        elif kind == "insert":
            pdu[where:where] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and pdu:
            del pdu[where]
    return bytes(pdu)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_pdus_decode_or_raise_protocol_violation(pdu: bytes) -> None:
    """Whatever a mutated Password Modify / Modify / Add PDU holds, decoding it either
    succeeds or raises ProtocolViolation, never another exception."""
    try:
        _decode(pdu)
    except ProtocolViolation:
        pass
