"""A bounded BER reader and the few encoders the LDAP front needs on its hot path.

Why not pyasn1 here: decoding one BindRequest through pyasn1 and ldap3's RFC 4511 classes costs
~83 µs, more than the rest of a proxied bind together; this reader does the same in ~1 µs.
It reads only definite-length, low-tag-number TLVs, which is all LDAP (RFC 4511 section 5.1)
allows, and rejects anything else as a protocol violation.
"""
from __future__ import annotations

SEQUENCE = 0x30
INTEGER = 0x02
OCTET_STRING = 0x04
ENUMERATED = 0x0A
BOOLEAN = 0x01

# The longest length field we accept: 4 bytes, i.e. PDUs below 4 GiB; bounded further by callers.
_MAX_LENGTH_OCTETS = 4


class ProtocolViolation(Exception):
    """The peer sent bytes that are not valid LDAP BER; the connection must be closed."""


def read_header(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, int, int]:
    """Read the tag and length at ``pos``; return (tag, value_start, value_end).

    Raises ProtocolViolation when the header is malformed or the value runs past ``end``.
    """
    if pos + 2 > end:
        raise ProtocolViolation("truncated TLV header")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise ProtocolViolation("high tag numbers are not used by LDAP")
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0:
            raise ProtocolViolation("indefinite length is not allowed in LDAP")
        if count > _MAX_LENGTH_OCTETS:
            raise ProtocolViolation("length field too long")
        if pos + count > end:
            raise ProtocolViolation("truncated length")
        length = int.from_bytes(buf[pos:pos + count], "big")
        pos += count
    if pos + length > end:
        raise ProtocolViolation("value runs past its container")
    return tag, pos, pos + length


def frame_length(buf: bytearray, pos: int) -> int | None:
    """Total size of the PDU starting at ``pos`` (header included), or None if more bytes needed.

    Raises ProtocolViolation on a header that can never become valid.
    """
    available = len(buf) - pos
    if available < 2:
        return None
    if buf[pos] != SEQUENCE:
        raise ProtocolViolation(f"an LDAPMessage starts with 0x30, got 0x{buf[pos]:02x}")
    first = buf[pos + 1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0:
        raise ProtocolViolation("indefinite length is not allowed in LDAP")
    if count > _MAX_LENGTH_OCTETS:
        raise ProtocolViolation("length field too long")
    if available < 2 + count:
        return None
    return 2 + count + int.from_bytes(buf[pos + 2:pos + 2 + count], "big")


class Framer:
    """Splits a byte stream into whole LDAPMessage PDUs, never buffering more than one PDU."""

    def __init__(self, max_pdu_size: int) -> None:
        self.max_pdu_size = max_pdu_size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the PDUs now complete. Raises ProtocolViolation."""
        buf = self._buf
        buf += data
        pdus: list[bytes] = []
        pos = 0
        while True:
            size = frame_length(buf, pos)
            if size is None:
                break
            if size > self.max_pdu_size:
                raise ProtocolViolation(f"PDU of {size} bytes exceeds the limit of "
                                        f"{self.max_pdu_size}")
            if len(buf) - pos < size:
                break
            pdus.append(bytes(buf[pos:pos + size]))
            pos += size
        if pos:
            del buf[:pos]
        return pdus

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished PDU."""
        return len(self._buf)


def length_octets(length: int) -> bytes:
    """The BER definite-length field for ``length``."""
    if length < 0x80:
        return bytes((length,))
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, value: bytes) -> bytes:
    """One TLV."""
    return bytes((tag,)) + length_octets(len(value)) + value


def integer_value(number: int) -> bytes:
    """The content octets of a BER INTEGER (two's complement, minimal)."""
    return number.to_bytes(max(1, (number.bit_length() + 8) // 8), "big", signed=True)


def read_integer(buf: bytes, start: int, end: int) -> int:
    """Decode INTEGER content octets."""
    if start == end or end - start > 8:
        raise ProtocolViolation("bad INTEGER")
    return int.from_bytes(buf[start:end], "big", signed=True)
