"""bindguard-pam: the pam_exec helper. Exits 0 only when the daemon says success.

    auth     required  pam_exec.so expose_authtok quiet /PATH/bindguard-pam [-c CONFIG]
    auth     optional  pam_permit.so
    account  required  pam_exec.so quiet /PATH/bindguard-pam [-c CONFIG]

pam_exec gives it no environment but the PAM items (PATH is unset: nothing here depends on it):
PAM_USER, PAM_RHOST, PAM_SERVICE, PAM_TTY, PAM_TYPE; with ``expose_authtok`` the password (a
second factor appended) comes NUL-terminated on standard input. Any failure — the daemon
unreachable, a socket not owned by root, a broken answer — refuses the login (fail closed) and
says why in syslog (the journal) and on standard error.
"""
from __future__ import annotations

import os
import sys

try:
    from pam_module import client
except ImportError:  # run as a file (python3 -I -S .../helper.py): the package is beside it
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from pam_module import client

EXIT_SUCCESS, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2


def _log(message: str) -> None:
    import syslog

    syslog.openlog("bindguard-pam", syslog.LOG_PID, syslog.LOG_AUTHPRIV)
    syslog.syslog(syslog.LOG_WARNING, message)
    sys.stderr.write(f"bindguard-pam: {message}\n")


def _config(argv: list[str]) -> str:
    """``-c CONFIG`` (or ``--config``), else $BINDGUARD_CONFIG, else the default path."""
    for index, arg in enumerate(argv):
        if arg in ("-c", "--config") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return os.environ.get("BINDGUARD_CONFIG") or client.DEFAULT_CONFIG


def main(argv: list[str] | None = None) -> int:
    """Ask the daemon about this login; 0 only on success."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ
    user = env.get("PAM_USER", "")
    pam_type = env.get("PAM_TYPE", "auth")
    if not user:
        _log("no PAM_USER: refused")
        return EXIT_ERROR
    request: dict[str, object] = {
        "type": "account" if pam_type == "account" else "authenticate",
        "user": user, "service": env.get("PAM_SERVICE", ""),
        "rhost": env.get("PAM_RHOST", ""), "tty": env.get("PAM_TTY", ""),
    }
    if request["type"] == "authenticate":
        if pam_type != "auth":
            _log(f"PAM_TYPE {pam_type} is not supported (auth and account are): refused")
            return EXIT_ERROR
        raw = sys.stdin.buffer.read(client.MAX_FRAME)
        request["password"] = raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
    try:
        path = client.socket_path(_config(argv))
        with client.Connection(path) as connection:
            reply = connection.ask(request)
    except client.Unreachable as exc:
        _log(f"login of {user} refused: bindguard daemon unreachable: {exc}")
        return EXIT_ERROR
    if reply.get("result") == "success":
        return EXIT_SUCCESS
    message = reply.get("message") or ""
    if message:
        sys.stderr.write(f"{message}\n")
    return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
