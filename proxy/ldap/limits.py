"""Limits on client connections: how many in all and from one address, how long one may stay
idle, and how long a started request may take to arrive whole (slowloris)."""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# A flood of refused connections logs one line per this many seconds, with the count.
LOG_EVERY_SECONDS = 10.0


class ConnectionLimits:
    """Counts open client connections; refuses new ones over ``total`` or ``per_source``."""

    def __init__(self, total: int, per_source: int, clock: Any) -> None:
        self.total = total
        self.per_source = per_source
        self.clock = clock
        self.open = 0
        self.by_source: dict[str, int] = {}
        self._refused = 0
        self._logged_at = -LOG_EVERY_SECONDS

    def admit(self, source: str) -> str | None:
        """Count a new connection from ``source``; or why it is refused (``limit``,
        ``per_source``), counting nothing."""
        if self.open >= self.total:
            return self._refuse("limit", source)
        if self.by_source.get(source, 0) >= self.per_source:
            return self._refuse("per_source", source)
        self.open += 1
        self.by_source[source] = self.by_source.get(source, 0) + 1
        return None

    def release(self, source: str) -> None:
        """A connection counted by admit() is gone."""
        self.open -= 1
        left = self.by_source.get(source, 1) - 1
        if left:
            self.by_source[source] = left
        else:
            self.by_source.pop(source, None)

    def _refuse(self, reason: str, source: str) -> str:
        self._refused += 1
        now = self.clock.seconds()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning("refused %d new connection(s) over the %s (%d open; last from %s)",
                        self._refused, "connection limit" if reason == "limit"
                        else "per-address limit", self.open, source)
            self._refused, self._logged_at = 0, now
        return reason


class Deadline:
    """Calls ``expired`` once ``seconds`` pass without ``touch()``; cheap to touch (a float)."""

    def __init__(self, clock: Any, seconds: float, expired: Any) -> None:
        self.clock = clock
        self.seconds = seconds
        self.expired = expired
        self.last = clock.seconds()
        self.call = clock.callLater(seconds, self._check) if seconds else None

    def touch(self) -> None:
        self.last = self.clock.seconds()

    def _check(self) -> None:
        left = self.last + self.seconds - self.clock.seconds()
        if left > 0:
            self.call = self.clock.callLater(left, self._check)
        else:
            self.call = None
            self.expired()

    def cancel(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
