"""Prometheus metrics: what each call counts, the audit observer, bounded labels, NullMetrics,
the locked-account count from the state file, and the /metrics endpoint itself."""
from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
import textwrap
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.audit import AuditLog
from proxy.metrics import (
    REASONS,
    Metrics,
    MetricsRecorder,
    NullMetrics,
    sqlite_locked_counter,
)
from proxy.policy.account import AccountState
from proxy.store.sqlite import SqliteStore

ALICE = "uid=alice,ou=people,dc=example,dc=org"
URI = "ldap://dir.example.org"
HOT_PATH = ("authenticated", "locked", "upstream_answered", "upstream_state",
            "connection_opened", "connection_closed", "connection_refused", "malformed")


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """One sample of the registry (None when the series does not exist)."""
    return metrics.registry.get_sample_value(name, labels)


def auth(metrics: Metrics, front: str, outcome: str, reason: str) -> float | None:
    return value(metrics, "bindguard_authentications_total", front=front, outcome=outcome,
                 reason=reason)


def series(metrics: Metrics, name: str) -> list[dict[str, str]]:
    """The label sets of every sample of family ``name`` in the exposition text."""
    text = generate_latest(metrics.registry).decode()
    return [sample.labels for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name]


# -- counting ---------------------------------------------------------------------------------


def test_authentications_by_front_outcome_and_reason() -> None:
    """Each call adds one to the series of its front, outcome and reason; None is "none"."""
    metrics = Metrics()
    metrics.authenticated("ldap", "success", None)
    metrics.authenticated("ldap", "success", None)
    metrics.authenticated("ldap", "failure", "invalid_credentials")
    metrics.authenticated("pam", "failure", "otp.invalid")
    metrics.authenticated("ldap", "success", "must_change")
    assert auth(metrics, "ldap", "success", "none") == 2
    assert auth(metrics, "ldap", "failure", "invalid_credentials") == 1
    assert auth(metrics, "pam", "failure", "otp.invalid") == 1
    assert auth(metrics, "ldap", "success", "must_change") == 1
    assert auth(metrics, "pam", "success", "none") == 0  # made at 0 before any event


def test_lockouts_connections_and_malformed() -> None:
    """Lockouts and refusals count up; open connections go up and down per front."""
    metrics = Metrics()
    metrics.locked()
    for _ in range(3):
        metrics.connection_opened("ldap")
    metrics.connection_closed("ldap")
    metrics.connection_opened("pam")
    metrics.connection_refused("limit")
    metrics.connection_refused("per_source")
    metrics.connection_refused("per_source")
    metrics.malformed("ldap")
    assert value(metrics, "bindguard_lockouts_total") == 1
    assert value(metrics, "bindguard_connections_open", front="ldap") == 2
    assert value(metrics, "bindguard_connections_open", front="pam") == 1
    assert value(metrics, "bindguard_connections_refused_total", reason="limit") == 1
    assert value(metrics, "bindguard_connections_refused_total", reason="per_source") == 2
    assert value(metrics, "bindguard_pdus_malformed_total", front="ldap") == 1
    assert value(metrics, "bindguard_pdus_malformed_total", front="pam") == 0


def test_upstream_latency_and_availability() -> None:
    """Latencies fall in buckets from 0.5 ms to 5 s per URI; availability is the last state,
    configured directories starting up."""
    metrics = Metrics(uris=[URI])
    assert value(metrics, "bindguard_upstream_seconds_count", uri=URI) == 0
    assert value(metrics, "bindguard_upstream_up", uri=URI) == 1  # up until marked down
    assert value(metrics, "bindguard_upstream_up", uri="ldap://other") is None
    metrics.upstream_answered(URI, 0.0004)
    metrics.upstream_answered(URI, 0.003)
    metrics.upstream_answered(URI, 7.0)
    metrics.upstream_state(URI, True)
    metrics.upstream_state(URI, False)
    bucket = "bindguard_upstream_seconds_bucket"
    assert value(metrics, bucket, uri=URI, le="0.0005") == 1
    assert value(metrics, bucket, uri=URI, le="0.005") == 2
    assert value(metrics, bucket, uri=URI, le="5.0") == 2
    assert value(metrics, bucket, uri=URI, le="+Inf") == 3
    assert value(metrics, "bindguard_upstream_seconds_sum", uri=URI) == pytest.approx(7.0034)
    assert value(metrics, "bindguard_upstream_up", uri=URI) == 0
    metrics.upstream_state(URI, True)
    assert value(metrics, "bindguard_upstream_up", uri=URI) == 1


def test_each_metrics_has_its_own_registry() -> None:
    """Two Metrics count apart (nothing goes to prometheus_client's global registry)."""
    first, second = Metrics(), Metrics()
    first.locked()
    assert value(first, "bindguard_lockouts_total") == 1
    assert value(second, "bindguard_lockouts_total") == 0


def test_exposition_text_names_every_metric() -> None:
    """The text a scrape gets has every bindguard_* family, with HELP and TYPE lines."""
    metrics = Metrics(uris=[URI])
    metrics.set_locked_counter(lambda: 0)
    metrics.authenticated("ldap", "success", None)
    text = generate_latest(metrics.registry).decode()
    for name, kind in (("bindguard_authentications_total", "counter"),
                       ("bindguard_lockouts_total", "counter"),
                       ("bindguard_accounts_locked", "gauge"),
                       ("bindguard_upstream_seconds", "histogram"),
                       ("bindguard_upstream_up", "gauge"),
                       ("bindguard_connections_open", "gauge"),
                       ("bindguard_connections_refused_total", "counter"),
                       ("bindguard_pdus_malformed_total", "counter")):
        assert f"# TYPE {name} {kind}\n" in text
        assert f"# HELP {name} " in text
    assert ('bindguard_authentications_total{front="ldap",outcome="success",reason="none"} 1.0'
            in text)


# -- the audit observer -----------------------------------------------------------------------


def test_audit_events_map_to_counters(tmp_path: Path) -> None:
    """auth.success and auth.failure count authentications with their reason, account.locked a
    lockout; other events count nothing; neither user nor client becomes a label."""
    metrics = Metrics()
    audit = AuditLog(str(tmp_path / "audit.jsonl"), lambda: 0.0)
    audit.observers.append(metrics.observe_audit)
    audit.write("auth.success", ALICE, "ldap", "192.0.2.1")
    audit.write("auth.failure", ALICE, "ldap", "192.0.2.1", reason="invalid_credentials")
    audit.write("account.locked", ALICE, "ldap", "192.0.2.1", reason="failure_threshold")
    audit.write("auth.failure", ALICE, "pam", "local (sshd)", reason="locked")
    audit.write("password.changed", ALICE, "ldap", "192.0.2.1", reason="self")
    audit.write("otp.backup_used", ALICE, "pam", "local (sshd)", reason="7 left")
    audit.close()
    assert auth(metrics, "ldap", "success", "none") == 1
    assert auth(metrics, "ldap", "failure", "invalid_credentials") == 1
    assert auth(metrics, "pam", "failure", "locked") == 1
    assert value(metrics, "bindguard_lockouts_total") == 1
    total = sum(sample.value for family in metrics.registry.collect()
                if family.name == "bindguard_authentications"
                for sample in family.samples if sample.name.endswith("_total"))
    assert total == 3
    text = generate_latest(metrics.registry).decode()
    assert "alice" not in text and "192.0.2.1" not in text and "sshd" not in text


def test_audit_log_unchanged_and_observers_called_in_order(tmp_path: Path) -> None:
    """With observers the file gets the same lines; each observer hears every event once, in
    order, with (event, user, front, client, reason)."""
    heard: list[tuple[object, ...]] = []
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), lambda: 0.0)
    audit.observers.append(lambda *event: heard.append(("first", *event)))
    audit.observers.append(lambda *event: heard.append(("second", *event)))
    audit.write("auth.success", ALICE, "ldap", "192.0.2.1")
    audit.write("account.unlocked", ALICE, "cli", reason="admin")
    audit.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"ts": "1970-01-01T00:00:00.000Z", "event": "auth.success", "user": ALICE,
         "front": "ldap", "client": "192.0.2.1"},
        {"ts": "1970-01-01T00:00:00.000Z", "event": "account.unlocked", "user": ALICE,
         "front": "cli", "reason": "admin"}]
    assert heard == [("first", "auth.success", ALICE, "ldap", "192.0.2.1", None),
                     ("second", "auth.success", ALICE, "ldap", "192.0.2.1", None),
                     ("first", "account.unlocked", ALICE, "cli", None, "admin"),
                     ("second", "account.unlocked", ALICE, "cli", None, "admin")]


def test_failing_observer_is_logged_not_raised(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """An observer that raises does not stop the write, the other observers or the caller."""
    def broken(*event: object) -> None:
        raise RuntimeError("boom")

    metrics = Metrics()
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), lambda: 0.0)
    audit.observers += [broken, metrics.observe_audit]
    with caplog.at_level(logging.ERROR, logger="proxy.audit"):
        audit.write("auth.success", ALICE, "ldap", "192.0.2.1")
    audit.close()
    assert len(path.read_text().splitlines()) == 1
    assert auth(metrics, "ldap", "success", "none") == 1
    assert "audit observer failed on auth.success" in caplog.text


# -- bounded labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "label"), [
    (None, "none"),
    ("invalid_credentials", "invalid_credentials"),
    ("locked", "locked"),
    ("disabled", "disabled"),
    ("otp.invalid", "otp.invalid"),
    ("otp.replayed", "otp.replayed"),
    ("otp.missing", "otp.missing"),
    ("otp.not_enrolled", "otp.not_enrolled"),
    ("attempts_in_flight", "attempts_in_flight"),
    ("password_expired", "password_expired"),
    ("directory_unavailable", "directory_unavailable"),
    ("directory_result_53", "directory_error"),
    ("must_change", "must_change"),
    ("password_change", "password_change"),
    ("something new", "other"),
])
def test_reason_labels(reason: str | None, label: str) -> None:
    """Audit reasons keep their name when known; a directory's result code is directory_error;
    anything else is "other"."""
    metrics = Metrics()
    metrics.authenticated("ldap", "failure", reason)
    assert auth(metrics, "ldap", "failure", label) == 1
    assert label in REASONS or label == "other"


def test_label_cardinality_is_bounded() -> None:
    """A thousand unknown reasons, fronts, outcomes and refusal reasons make a handful of
    series, not a thousand. (URIs are not mapped: they come from the configuration only.)"""
    metrics = Metrics()
    for i in range(1000):
        metrics.authenticated("ldap", "failure", f"reason-{i}")
        metrics.authenticated(f"front-{i}", f"outcome-{i}", None)
        metrics.authenticated("pam", "failure", f"directory_result_{i}")
        metrics.connection_refused(f"why-{i}")
        metrics.malformed(f"front-{i}")
        metrics.connection_opened(f"front-{i}")
    assert auth(metrics, "ldap", "failure", "other") == 1000
    assert auth(metrics, "other", "other", "none") == 1000
    assert auth(metrics, "pam", "failure", "directory_error") == 1000
    assert value(metrics, "bindguard_connections_refused_total", reason="other") == 1000
    assert value(metrics, "bindguard_pdus_malformed_total", front="other") == 1000
    assert value(metrics, "bindguard_connections_open", front="other") == 1000
    assert len(series(metrics, "bindguard_authentications_total")) <= 10
    assert len(series(metrics, "bindguard_connections_open")) == 3


# -- NullMetrics ------------------------------------------------------------------------------


def test_null_metrics_has_the_same_calls_and_does_nothing() -> None:
    """NullMetrics takes every call Metrics takes, with the same parameters, and returns None."""
    null = NullMetrics()
    for name in (*HOT_PATH, "observe_audit"):
        assert (inspect.signature(getattr(NullMetrics, name))
                == inspect.signature(getattr(Metrics, name))), name
    for name in HOT_PATH:
        assert name in MetricsRecorder.__dict__
    null.authenticated("ldap", "success", None)
    null.locked()
    null.upstream_answered(URI, 0.001)
    null.upstream_state(URI, True)
    null.connection_opened("ldap")
    null.connection_closed("ldap")
    null.connection_refused("limit")
    null.malformed("pam")
    assert null.observe_audit("auth.success", ALICE, "ldap", None, None) is None


# -- accounts locked now ----------------------------------------------------------------------


def test_locked_gauge_comes_from_the_counter_at_each_scrape(
        caplog: pytest.LogCaptureFixture) -> None:
    """bindguard_accounts_locked is absent until a counter is set, then whatever it returns at
    scrape time; a counter that fails leaves it out of that scrape only."""
    metrics = Metrics()
    assert value(metrics, "bindguard_accounts_locked") is None
    answers: list[int | Exception] = [2, 5, OSError("database is locked"), 1]

    def count() -> int:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    metrics.set_locked_counter(count)
    assert value(metrics, "bindguard_accounts_locked") == 2
    assert value(metrics, "bindguard_accounts_locked") == 5
    with caplog.at_level(logging.WARNING, logger="proxy.metrics"):
        text = generate_latest(metrics.registry).decode()
    assert "bindguard_accounts_locked " not in text and "bindguard_lockouts_total" in text
    assert "database is locked" in caplog.text
    assert value(metrics, "bindguard_accounts_locked") == 1


def test_sqlite_locked_counter(tmp_path: Path) -> None:
    """Counts accounts whose lock has not ended at the clock's time; with no duration, every
    lock until an unlock."""
    path = str(tmp_path / "state.sqlite")
    store = SqliteStore(path)
    now = 1_000_000.0
    for dn, locked_at in (("uid=a", now - 10), ("uid=b", now - 599), ("uid=c", now - 600),
                          ("uid=d", now - 86400), ("uid=e", None)):
        store.apply([(dn, lambda s, t=locked_at: (
            replace(s, first_seen_at=0.0, locked_at=t), None))])
    assert store.get("uid=a") == AccountState(first_seen_at=0.0, locked_at=now - 10)
    duration: list[int | None] = [600]
    count = sqlite_locked_counter(path, lambda: duration[0], lambda: now)
    assert count() == 2  # a and b; c's lock ended just now
    duration[0] = 3600  # a reload: asked again at each count
    assert count() == 3
    duration[0] = None
    assert count() == 4
    store.close()


def test_sqlite_locked_counter_fails_on_a_missing_file(tmp_path: Path) -> None:
    """A missing state file raises (the scrape then leaves the gauge out); nothing is created."""
    path = tmp_path / "absent.sqlite"
    with pytest.raises(Exception, match="unable to open"):
        sqlite_locked_counter(str(path), lambda: 600, lambda: 0.0)()
    assert not path.exists()


# -- the endpoint -----------------------------------------------------------------------------

SERVER = textwrap.dedent("""
    import sys
    from twisted.internet import defer, task
    from proxy.metrics import Metrics, serve

    def main(reactor):
        metrics = Metrics(uris=["ldap://dir.example.org"])
        metrics.authenticated("ldap", "success", None)
        metrics.upstream_answered("ldap://dir.example.org", 0.002)
        metrics.set_locked_counter(lambda: 4)
        d = serve(reactor, "tcp:0:interface=127.0.0.1", metrics)

        def ready(port):
            print(port.getHost().port, flush=True)
            return defer.Deferred()  # serve until killed

        return d.addCallback(ready)

    task.react(main)
""")


@pytest.fixture
def server() -> object:
    """A process serving a Metrics with ``serve`` on a free port; yields the port."""
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            pytest.fail(f"metrics server did not start: {process.communicate()[1]}")
        yield int(line)
    finally:
        process.terminate()
        process.wait(10)


def test_serve_answers_a_scrape(server: int) -> None:
    """GET /metrics over real HTTP gives the exposition text (with the locked count computed
    on the reactor's thread pool); any other path is 404."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["bindguard_accounts_locked"].samples[0].value == 4
    assert ('bindguard_authentications_total{front="ldap",outcome="success",reason="none"} 1.0'
            in text)
    assert 'bindguard_upstream_seconds_count{uri="ldap://dir.example.org"} 1.0' in text
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"http://127.0.0.1:{server}/", timeout=10)
    assert caught.value.code == 404
