"""What the parts of a client session (binds, password changes) use of the session itself."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.config import ProxyConfig
    from proxy.ldap import messages as m
    from proxy.service import AuthService


# In a session's output queue: close the connection once everything ahead of it is written.
CLOSE = object()


class SessionParts:
    """Base of the mixins of LdapSession: declares, for type checkers, what LdapSession gives."""

    if TYPE_CHECKING:
        service: AuthService
        config: ProxyConfig
        client: str
        client_gone: bool
        held: bool
        restricted: bool  # must change the password before anything else
        tls: bool  # the client's connection is encrypted
        sasl_bound: bool
        bound_dn: str | None
        bound_password: str | None
        upstream: Any
        watches: dict[int, Any]

        def answer(self, message_id: int, op_tag: int, code: int, message: str = "",
                   controls: bytes = b"") -> None: ...
        def emit(self, item: bytes | object) -> None: ...
        def _slot(self) -> list[bytes]: ...
        def _fill(self, slot: list[bytes], pdu: bytes) -> None: ...
        def _with_upstream(self, then: Callable[[], None],
                           otherwise: Callable[[], None]) -> None: ...
        def _watch(self, message_id: int, on_pdu: Callable[[bytes, m.Envelope], bool],
                   on_lost: Callable[[], None]) -> None: ...
        def _drop_upstream(self) -> None: ...
        def _internal_error(self, failure: Any, message_id: int, op_tag: int) -> None: ...
        def _resume(self) -> None: ...
        def _fail_watches(self) -> None: ...
        def upstream_lost(self, why: str) -> None: ...
        reactor: Any
        connect: Any
        queue: Any
        metrics: Any
        idle: Any
