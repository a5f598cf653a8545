"""Runs store changes on one thread of their own, batching what queues up into one transaction.

The reactor thread never touches the database. Under load, changes that arrive while a
transaction runs are applied together in the next one (group commit): one commit and one
wake-up of the reactor for the whole batch instead of one each.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, succeed

from proxy.store import Change, Store

log = logging.getLogger(__name__)

_MAX_BATCH = 256
_STOP = object()


class Runner(Protocol):
    """Applies a change to one account's state and delivers the result as a Deferred."""

    def submit(self, dn: str, change: Change[Any]) -> Deferred[Any]:
        """Apply ``change`` to the state of ``dn`` atomically."""
        ...

    def post(self, dn: str, change: Change[Any]) -> None:
        """Apply ``change`` atomically, soon; nobody waits for it (failures are logged)."""
        ...


class ImmediateRunner:
    """Applies changes synchronously on the caller's thread (tests and the CLI)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def submit(self, dn: str, change: Change[Any]) -> Deferred[Any]:
        try:
            return succeed(self.store.apply([(dn, change)])[0])
        except Exception:
            return fail()

    def post(self, dn: str, change: Change[Any]) -> None:
        self.submit(dn, change).addErrback(_log_failure)


class ThreadRunner:
    """Applies changes on a dedicated thread; results come back on the reactor thread."""

    def __init__(self, store: Store, reactor: Any) -> None:
        self.store = store
        self._reactor = reactor
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="bindguard-store", daemon=True)
        self._thread.start()

    def submit(self, dn: str, change: Change[Any]) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self._queue.put((dn, change, d))
        return d

    def post(self, dn: str, change: Change[Any]) -> None:
        self._queue.put((dn, change, None))

    def stop(self) -> None:
        """Finish what is queued, then end the thread (call from the reactor thread)."""
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < _MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(more)
            self._apply(batch)

    def _apply(self, batch: list[Any]) -> None:
        try:
            results = self.store.apply([(dn, change) for dn, change, _ in batch])
        except Exception as exc:  # the whole transaction rolled back: every change failed
            log.error("state store failed: %s", exc)
            if any(d is not None for _, _, d in batch):
                self._reactor.callFromThread(_deliver_error, [d for _, _, d in batch], exc)
            return
        # Waking the reactor costs a system call and a GIL hand-off: only when someone waits.
        if any(d is not None for _, _, d in batch):
            self._reactor.callFromThread(_deliver, [d for _, _, d in batch], results)


def _deliver(deferreds: list[Deferred[Any] | None], results: list[Any]) -> None:
    for d, result in zip(deferreds, results, strict=True):
        if d is not None:
            d.callback(result)


def _deliver_error(deferreds: list[Deferred[Any] | None], exc: Exception) -> None:
    for d in deferreds:
        if d is not None:
            d.errback(exc)


def _log_failure(failure: Any) -> None:
    log.error("state store failed: %s", failure.getErrorMessage())
