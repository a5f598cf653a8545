"""Prometheus metrics: counters the fronts bump in one call, served at ``/metrics``.

Every label value is from a bounded set (an unknown one is reported as ``other``): a user or a
client address is never a label. Authentications and lockouts are counted from the audit log
(``observe_audit``), which records exactly one ``auth.success`` or ``auth.failure`` per
authentication. ``NullMetrics`` stands in when ``[proxy] metrics`` is empty.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource

from proxy.transitions import Refusal

log = logging.getLogger(__name__)

FRONTS = ("ldap", "pam")
OUTCOMES = ("success", "failure")
REFUSED = ("limit", "per_source")  # max_connections, max_connections_per_source
OTHER = "other"
NO_REASON = "none"  # a plain success
# The audit reasons of auth.success and auth.failure (a bounded set).
REASONS = frozenset({NO_REASON, "password_change", "must_change", "invalid_credentials",
                     "password_expired", "directory_unavailable", "directory_error"}
                    | {refusal.value for refusal in Refusal})
# A directory round trip on a LAN is ~1 ms; upstream_timeout defaults to 5 s.
UPSTREAM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0)
_MAX_CACHED = 512  # children looked up by raw arguments; past this, looked up each time


class MetricsRecorder(Protocol):
    """What the fronts report to: a Metrics, or a NullMetrics when metrics are off."""

    def authenticated(self, front: str, outcome: str, reason: str | None) -> None: ...
    def locked(self) -> None: ...
    def upstream_answered(self, uri: str, seconds: float) -> None: ...
    def upstream_state(self, uri: str, up: bool) -> None: ...
    def connection_opened(self, front: str) -> None: ...
    def connection_closed(self, front: str) -> None: ...
    def connection_refused(self, reason: str) -> None: ...
    def malformed(self, front: str) -> None: ...


class NullMetrics:
    """Records nothing (``[proxy] metrics`` is empty)."""

    def authenticated(self, front: str, outcome: str, reason: str | None) -> None:
        pass

    def locked(self) -> None:
        pass

    def upstream_answered(self, uri: str, seconds: float) -> None:
        pass

    def upstream_state(self, uri: str, up: bool) -> None:
        pass

    def connection_opened(self, front: str) -> None:
        pass

    def connection_closed(self, front: str) -> None:
        pass

    def connection_refused(self, reason: str) -> None:
        pass

    def malformed(self, front: str) -> None:
        pass

    def observe_audit(self, event: str, user: str, front: str, client: str | None,
                      reason: str | None) -> None:
        pass


NULL_METRICS = NullMetrics()


def auth_reason(reason: str | None) -> str:
    """The label value of an audit reason: itself when known, else a bounded stand-in."""
    if reason is None:
        return NO_REASON
    if reason in REASONS:
        return reason
    if reason.startswith("directory_result_"):
        return "directory_error"
    return OTHER


def _one_of(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


class Metrics:
    """bindguard's metrics in a registry of their own (never the process-global one)."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 uris: Iterable[str] = ()) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # The configured directories: their series exist from the start, up (as UpstreamHealth
        # assumes until a connection fails). URIs come from the configuration only: bounded.
        self.uris = tuple(uris)
        self._auth = Counter("bindguard_authentications", "Authentications by outcome",
                             ("front", "outcome", "reason"), registry=r)
        self._lockouts = Counter("bindguard_lockouts", "Accounts locked after failures",
                                 registry=r)
        self._upstream_seconds = Histogram(
            "bindguard_upstream_seconds", "Time the directory took to answer a request",
            ("uri",), buckets=UPSTREAM_BUCKETS, registry=r)
        self._upstream_up = Gauge("bindguard_upstream_up",
                                  "1 while the directory is up, 0 while marked down",
                                  ("uri",), registry=r)
        self._open = Gauge("bindguard_connections_open", "Client connections open",
                           ("front",), registry=r)
        self._refused = Counter("bindguard_connections_refused",
                                "Client connections refused by a connection limit",
                                ("reason",), registry=r)
        self._malformed = Counter("bindguard_pdus_malformed",
                                  "Client connections closed for a malformed PDU or frame",
                                  ("front",), registry=r)
        self._locked_now = _LockedAccounts()
        r.register(self._locked_now)
        ProcessCollector(registry=r)  # CPU, memory, open files of the daemon
        # Children by the raw arguments of a call: the hot path is a dict lookup and an inc().
        self._auth_children: dict[tuple[str, str, str | None], Any] = {}
        self._uri_children: dict[str, tuple[Any, Any]] = {}
        self._front_children: dict[str, tuple[Any, Any]] = {}
        self._zero()

    def _zero(self) -> None:
        """Make the usual series exist at 0 before the first event (rate() needs them)."""
        for front in FRONTS:
            self._fronts(front)
            for outcome, reason in (("success", None), ("failure", "invalid_credentials"),
                                    ("failure", "locked")):
                self._auth_child(front, outcome, reason)
        for reason in REFUSED:
            self._refused.labels(reason)
        for uri in self.uris:
            self.upstream_state(uri, True)

    # -- the hot path: one call each ----------------------------------------------------------

    def authenticated(self, front: str, outcome: str, reason: str | None) -> None:
        """One authentication ended (``reason``: the audit reason, None for a plain success)."""
        child = self._auth_children.get((front, outcome, reason))
        (child or self._auth_child(front, outcome, reason)).inc()

    def locked(self) -> None:
        """An account was locked after failed attempts."""
        self._lockouts.inc()

    def upstream_answered(self, uri: str, seconds: float) -> None:
        """The directory at ``uri`` answered a request after ``seconds``."""
        self._uris(uri)[0].observe(seconds)

    def upstream_state(self, uri: str, up: bool) -> None:
        """The directory at ``uri`` is up, or marked down (an UpstreamHealth listener)."""
        self._uris(uri)[1].set(1 if up else 0)

    def connection_opened(self, front: str) -> None:
        """A client connected to ``front`` (``ldap`` or ``pam``)."""
        self._fronts(front)[0].inc()

    def connection_closed(self, front: str) -> None:
        """A client connection of ``front`` ended."""
        self._fronts(front)[0].dec()

    def connection_refused(self, reason: str) -> None:
        """A connection was refused: ``limit`` (max_connections) or ``per_source``."""
        self._refused.labels(_one_of(reason, REFUSED)).inc()

    def malformed(self, front: str) -> None:
        """A client connection of ``front`` was closed for a malformed PDU or frame."""
        self._fronts(front)[1].inc()

    def observe_audit(self, event: str, user: str, front: str, client: str | None,
                      reason: str | None) -> None:
        """An AuditLog observer: count authentications and lockouts (user and client unused)."""
        if event == "auth.success":
            self.authenticated(front, "success", reason)
        elif event == "auth.failure":
            self.authenticated(front, "failure", reason)
        elif event == "account.locked":
            self.locked()

    def set_locked_counter(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as bindguard_accounts_locked at each scrape (off the reactor)."""
        self._locked_now.count = count

    # -- children -----------------------------------------------------------------------------

    def _auth_child(self, front: str, outcome: str, reason: str | None) -> Any:
        child = self._auth.labels(_one_of(front, FRONTS), _one_of(outcome, OUTCOMES),
                                  auth_reason(reason))
        if len(self._auth_children) < _MAX_CACHED:
            self._auth_children[front, outcome, reason] = child
        return child

    def _uris(self, uri: str) -> tuple[Any, Any]:
        children = self._uri_children.get(uri)
        if children is None:
            children = (self._upstream_seconds.labels(uri), self._upstream_up.labels(uri))
            if len(self._uri_children) < _MAX_CACHED:
                self._uri_children[uri] = children
        return children

    def _fronts(self, front: str) -> tuple[Any, Any]:
        children = self._front_children.get(front)
        if children is None:
            label = _one_of(front, FRONTS)
            children = (self._open.labels(label), self._malformed.labels(label))
            if len(self._front_children) < _MAX_CACHED:
                self._front_children[front] = children
        return children


class _LockedAccounts(Collector):
    """bindguard_accounts_locked, computed at scrape time; absent until a counter is set."""

    NAME = "bindguard_accounts_locked"
    HELP = "Accounts locked now"

    def __init__(self) -> None:
        self.count: Callable[[], int] | None = None

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.NAME, self.HELP)]

    def collect(self) -> Iterator[Metric]:
        if self.count is None:
            return
        try:
            value = self.count()
        except Exception as exc:  # a busy or missing state file must not fail the whole scrape
            log.warning("cannot count locked accounts: %s", exc)
            return
        yield GaugeMetricFamily(self.NAME, self.HELP, value=value)


def sqlite_locked_counter(path: str, duration: Callable[[], int | None],
                          clock: Callable[[], float]) -> Callable[[], int]:
    """A counter of accounts locked now in the SQLite state file at ``path``.

    Reads on a connection of its own (read-only; WAL readers never block the store's writer),
    so it may run on any thread. ``duration()`` is the current ``lockout_duration`` (None:
    locked until unlocked), asked at each count so that a reload (SIGHUP) is followed.
    """
    def count() -> int:
        seconds = duration()
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)) as db:
            if seconds is None:
                row = db.execute("SELECT count(*) FROM account WHERE locked_at IS NOT NULL")
            else:
                # is_locked(): now < locked_at + duration
                row = db.execute("SELECT count(*) FROM account WHERE locked_at > ?",
                                 (clock() - seconds,))
            return int(row.fetchone()[0])

    return count


def serve(reactor: Any, endpoint: str, metrics: Metrics) -> Deferred[Any]:
    """Serve ``/metrics`` on the Twisted server endpoint string; fires with the port.

    The exposition runs on the reactor's thread pool (prometheus_client's WSGI app, as its
    MetricsResource does, but with this reactor), so a slow locked-account count never blocks
    the reactor thread.
    """
    exposition = WSGIResource(reactor, reactor.getThreadPool(), make_wsgi_app(metrics.registry))
    root = Resource()
    root.putChild(b"metrics", exposition)  # type: ignore[arg-type]  # untyped IResource
    listening: Deferred[Any] = serverFromString(reactor, endpoint).listen(QuietSite(root))
    return listening


class QuietSite(Site):
    """A Site without access log lines (a scrape every few seconds is not news)."""

    noisy = False

    def log(self, request: Any) -> None:
        pass
