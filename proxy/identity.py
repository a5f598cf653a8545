"""Who an account is: canonical DNs, and user names mapped to DNs through ``[directory]``."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from proxy.config import Config


class UnknownUser(Exception):
    """A user name that does not map to exactly one DN."""


# Attribute types that name entries, by OID and by their long names (RFC 4519, RFC 4524).
_TYPE_ALIASES = {
    "0.9.2342.19200300.100.1.1": "uid", "userid": "uid",
    "2.5.4.3": "cn", "commonname": "cn",
    "2.5.4.11": "ou", "organizationalunitname": "ou",
    "0.9.2342.19200300.100.1.25": "dc", "domaincomponent": "dc",
    "2.5.4.10": "o", "organizationname": "o",
    "2.5.4.6": "c", "countryname": "c",
    "2.5.4.7": "l", "localityname": "l",
    "2.5.4.8": "st", "stateorprovincename": "st",
    "2.5.4.9": "street", "streetaddress": "street",
    "2.5.4.4": "sn", "surname": "sn",
    "0.9.2342.19200300.100.1.3": "mail", "rfc822mailbox": "mail",
}
_TYPE = re.compile(r"(?:oid\.)?([a-z][a-z0-9-]*|[0-9]+(?:\.[0-9]+)*)\Z")
_SPECIAL = ',+"\\<>;=#'
_HEX = "0123456789abcdefABCDEF"


@lru_cache(maxsize=65536)
def canonical_dn(dn: str) -> str:
    """The key of an account: one spelling for every way of writing the same DN.

    Attribute types lower case, OIDs and long names mapped to the usual short name (``uid``),
    RFC 4514 escapes decoded (``\\61`` is ``a``), values lower case without the spaces around
    them, the parts of a multi-valued RDN sorted, then written back with one escaping. A string
    that does not parse as a DN is keyed by its lower-cased, stripped self; the directory
    refuses such a bind, and the failure still counts against that key.
    """
    try:
        rdns = _parse_dn(dn)
    except ValueError:
        return dn.strip().lower()
    return ",".join("+".join(sorted(f"{kind}={_escape(value)}" for kind, value in rdn))
                    for rdn in rdns)


def rdns(canonical: str) -> tuple[str, ...]:
    """The RDNs of a canonical DN, leaf first (commas inside values are escaped)."""
    parts, start, pos = [], 0, 0
    while pos < len(canonical):
        if canonical[pos] == "\\":
            pos += 2
            continue
        if canonical[pos] == ",":
            parts.append(canonical[start:pos])
            start = pos + 1
        pos += 1
    parts.append(canonical[start:])
    return tuple(parts)


def _parse_dn(dn: str) -> list[list[tuple[str, str]]]:
    """RFC 4514: RDNs of (type, value) pairs; raises ValueError for what is not a DN."""
    result: list[list[tuple[str, str]]] = []
    rdn: list[tuple[str, str]] = []
    pos, end = 0, len(dn)
    if not dn.strip():
        raise ValueError("empty DN")
    while True:
        equals = dn.find("=", pos)
        if equals < 0:
            raise ValueError("attribute type without a value")
        kind = dn[pos:equals].strip().lower()
        if not _TYPE.match(kind):
            raise ValueError(f"not an attribute type: {kind!r}")
        kind = _TYPE_ALIASES.get(kind.removeprefix("oid."), kind.removeprefix("oid."))
        value, pos = _read_value(dn, equals + 1)
        rdn.append((kind, value))
        if pos == end:
            result.append(rdn)
            return result
        if dn[pos] == ",":
            result.append(rdn)
            rdn = []
        pos += 1  # past "," or "+"


def _read_value(dn: str, pos: int) -> tuple[str, int]:
    """A value from ``pos`` to the next unescaped ``,`` or ``+``: (lower case text, end)."""
    raw = bytearray()
    end = len(dn)
    while pos < end and dn[pos] == " ":
        pos += 1
    if pos < end and dn[pos] == "#":  # the BER encoding of the value, in hex
        stop = pos + 1
        while stop < end and dn[stop] not in ",+":
            stop += 1
        return _ber_string(bytes.fromhex(dn[pos + 1:stop].strip())).lower(), stop
    trailing = 0  # unescaped spaces at the end, dropped
    while pos < end and dn[pos] not in ",+":
        char = dn[pos]
        if char == "\\":
            if pos + 1 >= end:
                raise ValueError("escape at the end")
            if dn[pos + 1] in _HEX and pos + 2 < end and dn[pos + 2] in _HEX:
                raw.append(int(dn[pos + 1:pos + 3], 16))
                pos += 3
            else:
                raw += dn[pos + 1].encode("utf-8")
                pos += 2
            trailing = 0
            continue
        if char in '"<>;=':
            raise ValueError(f"unescaped {char!r} in a value")
        raw += char.encode("utf-8")
        trailing = trailing + 1 if char == " " else 0
        pos += 1
    text = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
    return (text[:len(text) - trailing] if trailing else text).lower(), pos


def _ber_string(encoded: bytes) -> str:
    """The text of a ``#``-hex value: one BER string TLV (definite length)."""
    if len(encoded) < 2:
        raise ValueError("BER value too short")
    length, start = encoded[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, start = int.from_bytes(encoded[2:2 + count], "big"), 2 + count
    if start + length != len(encoded):
        raise ValueError("BER value of the wrong length")
    return encoded[start:].decode("utf-8")


def _escape(value: str) -> str:
    """One RFC 4514 spelling of a value."""
    out = "".join("\\" + c if c in _SPECIAL else c for c in value)
    if out.startswith(" "):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def looks_like_dn(user: str) -> bool:
    """Whether a CLI or PAM ``USER`` argument is a DN rather than a name."""
    return "=" in user


@dataclass(frozen=True)
class UserSet:
    """Accounts named in a list option by DN or by name.

    A name maps to a DN through ``user_dn_template``; without a template (names found by a
    search) a name matches a DN whose first RDN has that value (``uid=NAME,...``). With
    ``subtrees`` a DN also covers every entry below it (``ou=services,dc=example,dc=org``).
    """

    dns: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    subtrees: bool = False

    @classmethod
    def from_items(cls, config: Config, items: tuple[str, ...],
                   subtrees: bool = False) -> UserSet:
        """The set named by ``items`` (names or DNs; DNs as subtrees when ``subtrees``)."""
        dns, names = set(), set()
        template = config.directory.user_dn_template
        for item in items:
            if looks_like_dn(item):
                dns.add(canonical_dn(item))
            elif template is not None:
                dns.add(canonical_dn(template.replace("{user}", escape_rdn(item))))
            else:
                names.add(item.lower())
        return cls(frozenset(dns), frozenset(names), subtrees)

    def __contains__(self, dn: object) -> bool:
        if not isinstance(dn, str):
            return False
        if dn in self.dns:
            return True
        if self.subtrees:
            parts = rdns(dn)
            for base in self.dns:
                below = rdns(base)
                if len(parts) > len(below) and parts[-len(below):] == below:
                    return True
        if not self.names:
            return False
        first = dn.split(",", 1)[0]
        return first.partition("=")[2] in self.names


# Local accounts (checked by [pam_backend]) have no DN in the directory: their state is keyed
# by a DN of bindguard's own under this suffix, which no directory entry can collide with.
LOCAL_SUFFIX = "cn=local-accounts,cn=bindguard"


def is_local(config: Config, user: str) -> bool:
    """Whether ``user`` is one of the local accounts [pam_backend] checks."""
    return config.pam_backend is not None and user in config.pam_backend.users


def local_dn(user: str) -> str:
    """The key of a local account."""
    return canonical_dn(f"uid={escape_rdn(user)},{LOCAL_SUFFIX}")


def user_to_dn(config: Config, user: str) -> str:
    """Map a user name (or DN) to a canonical DN; searching the directory when configured so.

    Blocking (may contact the directory): for the CLI, never the reactor thread.
    """
    if looks_like_dn(user):
        return canonical_dn(user)
    if is_local(config, user):
        return local_dn(user)
    directory = config.directory
    if directory.user_dn_template is not None:
        return canonical_dn(directory.user_dn_template.replace("{user}", escape_rdn(user)))
    if directory.search_base is None:
        raise UnknownUser(f"{user}: give a DN, or set [directory] user_dn_template or "
                          "search_base to map names to DNs")
    return canonical_dn(_search_dn(config, user))


def _search_dn(config: Config, user: str) -> str:
    import ldap3

    directory = config.directory
    assert directory.search_base is not None
    password = None
    if directory.bind_password_file:
        password = Path(directory.bind_password_file).read_text().strip()
    last_error: Exception | None = None
    timeout = max(1, math.ceil(config.proxy.upstream_timeout))  # ldap3 packs it as an int
    for upstream in config.proxy.upstream:
        server = ldap3.Server(upstream.host, port=upstream.port, connect_timeout=timeout)
        try:
            with ldap3.Connection(server, user=directory.bind_dn, password=password,
                                  auto_bind=True,
                                  receive_timeout=timeout) as conn:
                conn.search(directory.search_base,
                            directory.search_filter.replace("{user}",
                                                            escape_filter_chars(user)),
                            attributes=[])
                entries = [e.entry_dn for e in conn.entries]
        except LDAPException as exc:
            last_error = exc
            continue
        if len(entries) != 1:
            raise UnknownUser(f"{user}: the directory search found {len(entries)} entries")
        return str(entries[0])
    raise UnknownUser(f"{user}: cannot search the directory: {last_error}")
