"""The bounded BER framer and the session under random and mutated input (hypothesis).

Invariants: however the bytes are split into reads, the same PDUs come out; anything that is
not LDAP raises ProtocolViolation and nothing else; the framer never holds more than one PDU;
a session fed garbage closes that connection (with a Notice of Disconnection) and never raises.
"""
from __future__ import annotations

from typing import Any

import ldapwire as w
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.ldap import messages as m
from proxy.ldap.ber import Framer, ProtocolViolation, length_octets, read_header, tlv

MAX = 4096
ALICE = "uid=alice,ou=people,dc=example,dc=org"

VALID_PDUS = [
    w.bind_request(1, ALICE, "alice-pass", [(w.PPOLICY, False, None)]),
    w.bind_request(2, "", ""),
    w.sasl_bind_request(3),
    w.search_request(4, "dc=example,dc=org", [(w.PAGED, True, bytes.fromhex("300502010a0400"))]),
    w.unbind_request(5),
    w.bind_response(1, 49, "Invalid credentials"),
    w.search_done(4),
]

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


# -- examples ---------------------------------------------------------------------------------


def test_framer_returns_whole_pdus_and_keeps_the_rest() -> None:
    framer = Framer(MAX)
    stream = VALID_PDUS[0] + VALID_PDUS[3][:7]
    assert framer.feed(stream) == [VALID_PDUS[0]]
    assert framer.buffered == 7
    assert framer.feed(VALID_PDUS[3][7:]) == [VALID_PDUS[3]]
    assert framer.buffered == 0


def test_long_form_lengths_are_framed() -> None:
    pdu = tlv(0x30, tlv(0x02, b"\x01") + tlv(0x63, b"x" * 300))
    assert pdu[1] == 0x82
    assert Framer(MAX).feed(pdu) == [pdu]


@pytest.mark.parametrize("data, why", [
    (b"\x04\x00", "starts with 0x30"),
    (b"\x30\x80\x00\x00", "indefinite"),
    (b"\x30\x85\x00\x00\x00\x00\x01", "length field too long"),
    (b"\x30\x84\x00\x00\x10\x01", "exceeds the limit"),
])
def test_framer_rejects_what_is_not_ldap(data: bytes, why: str) -> None:
    with pytest.raises(ProtocolViolation, match=why):
        Framer(MAX).feed(data)


def test_oversized_pdu_is_refused_from_its_header_alone() -> None:
    """The limit is checked before the body arrives: no buffering up to a huge length."""
    header = b"\x30" + length_octets(MAX + 1)
    with pytest.raises(ProtocolViolation):
        Framer(MAX).feed(header)


def test_read_header_refuses_values_running_past_their_container() -> None:
    with pytest.raises(ProtocolViolation):
        read_header(b"\x04\x05abc", 0, 5)
    with pytest.raises(ProtocolViolation):
        read_header(b"\x1f\x01a", 0, 3)  # high tag number form


# -- properties -------------------------------------------------------------------------------


@FUZZ
@given(st.lists(st.sampled_from(VALID_PDUS), min_size=1, max_size=12),
       st.lists(st.integers(min_value=0, max_value=10_000), max_size=30))
def test_any_split_of_a_valid_stream_gives_the_same_pdus(pdus: list[bytes],
                                                         cuts: list[int]) -> None:
    framer = Framer(MAX)
    out: list[bytes] = []
    for chunk in split(b"".join(pdus), cuts):
        out.extend(framer.feed(chunk))
        assert framer.buffered < MAX
    assert out == pdus
    assert framer.buffered == 0


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_random_bytes_only_ever_raise_protocol_violation(chunks: list[bytes]) -> None:
    framer = Framer(MAX)
    try:
        for chunk in chunks:
            for pdu in framer.feed(chunk):
                assert len(pdu) <= MAX
                m.parse_envelope(pdu)
            assert framer.buffered <= MAX + 6  # at most one PDU and its header
    except ProtocolViolation:
        pass


@st.composite
def mutated_pdu(draw: Any) -> bytes:
    """A valid PDU with a few bytes replaced, inserted or removed."""
    data = bytearray(draw(st.sampled_from(VALID_PDUS)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[pos]
        elif kind == "truncate":
            del data[pos:]
    return bytes(data)


@FUZZ
@given(mutated_pdu())
def test_mutated_pdus_decode_or_raise_protocol_violation(data: bytes) -> None:
    """Every decoder the front uses on client bytes fails only with ProtocolViolation."""
    try:
        for pdu in Framer(MAX).feed(data):
            env = m.parse_envelope(pdu)
            if env.op_tag == m.BIND_REQUEST:
                m.parse_bind_request(pdu, env)
            if env.op_tag == m.BIND_RESPONSE:
                m.result_code(pdu, env)
    except ProtocolViolation:
        pass


@FUZZ
@given(st.lists(st.one_of(mutated_pdu(), st.sampled_from(VALID_PDUS), st.binary(max_size=64)),
                min_size=1, max_size=8),
       st.lists(st.integers(min_value=0, max_value=10_000), max_size=10))
def test_session_survives_any_client_bytes(make_harness: Any, inputs: list[bytes],
                                           cuts: list[int]) -> None:
    """A session never raises; it either works or closes with a Notice of Disconnection."""
    harness = make_harness()
    session, client = harness.session()
    for chunk in split(b"".join(inputs), cuts):
        session.dataReceived(chunk)
        for connection in harness.directory.connections:
            # The directory answers every bind it got with 49, as slapd would for junk.
            for pdu in Framer(MAX).feed(connection.transport.value()):
                env = m.parse_envelope(pdu)
                if env.op_tag == m.BIND_REQUEST:
                    connection.dataReceived(w.bind_response(env.message_id, 49))
            connection.transport.clear()
        assert session.framer.buffered <= MAX + 6
    harness.store.close()


def test_malformed_pdu_gets_a_notice_of_disconnection(harness: Any) -> None:
    session, client = harness.session()
    session.dataReceived(VALID_PDUS[0][:5] + b"\xff" + VALID_PDUS[0][6:])
    session.dataReceived(w.bind_request(9, ALICE, "ignored after the violation"))
    assert client.disconnecting
    assert m.NOTICE_OF_DISCONNECTION_OID.encode() in client.value()
    assert harness.directory.connections == []
