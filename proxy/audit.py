"""The audit log: one JSON object a line, written and flushed at once, never a secret."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Told of every event after it is written: (event, user, front, client, reason).
AuditObserver = Callable[[str, str, str, str | None, str | None], None]

# The only fields an event may carry: nothing here can hold a password, a code or a secret.
FIELDS = ("ts", "event", "user", "front", "client", "reason")


def rfc3339(seconds: float) -> str:
    """Seconds since the epoch as an RFC 3339 UTC time with milliseconds."""
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


class AuditLog:
    """Appends events to a file (or standard output for ``-``)."""

    def __init__(self, target: str, clock: Callable[[], float]) -> None:
        self.target = target
        self._clock = clock
        # Called after each event is written (metrics); one that fails is logged, not raised:
        # an observer must never change the outcome of an authentication.
        self.observers: list[AuditObserver] = []
        if target == "-":
            self._fd = sys.stdout.fileno()
            self._owned = False
        else:
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            # O_APPEND makes each line one atomic write, so the daemon and the CLI can share it.
            self._fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._owned = True

    def write(self, event: str, user: str, front: str, client: str | None = None,
              reason: str | None = None) -> None:
        """Record one event."""
        record = {"ts": rfc3339(self._clock()), "event": event, "user": user, "front": front}
        if client is not None:
            record["client"] = client
        if reason is not None:
            record["reason"] = reason
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode("utf-8"))
        for observer in self.observers:
            try:
                observer(event, user, front, client, reason)
            except Exception:
                log.exception("audit observer failed on %s", event)

    def close(self) -> None:
        """Close the file."""
        if self._owned:
            os.close(self._fd)
            self._owned = False
