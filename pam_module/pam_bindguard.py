"""pam_bindguard: bindguard's module for Debian's libpam-python (pam_python.so).

    auth      required  pam_python.so /PATH/pam_module/pam_bindguard.py -c CONFIG
    account   required  pam_python.so /PATH/pam_module/pam_bindguard.py -c CONFIG
    password  required  pam_python.so /PATH/pam_module/pam_bindguard.py -c CONFIG

It decides nothing: it prompts, asks the daemon over its Unix socket (``[proxy] pam_socket`` of
CONFIG) and renders the instruction that comes back (a second prompt for a code, a message,
success or denial). When the daemon cannot be asked, the login is refused (fail closed) and
syslog says why. It runs in Debian's /usr/bin/python3.11, isolated: standard library only. No
password or code ever reaches a log line.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing imports re: too slow for every login, and only mypy needs it
if TYPE_CHECKING:
    from typing import Any  # pam_python's handle has no type stubs

try:
    from pam_module import client
except ImportError:  # loaded by pam_python from a file: the package is beside it
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from pam_module import client

Reply = dict[str, object]
GENERIC_DENIAL = "Authentication failed"  # the daemon's every refusal of a password
CODE_PROMPT = "Verification code: "


def _config(argv: list[str]) -> str:
    """``-c CONFIG`` (or ``--config``) from the module's arguments, else the default path.

    The caller's environment is not read: under su or sudo it belongs to the user logging in.
    """
    for index, arg in enumerate(argv[1:], 1):  # argv[0] is this module's path
        if arg in ("-c", "--config") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return client.DEFAULT_CONFIG


def _log(pamh: Any, message: str) -> None:
    """One warning line in syslog (authpriv), tagged like pam_syslog's."""
    import syslog

    syslog.syslog(syslog.LOG_AUTHPRIV | syslog.LOG_WARNING,
                  f"pam_bindguard({pamh.service or '?'}): {message}")


def _show(pamh: Any, flags: int, style: int, message: object) -> None:
    """Show a message to the user (unless it is empty or the application asked for silence)."""
    if message and not flags & pamh.PAM_SILENT:
        try:
            pamh.conversation(pamh.Message(style, str(message)))
        except pamh.exception:
            pass  # an application that cannot show text still gets the result


def _prompt(pamh: Any, text: str) -> str | None:
    """Ask the user for a hidden answer; None when the conversation fails."""
    try:
        response = pamh.conversation(pamh.Message(pamh.PAM_PROMPT_ECHO_OFF, text))
    except pamh.exception:
        return None
    return None if response.resp is None else str(response.resp)


def _ask(pamh: Any, argv: list[str], request: Reply) -> Reply | None:
    """Send ``request``; answer a ``prompt_code`` on the same connection; the final reply.

    None when the daemon cannot be asked (logged); a denial when the user gives no code.
    """
    request = {"user": pamh.user, "service": pamh.service or "", "rhost": pamh.rhost or "",
               "tty": pamh.tty or "", "converse": True, **request}
    try:
        with client.Connection(client.socket_path(_config(argv))) as connection:
            reply = connection.ask(request)
            if reply.get("result") == "prompt_code":
                code = _prompt(pamh, str(reply.get("message") or CODE_PROMPT))
                if code is None:
                    return {"result": "denied", "message": ""}
                reply = connection.ask({"type": "code", "session": reply.get("session", ""),
                                        "code": code})
            return reply
    except client.Unreachable as exc:
        _log(pamh, f"{request['type']} of {request['user']} refused: "
                   f"bindguard daemon unreachable: {exc}")
        return None


def _user(pamh: Any) -> str | None:
    """The PAM user (asked for by the application's prompt when not yet known)."""
    try:
        return pamh.get_user(None) or None
    except pamh.exception:
        return None


def pam_sm_authenticate(pamh: Any, flags: int, argv: list[str]) -> int:
    """Password (and, when the daemon asks, a code in a second prompt) checked by the daemon."""
    if _user(pamh) is None:
        return pamh.PAM_USER_UNKNOWN
    password = pamh.authtok or _prompt(pamh, "Password: ")
    if password is None:
        return pamh.PAM_CONV_ERR
    pamh.authtok = password  # for the modules stacked after this one (use_first_pass)
    reply = _ask(pamh, argv, {"type": "authenticate", "password": password})
    if reply is None:
        return pamh.PAM_AUTH_ERR
    # change_password: the password is right; account management asks the daemon again.
    if reply.get("result") in ("success", "change_password"):
        return pamh.PAM_SUCCESS
    if reply.get("message") != GENERIC_DENIAL:
        _show(pamh, flags, pamh.PAM_ERROR_MSG, reply.get("message"))
    return pamh.PAM_AUTH_ERR


def pam_sm_acct_mgmt(pamh: Any, flags: int, argv: list[str]) -> int:
    """May the user log in now: locked, disabled, a password that must change, a warning."""
    if _user(pamh) is None:
        return pamh.PAM_USER_UNKNOWN
    reply = _ask(pamh, argv, {"type": "account"})
    if reply is None:
        return pamh.PAM_PERM_DENIED
    result = reply.get("result")
    if result == "success":
        _show(pamh, flags, pamh.PAM_TEXT_INFO, reply.get("message"))
        return pamh.PAM_SUCCESS
    if result == "change_password":
        _show(pamh, flags, pamh.PAM_ERROR_MSG, reply.get("message"))
        return pamh.PAM_NEW_AUTHTOK_REQD
    if reply.get("message") != GENERIC_DENIAL:
        _show(pamh, flags, pamh.PAM_ERROR_MSG, reply.get("message"))
    # Disabled for inactivity is an expired account to PAM; locked (or anything else) denied.
    return pamh.PAM_ACCT_EXPIRED if reply.get("reason") == "disabled" else pamh.PAM_PERM_DENIED


def pam_sm_chauthtok(pamh: Any, flags: int, argv: list[str]) -> int:
    """Change the password through the daemon, which checks the old one and the rules."""
    if flags & pamh.PAM_PRELIM_CHECK or not flags & pamh.PAM_UPDATE_AUTHTOK:
        return pamh.PAM_SUCCESS
    if _user(pamh) is None:
        return pamh.PAM_USER_UNKNOWN
    old = pamh.oldauthtok or _prompt(pamh, "Current password: ")
    new = pamh.authtok
    if old is not None and not new:
        new = _prompt(pamh, "New password: ")
        if new is not None and new != _prompt(pamh, "Retype new password: "):
            _show(pamh, flags, pamh.PAM_ERROR_MSG, "Sorry, passwords do not match.")
            return pamh.PAM_AUTHTOK_ERR
    if old is None or new is None:
        return pamh.PAM_CONV_ERR
    pamh.oldauthtok, pamh.authtok = old, new
    reply = _ask(pamh, argv, {"type": "chauthtok", "password": old, "new_password": new})
    if reply is None:
        return pamh.PAM_AUTHTOK_ERR
    if reply.get("result") == "success":
        return pamh.PAM_SUCCESS
    _show(pamh, flags, pamh.PAM_ERROR_MSG, reply.get("message") or GENERIC_DENIAL)
    return pamh.PAM_AUTHTOK_ERR


def pam_sm_setcred(pamh: Any, flags: int, argv: list[str]) -> int:
    """Nothing to establish: bindguard hands out no credentials."""
    return pamh.PAM_SUCCESS


def pam_sm_open_session(pamh: Any, flags: int, argv: list[str]) -> int:
    """Nothing to do when a session opens."""
    return pamh.PAM_SUCCESS


def pam_sm_close_session(pamh: Any, flags: int, argv: list[str]) -> int:
    """Nothing to do when a session closes."""
    return pamh.PAM_SUCCESS
