"""Run processes days in the future with libfaketime (the daemon and the CLI), reliably.

libfaketime is preloaded into the process itself (``LD_PRELOAD``), not started through the
``faketime`` wrapper, which forks (the pid we would hold would not be the daemon's).

Only the wall clock is shifted. libfaketime 0.9.10 with Python 3.11:

* by default it shifts ``CLOCK_MONOTONIC`` too, and Python's timed waits (``Lock.acquire``
  with a timeout, hence ``Event.wait``, ``Queue.get(timeout=...)``, ``Thread.join(timeout)``)
  pass a deadline on that shifted clock to ``sem_clockwait``, which libfaketime does not
  intercept: the kernel reads it as N days away and a wait that should time out hangs;
* with ``FAKETIME_DONT_FAKE_MONOTONIC=1`` those waits work, but ``time.sleep`` fails with
  EINVAL: libfaketime mishandles ``clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, ...)``.

So: ``FAKETIME_DONT_FAKE_MONOTONIC=1`` plus a tiny shim, preloaded before libfaketime, that
sends monotonic ``clock_nanosleep`` straight to the system call and realtime ones on to
libfaketime. Then the process sees the wall clock N days ahead, a monotonic clock that runs as
it should, working sleeps and timed waits. The shim is compiled once per test session with gcc.
"""
from __future__ import annotations

import calendar
import os
import shutil
import subprocess
import time
from pathlib import Path

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
DAY = 86400.0

SHIM_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Monotonic sleeps go straight to the kernel (the monotonic clock is not faked);
   realtime ones on to libfaketime, which shifts them. */
int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *request,
                    struct timespec *remain)
{
    static int (*next)(clockid_t, int, const struct timespec *, struct timespec *);
    if (clock_id == CLOCK_MONOTONIC || clock_id == CLOCK_MONOTONIC_RAW
            || clock_id == CLOCK_BOOTTIME) {
        return syscall(SYS_clock_nanosleep, clock_id, flags, request, remain) == 0 ? 0 : errno;
    }
    if (next == NULL) {
        next = (int (*)(clockid_t, int, const struct timespec *, struct timespec *))
            dlsym(RTLD_NEXT, "clock_nanosleep");
        if (next == NULL) {
            return ENOSYS;
        }
    }
    return next(clock_id, flags, request, remain);
}
"""


class Unavailable(Exception):
    """libfaketime or gcc is missing: the reason to skip."""


def build_shim(directory: Path) -> Path:
    """Compile the clock_nanosleep shim into ``directory``; raise Unavailable without tools."""
    if not LIBFAKETIME.exists():
        raise Unavailable(f"libfaketime is not installed ({LIBFAKETIME} missing; "
                          "apt-get install faketime)")
    gcc = shutil.which("gcc")
    if gcc is None:
        raise Unavailable("gcc is needed to build the clock_nanosleep shim that makes "
                          "libfaketime usable with Python 3.11 (see tests/integration/"
                          "faketime_env.py); .ci/install installs it")
    source = directory / "faketime_shim.c"
    shim = directory / "faketime_shim.so"
    source.write_text(SHIM_SOURCE)
    result = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(shim),
                             str(source), "-ldl"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"gcc could not build the faketime shim:\n{result.stderr}")
    return shim


class FakeTime:
    """Environments that put a process ``days`` ahead of the real wall clock."""

    def __init__(self, shim: Path) -> None:
        self.shim = shim

    def env(self, days: float) -> dict[str, str]:
        """Extra environment for a process that should live ``days`` days from now."""
        preload = f"{self.shim}:{LIBFAKETIME}"
        if os.environ.get("LD_PRELOAD"):
            preload += ":" + os.environ["LD_PRELOAD"]
        return {
            "LD_PRELOAD": preload,
            "FAKETIME": f"+{days:g}d",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def run(self, days: float, argv: list[str], timeout: float = 30
            ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` ``days`` days ahead, capturing its output."""
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env(days)})


def parse_ts(ts: str) -> float:
    """An audit ``ts`` (RFC 3339 UTC, ``2026-01-02T03:04:05.678Z``) as seconds since the epoch."""
    whole, _, fraction = ts.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float("0." + fraction) if fraction else 0.0)


def days_ahead(ts: str, now: float | None = None) -> float:
    """How many days ahead of the real clock (``now``) an audit ``ts`` lies."""
    return (parse_ts(ts) - (time.time() if now is None else now)) / DAY
