"""``SIGHUP``: read the configuration again and apply it to new requests.

Policy ([security_compliance]), name mapping ([directory]), the local accounts of
[pam_backend], directories, timeouts and limits change for the next request; open connections
stay open. What is bound at start (listeners, the state, audit and key files, the PAM socket,
the metrics endpoint) keeps its old value until a restart, with a log line saying so. An
invalid new file changes nothing: its problems are logged and the old configuration stays.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from proxy.config import Config, ConfigError, load_config

log = logging.getLogger(__name__)

# [proxy] keys whose change needs a restart: they were bound when the daemon started.
FIXED_AT_START = ("listen", "state", "audit_log", "key_file", "pam_socket", "metrics")


class Reloader:
    """Holds the running configuration and the parts that take a new one."""

    def __init__(self, path: str, config: Config,
                 appliers: list[Callable[[Config], None]]) -> None:
        self.path = path
        self.config = config
        self.appliers = appliers  # each takes the new configuration for new requests

    def reload(self) -> bool:
        """Read the file again; apply it when valid. True when applied."""
        try:
            new = load_config(self.path)
        except ConfigError as exc:
            log.error("reload refused, the running configuration stays (%d problem%s):",
                      len(exc.problems), "s" if len(exc.problems) != 1 else "")
            for problem in exc.problems:
                log.error("  %s", problem)
            return False
        for warning in new.warnings:
            log.warning("%s", warning)
        kept = _fixed(self.config, new)
        for key in kept:
            log.warning("reload: [proxy] %s changed; it takes effect at the next restart", key)
        if kept:
            new = _with_proxy(new, {key: getattr(self.config.proxy, key) for key in kept})
        for apply in self.appliers:
            apply(new)
        self.config = new
        log.info("configuration reloaded from %s", self.path)
        return True


def _fixed(old: Config, new: Config) -> list[str]:
    return [key for key in FIXED_AT_START
            if getattr(old.proxy, key) != getattr(new.proxy, key)]


def _with_proxy(config: Config, values: dict[str, Any]) -> Config:
    from dataclasses import replace

    return replace(config, proxy=replace(config.proxy, **values))
