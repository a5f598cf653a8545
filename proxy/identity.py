"""Who an account is: canonical DNs, and user names mapped to DNs through ``[directory]``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from proxy.config import Config


class UnknownUser(Exception):
    """A user name that does not map to exactly one DN."""


@lru_cache(maxsize=65536)
def canonical_dn(dn: str) -> str:
    """The key of an account: attribute types and values lower case, no spaces around = and ,.

    A string that does not parse as a DN is keyed by its lower-cased, stripped self; the
    directory refuses such a bind, and the failure still counts against that key.
    """
    try:
        parts = parse_dn(dn, escape=False, strip=True)
    except (LDAPException, ValueError, IndexError):
        return dn.strip().lower()
    out = []
    for attr, value, separator in parts:
        out.append(f"{attr.strip().lower()}={value.strip().lower()}")
        out.append("+" if separator == "+" else ",")
    return "".join(out[:-1])


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
        if self.subtrees and any(dn.endswith("," + base) for base in self.dns):
            return True
        if not self.names:
            return False
        first = dn.split(",", 1)[0]
        return first.partition("=")[2] in self.names


def user_to_dn(config: Config, user: str) -> str:
    """Map a user name (or DN) to a canonical DN; searching the directory when configured so.

    Blocking (may contact the directory): for the CLI, never the reactor thread.
    """
    if looks_like_dn(user):
        return canonical_dn(user)
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
