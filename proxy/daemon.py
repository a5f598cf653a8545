"""``bindguard serve``: wire the fronts, the service and the store into one Twisted process."""
from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from twisted.internet import endpoints
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.protocols.tls import TLSMemoryBIOFactory

from proxy import notify, pamsocket
from proxy.audit import AuditLog
from proxy.config import Config, tls_listener_as_tcp
from proxy.ldap.session import LdapFrontFactory
from proxy.metrics import NULL_METRICS, Metrics, MetricsRecorder, sqlite_locked_counter
from proxy.metrics import serve as serve_metrics
from proxy.pamd import PamFront
from proxy.reload import Reloader
from proxy.sealed import SecretBox
from proxy.service import AuthService
from proxy.store import open_store
from proxy.store.worker import ThreadRunner
from proxy.tls import TlsError

log = logging.getLogger("bindguard")


def serve(config: Config, path: str | None = None) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT; return the exit code.
    SIGHUP reads ``path`` again (proxy.reload)."""
    from twisted.internet import reactor

    for warning in config.warnings:
        log.warning("%s", warning)
    try:
        store = open_store(config.proxy.state)
        audit = AuditLog(config.proxy.audit_log, reactor.seconds)
        # Made now when missing, so that it belongs to the daemon's own user.
        box = SecretBox.from_file(config.proxy.key_file)
    except Exception as exc:  # unusable state, audit or key file: nothing can be enforced
        log.error("cannot start: %s", exc)
        return 1
    runner = ThreadRunner(store, reactor)
    service = AuthService(config, runner, audit, reactor, box=box)
    metrics: Metrics | None = None
    if config.proxy.metrics:
        metrics = Metrics(uris=[u.uri for u in config.proxy.upstream])
        metrics.set_locked_counter(sqlite_locked_counter(
            config.proxy.state, lambda: service.rules.duration, reactor.seconds))
        audit.observers.append(metrics.observe_audit)
    recorder: MetricsRecorder = metrics if metrics is not None else NULL_METRICS
    try:
        factory = LdapFrontFactory(service, config.proxy, reactor, metrics=recorder)
    except TlsError as exc:
        log.error("cannot start: %s", exc)
        runner.stop()
        return 1
    factory.health.listeners.append(recorder.upstream_state)
    pam_front = PamFront(config, service, reactor, factory.health, metrics=recorder)
    if path is not None:
        reloader = Reloader(path, config, [service.reconfigure,
                                           lambda new: factory.reconfigure(new.proxy),
                                           pam_front.reconfigure])

        def reload() -> None:
            notify.notify(notify.reloading())
            try:
                reloader.reload()
            finally:
                notify.notify(notify.READY)

        signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reload))
    outcome = {"code": 0}
    ports: list[Any] = []

    @inlineCallbacks
    def start() -> Any:
        if metrics is not None:
            try:
                ports.append((yield serve_metrics(reactor, config.proxy.metrics, metrics)))
                log.info("metrics at %s", config.proxy.metrics)
            except Exception as exc:
                log.error("cannot serve metrics on %s: %s", config.proxy.metrics, exc)
                outcome["code"] = 1
        results = yield DeferredList(
            [_listen(reactor, spec, factory) for spec in config.proxy.listen],
            consumeErrors=True)
        if config.proxy.pam_socket:
            try:
                ports.append((yield pamsocket.listen(reactor, config.proxy.pam_socket, pam_front)))
                log.info("PAM socket at %s", config.proxy.pam_socket)
            except Exception as exc:
                log.error("cannot serve the PAM socket %s: %s", config.proxy.pam_socket, exc)
                outcome["code"] = 1
        for spec, (ok, value) in zip(config.proxy.listen, results, strict=True):
            if ok:
                ports.append(value)
                log.info("listening on %s", spec)
            else:
                log.error("cannot listen on %s: %s", spec, value.getErrorMessage())
                outcome["code"] = 1
        if outcome["code"]:
            reactor.stop()
            return
        log.info("bindguard ready: forwarding to %s",
                 " ".join(u.uri for u in config.proxy.upstream))
        notify.notify(notify.READY)

    def shutdown() -> Any:
        log.info("shutting down")
        notify.notify(notify.STOPPING)
        return DeferredList([port.stopListening() for port in ports])

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    reactor.run()
    runner.stop()
    store.close()
    audit.close()
    return outcome["code"]


def _listen(reactor: Any, spec: str, factory: LdapFrontFactory) -> Any:
    """Listen on one ``listen`` item; ssl:/tls: items as TCP wrapped in the reloadable TLS."""
    if spec.split(":", 1)[0] in ("ssl", "tls"):
        assert factory.server_tls is not None  # the configuration checked it
        wrapped = TLSMemoryBIOFactory(factory.server_tls, False, factory)
        return endpoints.serverFromString(reactor, tls_listener_as_tcp(spec)).listen(wrapped)
    return endpoints.serverFromString(reactor, spec).listen(factory)


def configure_logging(level: int = logging.INFO) -> None:
    """Log lines to standard error, which systemd sends to the journal."""
    logging.basicConfig(stream=sys.stderr, level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
