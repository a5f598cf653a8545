"""Reading one INI section with types, collecting every problem as ``section.key: message``
instead of raising at the first (proxy.config reads each section with it)."""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one ``section.key: message`` each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Section:
    """Typed reads of one INI section that collect problems instead of raising."""

    def __init__(self, name: str, values: dict[str, str], problems: list[str]) -> None:
        self.name = name
        self.values = {k: v.strip() for k, v in values.items()}
        self.problems = problems

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.name}.{key}: {message}")

    def raw(self, key: str) -> str | None:
        """The value, or None when the key is absent or empty."""
        value = self.values.get(key)
        return value if value else None

    def _typed(self, key: str, default: T, convert: Callable[[str], T], what: str) -> T:
        value = self.raw(key)
        if value is None:
            return default
        try:
            return convert(value)
        except ValueError:
            self.problem(key, f"{what} expected, got {value!r}")
            return default

    def integer(self, key: str, default: int | None, minimum: int) -> int | None:
        result = self._typed(key, default, int, "a whole number")
        if result is not None and result < minimum:
            self.problem(key, f"must be at least {minimum}, got {result}")
            return default
        return result

    def number(self, key: str, default: float, minimum: float) -> float:
        result = self._typed(key, default, finite, "a number")
        if not result > minimum:
            self.problem(key, f"must be greater than {minimum:g}, got {result:g}")
            return default
        return result

    def boolean(self, key: str, default: bool) -> bool:
        def convert(value: str) -> bool:
            lowered = value.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(value)

        return self._typed(key, default, convert, "true or false")

    def items(self, key: str) -> tuple[str, ...]:
        """A list option: one item a line; items without '=' may share a line (commas, spaces)."""
        value = self.raw(key)
        if value is None:
            return ()
        result: list[str] = []
        for line in value.splitlines():
            line = line.strip()
            if not line:
                continue
            if "=" in line:
                result.append(line)
            else:
                result.extend(part for part in re.split(r"[,\s]+", line) if part)
        return tuple(result)


def finite(value: str) -> float:
    """float() without inf and nan, which are no number of seconds."""
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(value)
    return result


def one_line(message: str) -> str:
    return " ".join(message.split())
